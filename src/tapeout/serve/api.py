"""`tapeout.simulate_serving(...)` (`serve` here): simulate serving a model on chips and report latency, throughput, goodput,
energy and cost.

    >>> import tapeout
    >>> r = tapeout.simulate_serving("llama-3.1-8b", "h100-sxm", rate=4, requests=200, seed=1)
    >>> r.metrics["requests"], r.metrics["ttft_s"]["p50"] < 1
    (200, True)

A deployment is `chips` chips split into replicas of tp x pp x ep chips (data parallel), or with
`disaggregate=(prefill_chips, decode_chips)` into a prefill pool and a decode pool that pass KV
caches over the links (or the network when the deployment spans more than one domain).
`offline=True` issues every request at t = 0 (MLPerf Offline); `max_rate` finds the highest
Poisson rate whose p99 TTFT and TPOT meet the SLO (MLPerf Server). `concurrency=N` runs a closed
loop instead (N users, each sending its next request when its answer ends) and, with `window_s`,
measures its steady state between warm-up and the window's end; `max_concurrency` finds the largest N
whose p99 TTFT and TPOT meet the SLO there: the measure for long outputs, whose Poisson runs of a
few thousand requests never reach a steady state before their arrivals stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..chip import load_chip
from ..errors import TapeoutError
from ..llm.spec import load_model
from ..perf.stack import stack_for
from .engine import POLICIES, Limits
from .engines import default_slo, engine_settings
from .kvcache import offload_tier, plan_memory
from .metrics import summarize, window_summary
from .sim import Pool, Sim
from .steptime import Parallel, StepTimer
from .workload import Request, generate, load_trace

SCHEDULERS = ("static", "continuous", "chunked")


@dataclass(frozen=True)
class ServeResult:
    settings: dict
    metrics: dict
    memory: dict
    records: object = field(repr=False, compare=False, default=None)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "metrics": self.metrics, "memory": self.memory}

    def row(self) -> dict:
        """One flat CSV row."""
        m = self.metrics
        row = {k: v for k, v in self.settings.items() if not isinstance(v, (dict, list, tuple))}
        for k in ("ttft_s", "tpot_s", "e2e_s"):
            row.update({f"{k[:-2]}_{q}_s": m[k][q] for q in ("mean", "p50", "p90", "p99")})
        for k in ("requests", "throughput_tok_s", "throughput_tok_s_per_chip", "request_rate", "goodput_req_s",
                  "goodput_tok_s", "slo_attainment", "utilization", "energy_j_per_token", "power_w_per_chip",
                  "cost_usd_per_mtok", "preemptions", "makespan_s"):
            row[k] = m[k]
        return row


def _requests(requests, rate, duration_s, workload, arrival, cv, seed, offline, prefix_groups, prefix_len):
    if isinstance(requests, (list, tuple)):
        return list(requests)
    if isinstance(requests, str) or hasattr(requests, "read_text"):
        reqs = load_trace(requests)
        if offline:
            reqs = [Request(r.id, 0.0, r.prompt, r.output, r.prefix_id, r.prefix_len) for r in reqs]
        return reqs
    return generate(requests, rate=rate, duration_s=duration_s, workload=workload,
                    arrival="offline" if offline else arrival, cv=cv, seed=seed,
                    prefix_groups=prefix_groups, prefix_len=prefix_len)


def _pool(spec, chip, par, chips, policy, limits, mem_kw, model_kw, prefix_caching, role, offload=None, sp=None):
    if chips % par.chips:
        raise TapeoutError(f"{role}: {chips} chips is not a multiple of tp x pp x ep = {par.chips}")
    timer = StepTimer(spec, chip, par, **model_kw, offload=offload, speculative=sp)
    mem = plan_memory(spec, chip, timer.dtypes, par, max_batched_tokens=limits.max_batched_tokens,
                      max_seqs=limits.max_seqs, offload=offload, speculative=sp, **mem_kw)
    return Pool(timer, mem, chips // par.chips, policy, limits, prefix_caching,
                tokens_per_step=sp.tokens_per_step if sp else 1.0)


def _speculation(text, spec, par):
    """The `speculative` argument as a Speculation (None when unset), its draft model checked against tp."""
    from ..perf.speculative import speculation

    sp = speculation(text)
    if sp is not None and sp.draft:
        try:
            load_model(sp.draft).check_parallel(par.tp)
        except TapeoutError as e:
            raise TapeoutError(f"speculative {sp.text!r}: draft model {sp.draft!r}: {e}") from None
    return sp


def serve(model, chip="h100-sxm", *, chips: int | None = None, tp: int = 1, pp: int = 1, ep: int = 1,
          requests=None, rate: float | None = None, duration_s: float | None = None, workload: str = "chat",
          arrival: str = "poisson", cv: float = 1.0, offline: bool = False, seed: int = 0,
          scheduler: str = "continuous", max_seqs: int | None = None, max_batched_tokens: int | None = None,
          block_size: int | None = None, memory_utilization: float | None = None, prefix_caching: bool = False,
          prefix_groups: int = 0, prefix_len: int = 0, disaggregate: tuple[int, int] | None = None,
          prefill_par: Parallel | None = None, decode_par: Parallel | None = None,
          weights: str = "bf16", kv: str | None = None, activations: str | None = None, impl: str | None = None,
          slo_ttft: float | None = None, slo_tpot: float | None = None, progress=None, record_steps: bool = True,
          engine: str | None = None, micro_batches: int | None = None, stack: str | None = None,
          kv_offload: str | None = None, speculative=None, concurrency: int = 0,
          window_s: tuple[float, float] | None = None) -> ServeResult:
    """Simulate serving; `requests` is a count, a list of Request, or a trace file (CSV / JSONL).

    Unset limits and memory plan are `engine`'s (data/serve/engines.toml; `memory_utilization` is
    its memory fraction, of the whole memory or of what weights leave, per the engine);
    `micro_batches`: in flight over the pp stages (default: the engine's, pp); `stack`: the software
    stack (default: the chip's deployed stack); `kv_offload`: "host" or "pool" adds that tier's KV
    blocks (data/serve/kv_offload.toml), streamed back over its link in the steps that need them;
    `speculative`: "mtp:K", "draft:MODEL:K" (optionally ":ALPHA") or a perf.speculative.Speculation: every
    decode step verifies K drafted tokens per sequence and each sequence gains the expected tokens per step;
    `concurrency` N > 0: a closed loop of N users over the `requests` (issued at t = 0, then one per
    finished request); `window_s` (start, end): metrics over that window only, the run stopped at its end."""
    spec, c = load_model(model), load_chip(chip)
    e = engine_settings(engine).override(max_seqs=max_seqs, max_batched_tokens=max_batched_tokens,
                                         block_size=block_size, memory_fraction=memory_utilization)
    ttft0, tpot0 = default_slo()
    slo_ttft, slo_tpot = ttft0 if slo_ttft is None else slo_ttft, tpot0 if slo_tpot is None else slo_tpot
    if scheduler not in SCHEDULERS:
        raise TapeoutError(f"scheduler={scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if e.max_seqs < 1 or e.max_batched_tokens < 1 or e.block_size < 1 or not 0 < e.memory_fraction <= 1:
        raise TapeoutError("max_seqs, max_batched_tokens and block_size must be >= 1, memory_utilization in (0, 1]")
    par = Parallel(tp, pp, ep, e.micro_batches_per_stage * pp if micro_batches is None else micro_batches)
    if concurrency < 0 or (window_s is not None and not 0 <= window_s[0] < window_s[1]):
        raise TapeoutError(f"concurrency={concurrency}, window_s={window_s}: need concurrency >= 0 and 0 <= start < end")
    reqs = _requests(requests, rate, duration_s, workload, arrival, cv, seed, offline or concurrency > 0, prefix_groups,
                     prefix_len)
    limits = Limits(e.max_seqs, e.max_batched_tokens)
    model_kw = dict(weights=weights, kv=kv, activations=activations, impl=impl, stack=stack_for(c, stack))
    mem_kw = dict(block_size=e.block_size, utilization=e.memory_fraction, basis=e.memory_basis)
    tier = offload_tier(c, kv_offload)
    if disaggregate:
        p_chips, d_chips = disaggregate
        pools = {"prefill": _pool(spec, c, prefill_par or par, p_chips, "prefill", limits, mem_kw, model_kw, prefix_caching,
                                  "prefill pool", sp=_speculation(speculative, spec, prefill_par or par)),
                 "decode": _pool(spec, c, decode_par or par, d_chips, "decode", limits, mem_kw, model_kw, False, "decode pool",
                                 tier, _speculation(speculative, spec, decode_par or par))}
    else:
        pools = {"all": _pool(spec, c, par, chips or par.chips, scheduler, limits, mem_kw, model_kw, prefix_caching, "--chips",
                              tier, _speculation(speculative, spec, par))}
    rec = Sim(reqs, pools, record_steps, concurrency=concurrency, window_s=window_s).run(progress)
    settings = {"model": spec.name, "chip": c.name, "chips": rec.chips, "tp": tp, "pp": pp, "ep": ep,
                "micro_batches": par.in_flight, "engine": e.name, "memory_fraction": e.memory_fraction,
                "memory_basis": e.memory_basis,
                "scheduler": "disaggregated" if disaggregate else scheduler,
                "disaggregate": list(disaggregate) if disaggregate else None,
                "replicas": {k: p.replicas for k, p in pools.items()},
                "workload": workload if not isinstance(requests, (str, list, tuple)) else "trace",
                "arrival": "closed loop" if concurrency else "offline" if offline else arrival,
                "rate": None if offline or concurrency else rate, "cv": cv, "concurrency": concurrency,
                "window_s": list(window_s) if window_s else None,
                "seed": seed, "max_seqs": e.max_seqs, "max_batched_tokens": e.max_batched_tokens,
                "block_size": e.block_size, "prefix_caching": prefix_caching, "kv_offload": kv_offload,
                **_speculation_settings(next(iter(pools.values()))),
                **model_kw, "stack": model_kw["stack"].name, "impl": model_kw["stack"].impl if impl is None else impl,
                "dtypes": {k: vars(p.timer.dtypes) for k, p in pools.items()}}
    memory = {k: {"kv_blocks": p.memory.blocks, "kv_tokens": p.memory.kv_tokens,
                  "weights_bytes_per_chip": p.memory.weights_bytes, "kv_bytes_per_token_per_chip": p.memory.kv_bytes_per_token,
                  "activation_reserve_bytes": p.memory.activation_bytes, "usable_bytes_per_chip": p.memory.usable_bytes,
                  **_offload_memory(p.memory)}
              for k, p in pools.items()}
    m = summarize(rec, c, slo_ttft, slo_tpot) if rec.window is None else window_summary(rec, c, slo_ttft, slo_tpot)
    m["timer_calls"] = rec.timer_calls
    m["kv_offload_bytes_per_chip"], m["kv_offload_s"] = rec.offload_bytes, rec.offload_s
    m["tokens_per_decode_step"] = rec.decode_tokens / rec.decode_seq_steps if rec.decode_seq_steps else None
    return ServeResult(settings, m, memory, rec)


def _speculation_settings(pool) -> dict:
    sp = pool.timer.speculative
    return {"speculative": sp.text if sp else None, "tokens_per_step": pool.tokens_per_step,
            "acceptance": list(sp.rates()) if sp else None}


def _offload_memory(mem) -> dict:
    """The memory plan's offload tier, for ServeResult.memory (empty without one)."""
    if mem.offload is None:
        return {}
    return {"kv_tokens_in_hbm": mem.blocks_in_hbm * mem.block_size, "kv_offload": mem.offload.name,
            "kv_offload_tokens": (mem.blocks - mem.blocks_in_hbm) * mem.block_size,
            "kv_offload_capacity_bytes_per_chip": mem.offload.bytes_per_chip,
            "kv_offload_bandwidth_bytes_per_s": mem.offload.bandwidth_bytes_per_s}


def stable(result: ServeResult, tolerance: float = 0.95) -> bool:
    """The deployment keeps up: over the middle of the run, output tokens complete at least
    `tolerance` x as fast as they arrive (metrics.completion_ratio). A finite run at an overload can
    still show good latencies while its queue grows; MLPerf's long runs (>= 10 min) would not."""
    return result.metrics["completion_ratio"] >= tolerance


def meets(result: ServeResult, percentile: int = 99, check_stable: bool = True) -> bool:
    """p-th percentile TTFT and TPOT within the SLO (MLPerf Server's latency constraint), at a load
    the deployment sustains (`stable`; meaningful when the run holds many times rate x latency
    requests, as max_rate's do)."""
    m = result.metrics
    q = f"p{percentile}"
    ok = m["ttft_s"][q] <= m["slo"]["ttft_s"] and m["tpot_s"][q] <= m["slo"]["tpot_s"]
    return ok and (not check_stable or stable(result))


def max_rate(model, chip="h100-sxm", *, requests: int = 2000, percentile: int = 99, iterations: int = 8,
             progress=None, **kw) -> tuple[float, ServeResult]:
    """Highest Poisson request rate whose p-th percentile TTFT and TPOT meet the SLO, with the same
    seeded requests at every rate: from the offline request rate, double until the SLO fails, then
    bisect `iterations` times. Returns (rate, the result at that rate)."""
    kw.pop("rate", None)
    kw.pop("offline", None)
    run = lambda rate: serve(model, chip, requests=requests, rate=rate, record_steps=False, **kw)
    lo, best, step = 0.0, None, 0
    hi = serve(model, chip, requests=requests, offline=True, record_steps=False, **kw).metrics["request_rate"]
    for _ in range(12):                     # find a failing rate
        r = run(hi)
        step += 1
        if progress:
            progress(step, None, hi, meets(r, percentile))
        if not meets(r, percentile):
            break
        lo, best, hi = hi, r, hi * 2
    for _ in range(iterations):
        mid = (lo + hi) / 2
        r = run(mid)
        step += 1
        ok = meets(r, percentile)
        if progress:
            progress(step, None, mid, ok)
        if ok:
            lo, best = mid, r
        else:
            hi = mid
    return lo, best or r


def max_concurrency(model, chip="h100-sxm", *, window_s: tuple[float, float], limit: int, percentile: int = 99,
                    requests: int | None = None, progress=None, **kw) -> tuple[int, ServeResult]:
    """Largest closed-loop concurrency N <= `limit` whose p-th percentile TTFT and TPOT over the window
    meet the SLO, with the same seeded requests at every N: bisection on N (a closed loop cannot
    outrun its deployment, so there is no stability test). Each run draws `requests` requests (default:
    enough for the window, grown when a run uses them all). Returns (N, the result at N; N = 0 with
    the result at N = 1 when even one user misses the SLO)."""
    for k in ("rate", "offline", "concurrency"):
        kw.pop(k, None)
    per_user = [4.0]                      # requests each user sends in the run, from the last run

    def run(n: int) -> ServeResult:
        while True:
            pool = requests or max(16, int(n * per_user[0] * 1.5) + 8)
            r = serve(model, chip, requests=pool, concurrency=n, window_s=window_s, record_steps=False, **kw)
            if not r.metrics["exhausted"] or requests:
                per_user[0] = max(per_user[0], r.records.arrival[~np.isnan(r.records.arrival)].size / n)
                return r
            per_user[0] *= 2

    lo, hi, best, step = 0, limit, None, 0
    r = run(limit)
    if meets(r, percentile, check_stable=False):
        return limit, r
    while hi - lo > max(1, lo // 50):     # to 2 % of N
        mid = max(1, (lo + hi) // 2)
        r = run(mid)
        step += 1
        ok = meets(r, percentile, check_stable=False)
        if progress:
            progress(step, None, mid, ok)
        lo, best, hi = (mid, r, hi) if ok else (lo, best, mid)
        if mid == 1 and not ok:
            break
    return lo, best or r


def sweep(model, chip="h100-sxm", rates=(), progress=None, **kw) -> list[ServeResult]:
    """One simulation per request rate (same seed, so the same requests, arriving faster)."""
    out = []
    for i, r in enumerate(rates):
        out.append(serve(model, chip, rate=r, record_steps=False, **kw))
        if progress:
            progress(i + 1, len(rates), r)
    return out


__all__ = ["serve", "max_rate", "max_concurrency", "sweep", "meets", "ServeResult", "Parallel", "POLICIES"]
