"""Evaluate one design point (or an existing chip) into a flat record of metrics.

A record (one JSON line of a sweep's results.jsonl):

    {"id": "...", "params": {knob: value}, "feasible": true, "reason": null, "eval_s": 0.03,
     "metrics": {"cost_usd": ..., "die_mm2": ..., "tok_s_per_chip": ..., "qwen2.5-72b.tok_s_per_chip": ...}}

Per workload W: `W.tok_s_per_chip` (output tokens/s per chip at the SLO), `W.tok_per_j` (tokens per
joule = tokens/s per watt of average chip power), `W.tok_s_per_kusd` (tokens/s per chip per $1,000
of the chip's manufacturing cost, tapeout.cost), `W.usd_per_mtok` (the chip's manufacturing cost
amortized as data/cost/ownership.toml amortizes a purchase, plus electricity at the average power), and
the operating point (batch, TTFT, TPOT, layout). The unprefixed metrics are geometric means over
the ranked workloads (`Workload.ranked`); an unranked workload only adds its prefixed metrics (or
`W.infeasible`, its reason, without making the point infeasible). An infeasible point keeps what was
computed before the reason was found.
"""
from __future__ import annotations

import math
import time

from ..area import area_mm2
from ..cost import cost_usd, owned_usd_per_hour, usd_per_mtok
from ..energy import idle_w
from .design import Infeasible, physicals, point_chip
from .objective import EVALUATORS

DESIGN_FACTS = ("die_mm2", "area_mm2", "cost_usd", "die_yield", "tdp_w", "idle_w", "peak_power_floor_w",
                "peak_fp8_flops", "peak_bf16_flops", "dram_bytes", "dram_bytes_per_s", "link_bytes_per_s")
AGGREGATED = ("tok_s_per_chip", "tok_per_j", "tok_s_per_kusd", "usd_per_mtok", "power_w")


def served_costs(s, cost_usd: float) -> dict:
    """`s.to_dict()` plus tokens/s per $1,000 of the chip and $/Mtok of owning it at its average power."""
    d = s.to_dict()
    d["tok_s_per_kusd"] = s.tok_s_per_chip / (cost_usd / 1000.0)
    d["usd_per_mtok"] = usd_per_mtok(owned_usd_per_hour(cost_usd, s.power_w), s.tok_s_per_chip)
    return d


def _geomean(xs: list[float]) -> float:
    if not xs or any(not x > 0 for x in xs):
        return 0.0
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def workload_metrics(chip, workloads, evaluator: str, cost_usd: float) -> dict:
    """Flat metrics of `chip` serving each workload, plus geometric means over the ranked workloads."""
    fn = EVALUATORS[evaluator]
    out, per = {}, []
    for wl in workloads:
        try:
            d = served_costs(fn(chip, wl), cost_usd)
        except Infeasible as e:
            if wl.ranked:
                raise
            out[f"{wl.name}.infeasible"] = str(e)
            continue
        per += [d] if wl.ranked else []
        out.update({f"{wl.name}.{k}": v for k, v in d.items()})
    for m in AGGREGATED:
        out[m] = _geomean([d[m] for d in per])
    return out


def evaluate_point(space, params: dict, pid: str) -> dict:
    """The record of one point of `space` (never raises for an infeasible design)."""
    t0 = time.perf_counter()
    metrics: dict = {}
    try:
        chip = point_chip(space.base, params, name=f"{space.base.name}-{pid[:8]}")
        chip, facts = physicals(chip, space.base, space.constraints)
        metrics.update(facts)
        metrics.update(workload_metrics(chip, space.workloads, space.evaluator, facts["cost_usd"]))
        feasible, reason = True, None
    except Infeasible as e:
        feasible, reason = False, str(e)
    return {"id": pid, "params": params, "feasible": feasible, "reason": reason, "metrics": metrics,
            "eval_s": round(time.perf_counter() - t0, 5)}


def chip_facts(chip) -> dict:
    """The design facts of an existing chip (its stated die area and the cost model's cost)."""
    a, c = area_mm2(chip), cost_usd(chip)
    return {"die_mm2": c.die_area_mm2, "area_mm2": c.die_area_mm2 * c.dies, "area_model_mm2": a.total_mm2,
            "cost_usd": c.total_usd, "die_yield": c.die_yield, "tdp_w": chip.chip.tdp_w, "idle_w": idle_w(chip),
            "price_usd": c.reported_price_usd,
            "peak_fp8_flops": chip.peak_flops("fp8") if chip.supports("fp8") else 0.0,
            "peak_bf16_flops": chip.peak_flops("bf16") if chip.supports("bf16") else 0.0,
            "dram_bytes": chip.dram.bytes, "dram_bytes_per_s": chip.dram.bandwidth_bytes_per_s,
            "link_bytes_per_s": chip.links.chip_to_chip.bandwidth_bytes_per_s}


def evaluate_chip(chip, workloads, evaluator: str = "analytic") -> dict:
    """A record for an existing chip (an incumbent): no design constraints apply to it."""
    t0 = time.perf_counter()
    metrics = chip_facts(chip)
    try:
        metrics.update(workload_metrics(chip, workloads, evaluator, metrics["cost_usd"]))
        feasible, reason = True, None
    except Infeasible as e:
        feasible, reason = False, str(e)
    return {"id": chip.name, "params": {}, "feasible": feasible, "reason": reason, "metrics": metrics,
            "eval_s": round(time.perf_counter() - t0, 5)}
