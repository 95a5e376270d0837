"""Serving metrics from a simulation's records: latency percentiles, throughput, goodput under SLOs,
energy per token and cost per million tokens.

    TTFT  = first token - arrival                 (the first token comes out of the prefill)
    TPOT  = (finish - first token) / (output - 1) (per request, requests with output > 1; MLPerf's
                                                   time per output token)
    E2E   = finish - arrival
    goodput = requests per second meeting TTFT <= slo_ttft and TPOT <= slo_tpot (DistServe's definition)
    steady  = output tokens/s of the requests finishing between the 10th and 90th percentile of finish
              times (a long run's steady state, without ramp-up and drain)
    energy  = computing energy (tapeout.energy per step) + idle power x idle chip-seconds
    cost    = chips x hourly cost x makespan / output tokens; hourly cost: a rental price, else the
              chip's price or manufacturing cost amortized, plus electricity (tapeout.cost)

A run with a measurement window (a closed loop's steady state, `window_summary`) counts the output
tokens generated, the energy and the busy time between the window's start and end, and the latencies
of the requests that arrived inside it (TTFT of those with a first token, TPOT of those finished).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..cost import chip_usd_per_hour, usd_per_mtok


@dataclass(frozen=True)
class Pct:
    mean: float
    p50: float
    p90: float
    p99: float

    @staticmethod
    def of(x: np.ndarray) -> "Pct":
        x = x[~np.isnan(x)]
        if len(x) == 0:
            return Pct(math.nan, math.nan, math.nan, math.nan)
        p = np.percentile(x, [50, 90, 99])
        return Pct(float(x.mean()), float(p[0]), float(p[1]), float(p[2]))

    def at(self, q: float) -> float:
        return {50: self.p50, 90: self.p90, 99: self.p99}.get(q, self.mean) if q else self.mean


def latencies(rec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ttft = rec.first_token - rec.arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(rec.output > 1, (rec.finish - rec.first_token) / (rec.output - 1), np.nan)
    return ttft, tpot, rec.finish - rec.arrival


def _idle_w(chip) -> float:
    from .. import energy

    return energy.idle_w(chip)


def summarize(rec, chip, slo_ttft: float, slo_tpot: float) -> dict:
    ttft, tpot, e2e = latencies(rec)
    span = max(rec.makespan_s, 1e-12)
    out_tok = float(rec.output.sum())
    ok = (ttft <= slo_ttft) & (np.isnan(tpot) | (tpot <= slo_tpot))
    idle_j = max(rec.chips * span - rec.busy_chip_s, 0.0) * _idle_w(chip)
    energy = rec.energy_j + idle_j
    usd_h, how = chip_usd_per_hour(chip)
    cost = usd_per_mtok(usd_h * rec.chips, out_tok / span) if usd_h else None
    return {
        "requests": int(len(rec.arrival)),
        "ttft_s": asdict(Pct.of(ttft)), "tpot_s": asdict(Pct.of(tpot)), "e2e_s": asdict(Pct.of(e2e)),
        "makespan_s": span,
        "output_tokens": out_tok, "input_tokens": float(rec.prompt.sum()),
        "throughput_tok_s": out_tok / span,
        "throughput_tok_s_per_chip": out_tok / span / rec.chips,
        "steady_tok_s": steady_throughput(rec),
        "completion_ratio": completion_ratio(rec),
        "total_tok_s": (out_tok + float(rec.prompt.sum())) / span,
        "request_rate": len(rec.arrival) / span,
        "slo": {"ttft_s": slo_ttft, "tpot_s": slo_tpot},
        "slo_attainment": float(ok.mean()),
        "goodput_req_s": float(ok.sum()) / span,
        "goodput_tok_s": float(rec.output[ok].sum()) / span,
        "chips": rec.chips,
        "utilization": rec.busy_chip_s / (rec.chips * span),
        "energy_j": energy, "energy_j_per_token": energy / out_tok,
        "power_w_per_chip": energy / span / rec.chips,
        "cost_usd_per_hour_per_chip": usd_h, "cost_basis": how,
        "cost_usd_per_mtok": cost,
        "preemptions": int(rec.preempted),
        "prefix_hit_rate": rec.prefix_hits / rec.prefix_lookups if rec.prefix_lookups else None,
    }


def window_summary(rec, chip, slo_ttft: float, slo_tpot: float) -> dict:
    """The metrics of `summarize` over the run's measurement window `rec.window` (tokens, energy and
    busy time counted inside it; latencies of the requests that arrived inside it)."""
    w = rec.window
    span = max(w["end_s"] - w["start_s"], 1e-12)
    inside = (rec.arrival >= w["start_s"]) & (rec.arrival <= w["end_s"])
    ttft, tpot, e2e = (x[inside] for x in latencies(rec))
    tok = float(w["tokens"])
    energy = w["energy_j"] + max(rec.chips * span - w["busy_chip_s"], 0.0) * _idle_w(chip)
    usd_h, how = chip_usd_per_hour(chip)
    ok = (ttft <= slo_ttft) & (np.isnan(tpot) | (tpot <= slo_tpot))
    return {
        "requests": int(inside.sum()), "finished": int((inside & ~np.isnan(rec.finish)).sum()),
        "ttft_s": asdict(Pct.of(ttft)), "tpot_s": asdict(Pct.of(tpot)), "e2e_s": asdict(Pct.of(e2e)),
        "window_s": [w["start_s"], w["end_s"]], "makespan_s": rec.makespan_s,
        "output_tokens": tok,
        "throughput_tok_s": tok / span, "throughput_tok_s_per_chip": tok / span / rec.chips,
        "request_rate": float(inside.sum()) / span,
        "slo": {"ttft_s": slo_ttft, "tpot_s": slo_tpot},
        "slo_attainment": float(ok.mean()) if len(ok) else math.nan,
        "chips": rec.chips, "utilization": w["busy_chip_s"] / (rec.chips * span),
        "energy_j": energy, "energy_j_per_token": energy / max(tok, 1.0),
        "power_w_per_chip": energy / span / rec.chips,
        "cost_usd_per_hour_per_chip": usd_h, "cost_basis": how,
        "cost_usd_per_mtok": usd_per_mtok(usd_h * rec.chips, tok / span) if usd_h and tok else None,
        "preemptions": int(rec.preempted), "exhausted": bool(rec.exhausted),
    }


def steady_throughput(rec, lo: float = 0.1, hi: float = 0.9) -> float:
    """Output tokens/s of the requests finishing between the lo and hi quantiles of finish times: the
    steady state of a long run, without the ramp-up and the drain of a finite one (MLPerf's offline
    runs last >= 10 minutes, so its reported rate is this steady state)."""
    t = np.sort(rec.finish)
    n = len(t)
    if n < 10:
        return float(rec.output.sum() / max(rec.makespan_s, 1e-12))
    a, b = t[int(lo * (n - 1))], t[int(hi * (n - 1))]
    inside = (rec.finish > a) & (rec.finish <= b)
    return float(rec.output[inside].sum() / max(b - a, 1e-12))


def completion_ratio(rec, lo: float = 0.1, hi: float = 0.9) -> float:
    """Output tokens completed / output tokens offered over the middle of the arrival window, the
    completion window shifted by the median latency: ~1 when the deployment keeps up, ~capacity/load
    when its queue grows. (Mostly the same requests on both sides, so length noise cancels.)"""
    t = np.sort(rec.arrival)
    n = len(t)
    if n < 10 or t[-1] == t[0]:
        return 1.0
    a, b = t[int(lo * (n - 1))], t[int(hi * (n - 1))]
    d = float(np.median(rec.finish - rec.arrival))
    offered = rec.output[(rec.arrival >= a) & (rec.arrival <= b)].sum()
    done = rec.output[(rec.finish >= a + d) & (rec.finish <= b + d)].sum()
    return float(done / max(offered, 1))


def occupancy(rec) -> float:
    """Time-average of the requests in the system (arrived, unfinished), from the engines' step log:
    each step weighs the count at its start by its duration; an idle engine holds no requests."""
    if not rec.steps:
        return 0.0
    s = np.array([(st[2], st[3], st[7]) for st in rec.steps])
    return float((s[:, 2] * (s[:, 1] - s[:, 0])).sum() / max(rec.makespan_s, 1e-12))
