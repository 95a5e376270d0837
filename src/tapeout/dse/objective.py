"""Objectives of a design point: tokens/s per chip at a latency SLO, per joule and per dollar.

Two evaluators, one result shape (`Served`):

`analytic` (the fast one, ~1 ms per step time): steady-state continuous batching of requests of the
workload's mean prompt P and output O on one replica of tp x ep chips. Each of the ep attention
groups holds n sequences decoding at the mean context P + O/2, and prefills the n/O requests that
replace the finished ones in batches of k = max_batched_tokens // P prompts:

    TPOT(n) = t_decode(n) + n t_prefill(k) / (k O)     decode steps, stretched by the prefills between them
    TTFT(n) = t_prefill(k) + t_decode(n)               a new prompt waits for the running step, then its batch
    tok/s per chip = n ep / TPOT(n) / (tp ep)

n is the largest batch with TPOT <= slo_tpot, TTFT <= slo_ttft, n ep <= max_seqs and the KV cache of
n ep sequences of P + O tokens within the memory the serving simulator's plan leaves
(`tapeout.serve.kvcache.plan_memory`). Step times come from `tapeout.perf.api.run_batch` on a grid of
n, searched by bisection and interpolated linearly between grid points; energy per step from the
step's counted activity (`tapeout.energy`), so tok/J = tok/s per chip / average chip power.

`simulated`: the serving simulator (chunked prefill by default, as the analytic model assumes), with
the workload's `measure`:

    rate         (`tapeout.serve.api.max_rate`) the highest Poisson request rate whose p99 TTFT and
                 TPOT meet the SLO and that the deployment sustains, with its throughput and energy
                 per token. Its runs need enough requests to reach a steady state (~10,000 for chat
                 traffic at ~1,000 concurrent sequences; fewer under-report the rate).
    concurrency  (`tapeout.serve.api.max_concurrency`) for long outputs: the largest closed-loop
                 concurrency (users each sending the next request when the answer ends) whose p99
                 TTFT and TPOT meet the SLO in the steady state, measured over a window of
                 `window_lifetimes` request lifetimes after `warmup_lifetimes` of warm-up (a lifetime:
                 mean output x TPOT SLO). A Poisson run of a few thousand ~4,700-token answers never
                 reaches its steady state before the arrivals stop (its batch is still filling, then
                 it drains), so `rate` under-reports such traffic several times over.

Speculative decoding (`Workload.speculative`, "mtp:K" or "draft:MODEL:K", optionally ":ALPHA"; perf.speculative):
each decode step is a verification of K+1 tokens per sequence plus the drafting passes
(`perf.speculative.spec_step`) and yields T = 1 + a_1 + a_1 a_2 + ... tokens per sequence, so a request
needs O / T steps and n T / O requests finish per step:

    TPOT(n) = t_spec(n) / T + n t_prefill(k) / (k O)       TTFT(n) = t_prefill(k) + t_spec(n)

and the drafter's weights and KV cache come out of the memory (`plan_memory(speculative=...)`).

KV offload (`Workload.kv_offload`, "host" or "pool"; data/serve/kv_offload.toml): the KV capacity adds
the tier's blocks (`plan_memory(offload=...)`); the replica's n ep sequences at the mean context hold
n ep (P + O/2) tokens, those beyond HBM are read from the tier every decode step (the serving
simulator's rule, `MemoryPlan.offload_bytes`), and a decode step takes at least their transfer time
(`serve.steptime.with_offload`: max(compute, bytes / tier bandwidth); the transfer costs no joules).

Slower (seconds per point) and the reference: the analytic objective ranks designs, the simulator
gives headline numbers.

For each workload the best of its candidate layouts (tp, ep) and the first weight dtype the chip's
matrix units support and the stack runs natively (W8A8), else the first listed (weight-only
quantization) are used.

Both evaluators take `stack` (a name or `tapeout.stack.Stack`; default: the chip's deployed stack,
its file's `chip.stack`): the software the chip runs (host time per step, kernel efficiencies, fused
kernels, native formats; `tapeout.stack`, `tapeout stacks`). `ideal` is the silicon with a mature stack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DoesNotFitError, TapeoutError
from ..llm.kernels import DTYPE_BYTES, Batch
from ..llm.spec import load_model
from ..perf.api import dtypes_for, run_batch
from ..perf.speculative import spec_step, speculation
from ..perf.stack import stack_for
from ..perf.step import step_energy_j
from ..serve.api import max_concurrency, max_rate
from ..serve.data import table
from ..serve.kvcache import OFFLOAD_TIERS, offload_tier, plan_memory
from ..serve.steptime import Parallel, with_offload
from ..serve.workload import lengths
from .design import Infeasible

# decode batch sizes (sequences per attention group) at which step times are measured
GRID = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def _engines():
    """The serving defaults (SLOs, engine limits): data/serve/engines.toml."""
    from ..serve import engines

    return engines


@dataclass(frozen=True)
class Workload:
    model: str
    traffic: str = "chat"                 # data/serve/workloads.toml name or fixed:PROMPT:OUTPUT
    layouts: tuple[tuple[int, int], ...] = ((1, 1),)   # candidate (tp, ep) of one replica
    weights: tuple[str, ...] = ("bf16",)
    slo_ttft_s: float = field(default_factory=lambda: _engines().default_slo()[0])
    slo_tpot_s: float = field(default_factory=lambda: _engines().default_slo()[1])
    max_seqs: int = field(default_factory=lambda: _engines().engine_settings().max_seqs)   # per replica (the engine's limit)
    max_batched_tokens: int = field(default_factory=lambda: _engines().engine_settings().max_batched_tokens)
    requests: int = 2000                  # simulated evaluator: requests per run (measure "rate")
    scheduler: str = "chunked"            # simulated evaluator: the serving engine's scheduler
    label: str = ""
    measure: str = "rate"                 # simulated evaluator: "rate" or "concurrency" (MEASURES)
    warmup_lifetimes: float = 1.5         # measure "concurrency": warm-up, in request lifetimes (output x TPOT SLO)
    window_lifetimes: float = 3.0         # measure "concurrency": the measurement window after it
    ranked: bool = True                   # False: evaluated and reported, left out of the means that rank designs
    speculative: str | None = None        # "mtp:K[:ALPHA]" or "draft:MODEL:K[:ALPHA]": speculative decoding (perf.speculative)
    kv_offload: str | None = None         # "host" or "pool": a second KV tier (serve.kvcache.offload_tier)
    kv: str | None = None                 # KV-cache dtype (default: perf.api.dtypes_for's, fp8 with native fp8 weights, else bf16)

    def __post_init__(self):
        if self.speculative is not None:
            if not isinstance(self.speculative, str):
                raise TapeoutError(f"speculative {self.speculative!r}: write a string such as \"mtp:1\"")
            speculation(self.speculative)            # a one-line TapeoutError for a malformed one
        if self.kv_offload is not None and self.kv_offload not in OFFLOAD_TIERS:
            raise TapeoutError(f"kv_offload {self.kv_offload!r}: use one of {', '.join(OFFLOAD_TIERS)}")
        if self.kv is not None and self.kv not in DTYPE_BYTES:
            raise TapeoutError(f"kv dtype {self.kv!r}: use one of {', '.join(DTYPE_BYTES)}")

    @property
    def name(self) -> str:
        return self.label or self.model

    def lengths(self) -> tuple[float, float]:
        """Mean (prompt, output) tokens of the traffic."""
        if self.traffic.startswith("fixed:"):
            p, o = lengths(self.traffic, 1, np.random.default_rng(0))   # fixed: the one parser, no sampling
            return float(p[0]), float(o[0])
        from ..serve.workload import llm_workload

        w = llm_workload(self.traffic)
        return float(w["prompt_mean"] + w.get("prefix_len", 0)), float(w["output_mean"])   # agentic: + shared context

    def window_s(self) -> tuple[float, float]:
        """Measure "concurrency": the (start, end) seconds of the steady-state window of a closed-loop run."""
        life = self.lengths()[1] * self.slo_tpot_s
        return self.warmup_lifetimes * life, (self.warmup_lifetimes + self.window_lifetimes) * life

    def dtype_for(self, chip, stack=None) -> str:
        """The first listed weight format the chip's matrix units have and `stack` (if given) runs natively."""
        for w in self.weights:
            if w in ("bf16", "fp16") or (chip.supports(w) and (stack is None or stack.native(w))):
                return w
        return self.weights[0]


@dataclass(frozen=True)
class Served:
    tok_s_per_chip: float
    tok_per_j: float              # = tokens/s per watt of average chip power
    power_w: float                # average per chip
    batch: float                  # concurrent sequences per replica
    ttft_s: float
    tpot_s: float
    tp: int
    ep: int
    weights: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"tok_s_per_chip": self.tok_s_per_chip, "tok_per_j": self.tok_per_j, "power_w": self.power_w,
                "batch": self.batch, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "tp": self.tp, "ep": self.ep,
                "weights": self.weights, **self.extra}


class _Layout:
    """Step times of one (model, chip, tp, ep, weights), memoized over the decode grid."""

    def __init__(self, spec, chip, wl: Workload, tp: int, ep: int, weights: str, stack=None):
        self.spec, self.chip, self.wl, self.tp, self.ep, self.weights = spec, chip, wl, tp, ep, weights
        self.stack = stack_for(chip, stack)
        self.P, self.O = wl.lengths()
        self.dt = dtypes_for(weights, wl.kv, None, chip, self.stack)
        par = Parallel(tp, 1, ep)
        par.check(spec)
        self.sp = speculation(wl.speculative)
        try:
            self.tier = offload_tier(chip, wl.kv_offload)
        except TapeoutError as e:
            raise Infeasible(f"{wl.name}: {e}") from None
        self.tokens_per_step = self.sp.tokens_per_step if self.sp else 1.0
        if self.sp is not None and self.sp.draft:
            try:
                load_model(self.sp.draft).check_parallel(tp)
            except TapeoutError as e:
                raise Infeasible(f"{wl.name}: speculative {self.sp.text!r}: {e}") from None
        try:
            mem = plan_memory(spec, chip, self.dt, par, max_batched_tokens=wl.max_batched_tokens, max_seqs=wl.max_seqs,
                              offload=self.tier, speculative=self.sp)
        except DoesNotFitError as e:
            raise Infeasible(f"{wl.name}: {e}") from None
        self.mem = mem
        self.ctx = max(1, round(self.P + self.O / 2))            # the mean context of a decoding sequence
        per_seq = mem.kv_tokens / (self.P + self.O)
        self.n_max = min(per_seq, wl.max_seqs) / ep            # sequences per attention group
        self._dec: dict[int, tuple[float, float]] = {}
        k = max(1, int(wl.max_batched_tokens // self.P))
        self.k_pre = max(1, math.ceil(k / ep))
        st = self._run(prefill=((max(1, round(self.P)), 0),) * self.k_pre)
        self.t_pre, self.e_pre = st.seconds, step_energy_j(chip, st)

    def _run(self, prefill=(), decode=()):
        return run_batch(self.spec, self.chip, Batch(prefill=prefill, decode=decode), weights=self.weights,
                         kv=self.wl.kv, tp=self.tp, ep=self.ep, stack=self.stack)

    def decode(self, n: int) -> tuple[float, float]:
        """(seconds, joules per chip) of one decode step of n sequences per group: a plain decode step, or a
        speculative one (verification of K+1 tokens per sequence plus the drafting passes)."""
        hit = self._dec.get(n)
        if hit is None:
            if self.sp is None:
                st = self._run(decode=(self.ctx,) * n)
                hit = (st.seconds, step_energy_j(self.chip, st))
            else:
                ss = spec_step(self.sp, self.chip, self.spec, n, self.ctx, self.dt, self.stack, None, self.tp, self.ep, 0.0)
                hit = (ss.seconds, ss.energy_j(self.chip))
            self._dec[n] = hit
        return hit

    def interp(self, n: float) -> tuple[float, float]:
        """(seconds, joules per chip) of a decode step of n sequences per group without the offload
        transfer, linear between the grid points around n."""
        lo = max([g for g in GRID if g <= n] or [1])
        hi = min([g for g in GRID if g >= n] or [GRID[-1]])
        (t0, e0), (t1, e1) = self.decode(lo), self.decode(hi)
        w = 0.0 if hi == lo else (n - lo) / (hi - lo)
        return t0 + w * (t1 - t0), e0 + w * (e1 - e0)

    def compute_s(self, n: float) -> float:
        """Seconds of a decode step of n sequences per group without the offload transfer."""
        return self.interp(n)[0]

    def offload_bytes(self, n: float) -> float:
        """Bytes per chip a decode step of n sequences per group streams from the offload tier (0 without one):
        the replica's n ep sequences at the mean context, HBM first."""
        tokens = n * self.ep * self.ctx
        return self.mem.offload_bytes(tokens, tokens, self.ep)

    def at(self, n: float) -> tuple[float, float, float, float]:
        """(TPOT, TTFT, seconds per decode step, joules per chip per decode step) at n sequences per group,
        linear between the grid points around n."""
        t, e = self.interp(n)
        if self.tier is not None:
            t = with_offload(t, self.tier, self.offload_bytes(n))
        return t / self.tokens_per_step + n * self.t_pre / (self.k_pre * self.O), self.t_pre + t, t, e

    def ok(self, n: float) -> bool:
        tpot, ttft, _, _ = self.at(n)
        return tpot <= self.wl.slo_tpot_s and ttft <= self.wl.slo_ttft_s

    def best_batch(self, cap: float | None = None) -> float:
        """Largest n (sequences per group, real-valued) meeting the SLO and memory (and `cap`), or Infeasible."""
        cap = min(self.n_max, GRID[-1], math.inf if cap is None else cap)
        if cap < 1:
            raise Infeasible(f"{self.wl.name}: KV cache holds {self.n_max * self.ep:.2f} sequences of "
                             f"{self.P + self.O:.0f} tokens (tp={self.tp} ep={self.ep})")
        if not self.ok(1):
            tpot, ttft, _, _ = self.at(1)
            raise Infeasible(f"{self.wl.name}: SLO missed at batch 1 (TPOT {tpot * 1e3:.0f} ms, TTFT {ttft:.2f} s; "
                             f"tp={self.tp} ep={self.ep})")
        if self.ok(cap):
            return cap
        pts = [g for g in GRID if g < cap] + [cap]
        lo, hi = 0, len(pts) - 1                  # pts[lo] ok, pts[hi] not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.ok(pts[mid]) else (lo, mid)
        a, b = pts[lo], pts[hi]                   # bisect the interpolated segment
        for _ in range(20):
            m = (a + b) / 2
            a, b = (m, b) if self.ok(m) else (a, m)
        return a

    def offload_batch(self, n: float) -> float:
        """With an offload tier, the n (of n, the batch HBM holds and the batch where the transfer starts to
        outlast the compute) with the most tokens/s: past the batch HBM holds, every sequence added spills KV
        that each step streams over the tier, and once that transfer binds TPOT grows with n faster than n."""
        per_seq = self.mem.blocks_in_hbm * self.mem.block_size / (self.P + self.O) / self.ep
        cands = [n]
        if 1 <= per_seq < n:
            cands.append(self.best_batch(per_seq))
            lo, hi = per_seq, n                     # the transfer fits under the compute at lo, not (maybe) at hi
            for _ in range(30):
                m = (lo + hi) / 2
                lo, hi = (m, hi) if with_offload(self.compute_s(m), self.tier, self.offload_bytes(m)) <= self.compute_s(m) else (lo, m)
            cands.append(lo)
        return max(cands, key=lambda x: x / self.at(x)[0])

    def served(self) -> Served:
        n = self.best_batch()
        if self.tier is not None:
            n = self.offload_batch(n)
        tpot, ttft, t_d, e_d = self.at(n)
        chips = self.tp * self.ep
        tok_s_chip = n * self.ep / tpot / chips
        # per chip over one "generation": O / T decode steps and n/k prefill batches
        steps = self.O / self.tokens_per_step
        joules = steps * e_d + n / self.k_pre * self.e_pre
        seconds = steps * t_d + n / self.k_pre * self.t_pre
        power = joules / seconds
        extra = {"stack": self.stack.name}
        if self.sp is not None:
            extra.update(speculative=self.sp.text, tokens_per_step=self.tokens_per_step)
        if self.tier is not None:
            extra.update(kv_offload=self.tier.name, kv_tokens_in_hbm=self.mem.blocks_in_hbm * self.mem.block_size,
                         kv_tokens=self.mem.kv_tokens, kv_offload_bytes_per_step=self.offload_bytes(n))
        return Served(tok_s_chip, tok_s_chip / power, power, n * self.ep, ttft, tpot, self.tp, self.ep,
                      self.weights, extra)


def analytic(chip, wl: Workload, stack=None) -> Served:
    """The best layout of `wl` on `chip` with `stack` by the analytic steady-state model, or Infeasible(reasons)."""

    spec, st = load_model(wl.model), stack_for(chip, stack)
    weights = wl.dtype_for(chip, st)
    return _best_layout(wl, lambda tp, ep: _Layout(spec, chip, wl, tp, ep, weights, st).served())


def _best_layout(wl: Workload, serve_one) -> Served:
    """The layout of `wl.layouts` whose `serve_one(tp, ep)` gives the most tokens/s per chip, or
    Infeasible with every layout's reason (a layout that does not fit counts as infeasible)."""
    best, reasons = None, []
    for tp, ep in wl.layouts:
        try:
            s = serve_one(tp, ep)
        except DoesNotFitError as e:
            reasons.append(f"{wl.name}: {e}")
            continue
        except Infeasible as e:
            reasons.append(str(e))
            continue
        if best is None or s.tok_s_per_chip > best.tok_s_per_chip:
            best = s
    if best is None:
        raise Infeasible("; ".join(reasons))
    return best


def _simulate(chip, wl: Workload, tp: int, ep: int, weights: str, st, seed: int) -> Served:
    """One layout in the serving simulator with the workload's measure (Infeasible when nothing meets the SLO)."""
    kw = dict(tp=tp, ep=ep, workload=wl.traffic, weights=weights, slo_ttft=wl.slo_ttft_s, slo_tpot=wl.slo_tpot_s,
              seed=seed, max_seqs=wl.max_seqs, max_batched_tokens=wl.max_batched_tokens, scheduler=wl.scheduler, stack=st,
              speculative=wl.speculative, kv_offload=wl.kv_offload, kv=wl.kv)
    if wl.measure == "concurrency":
        load, r = max_concurrency(wl.model, chip, window_s=wl.window_s(), limit=wl.max_seqs, **kw)
        extra = {"concurrency": load, "request_rate": r.metrics["request_rate"], "preemptions": r.metrics["preemptions"]}
    else:
        load, r = max_rate(wl.model, chip, requests=wl.requests, iterations=6, **kw)
        extra = {"request_rate": load}
    if load <= 0:
        raise Infeasible(f"{wl.name}: no {'concurrency' if wl.measure == 'concurrency' else 'request rate'} meets "
                         f"the SLO (tp={tp} ep={ep})")
    m = r.metrics
    return Served(m["throughput_tok_s_per_chip"], 1.0 / m["energy_j_per_token"], m["power_w_per_chip"],
                  load if wl.measure == "concurrency" else math.nan, m["ttft_s"]["p99"], m["tpot_s"]["p99"], tp, ep,
                  weights, {"stack": st.name, "measure": wl.measure, **extra, "cost_usd_per_mtok": m["cost_usd_per_mtok"],
                            "cost_basis": m["cost_basis"], "ttft_p50_s": m["ttft_s"]["p50"], "tpot_p50_s": m["tpot_s"]["p50"]})


def simulated(chip, wl: Workload, stack=None, seed: int = 0) -> Served:
    """The best layout of `wl` on `chip` with `stack` in the serving simulator (the workload's measure:
    max Poisson rate, or max closed-loop concurrency, meeting the p99 SLO)."""

    st = stack_for(chip, stack)
    weights = wl.dtype_for(chip, st)
    return _best_layout(wl, lambda tp, ep: _simulate(chip, wl, tp, ep, weights, st, seed))


EVALUATORS = {"analytic": analytic, "simulated": simulated}
MEASURES = ("rate", "concurrency")
