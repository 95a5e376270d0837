"""The serving simulator's one view of performance: the time (and energy) of one step of a batch.

`StepTimer.step(prefill, n_decode, sum_ctx)` wraps `tapeout.perf.api.run_batch` (the detailed
form of `batch_time`) with memoization. A step is summarized by

    prefill chunks  k chunks, T new tokens in all, P (query, key) pairs under the causal masks
    decodes         n sequences with C cached tokens in all

and timed on a representative batch with the same k, T, P, n and C (k equal chunks whose cached
length gives P pairs; n decodes at the mean context). In the performance model GEMM time depends
on T + n, attention on P and C, so this keeps what the step costs while making steps comparable.
Values are snapped to a geometric grid (ratio 2^(1/resolution)) before the call; decode-only steps,
the bulk of a run, interpolate bilinearly in (n, C/n): C/n between geometric grid points, n between
the ends of each GEMM tile segment (the model's GEMM time steps up once per tile of rows and is
linear in n in between; exact below one sequence per core), which reproduces run_batch to ~1 %.

Parallelism inside a replica of tp x pp x ep chips:
- tp: the model's own tensor-parallel kernels and all-reduces (`run_batch(tp=...)`);
- ep: attention runs data-parallel over ep groups (each holds 1/ep of the sequences), experts are
  spread over the ep groups with all-to-all dispatch (`run_batch(ep=...)` on one group's share);
- pp: layers split over pp stages (the slowest holds ceil(layers / pp)); a stage takes its layers'
  share of the step, then sends its activations (T + n tokens x hidden) to the next stage
  (`parallel.transfer_time`). A replica keeps m micro-batches in flight (`Parallel.micro_batches`,
  default pp, as vLLM's virtual engines and TensorRT-LLM's micro-batches): each is one engine's
  step, and m of them started together through idle stages take

      pipeline_span = (m + pp - 1) x stage time + (pp - 1) x send time,

  a bubble of (pp - 1) / (m + pp - 1) of the stages' time (GPipe's fill and drain).

Speculative decoding (`speculative`, a perf.speculative.Speculation): a step with n decoding sequences
is a verification step, timed by `perf.speculative.spec_step` (K+1 queries per sequence beside the
prefill chunks, plus the drafting passes; its energy too); decode-only steps interpolate as above
with a GEMM tile every seg / (K+1) sequences.

KV offload (`offload`, a kvcache.OffloadTier): a step whose sequences' KV partly lives in host memory
or a memory pool streams those `offload_bytes` (per chip, its stage's layers) back over the tier's
link, layer by layer ahead of the attention that reads them, overlapped with compute: the step takes
max(compute, offload_bytes / tier bandwidth). Optimistic (a perfect prefetch, no HBM staging cost);
the transfer moves no joules in the energy model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..chip import load_chip
from ..errors import TapeoutError
from ..llm.kernels import Batch
from ..llm.spec import load_model
from ..perf.step import step_energy_j


@dataclass(frozen=True)
class Parallel:
    tp: int = 1
    pp: int = 1
    ep: int = 1
    micro_batches: int | None = None     # in flight over the pp stages; None: pp (one per stage)

    @property
    def chips(self) -> int:
        return self.tp * self.pp * self.ep

    @property
    def in_flight(self) -> int:
        return self.pp if self.micro_batches is None else self.micro_batches

    def check(self, spec) -> None:
        for k in ("tp", "pp", "ep", "in_flight"):
            if getattr(self, k) < 1:
                raise TapeoutError(f"{k.replace('in_flight', 'micro_batches')}={getattr(self, k)}: must be >= 1")
        if self.ep > 1 and spec.moe is None:
            raise TapeoutError(f"ep={self.ep}: {spec.name} is a dense model (expert parallelism needs MoE)")
        if self.pp > spec.layers:
            raise TapeoutError(f"pp={self.pp}: more stages than {spec.name}'s {spec.layers} layers")


def tier_seconds(tier, nbytes: float) -> float:
    """Seconds to stream `nbytes` per chip from a KV offload tier (kvcache.OffloadTier) over its link."""
    return nbytes / tier.bandwidth_bytes_per_s


def with_offload(compute_s: float, tier, nbytes: float) -> float:
    """A step that streams `nbytes` per chip from `tier` layer by layer, overlapped with its compute:
    max(compute, transfer) (a perfect prefetch; the module docstring's KV offload)."""
    return max(compute_s, tier_seconds(tier, nbytes)) if nbytes > 0 else compute_s


def _grid(x: float, r: float, exact_below: int = 32) -> tuple[float, float, float]:
    """(lower grid point, upper grid point, weight of upper) for x >= 0."""
    if x <= exact_below:
        lo = math.floor(x)
        return lo, lo + 1, x - lo
    e = math.log(x / exact_below, r)
    lo = exact_below * r ** math.floor(e)
    hi = lo * r
    return lo, hi, (x - lo) / (hi - lo)


def snap(x: float, r: float, exact_below: int = 32) -> float:
    lo, hi, w = _grid(x, r, exact_below)
    return hi if w >= 0.5 else lo


class StepTimer:
    """Memoized (seconds, joules per chip) of one step (of its slowest pipeline stage when pp > 1)."""

    def __init__(self, model, chip, par: Parallel = Parallel(), *, weights: str = "bf16", kv: str | None = None,
                 activations: str | None = None, impl: str | None = None, resolution: int = 32,
                 stack=None, offload=None, speculative=None):
        from ..perf.speculative import speculation

        self.spec, self.chip, self.par = load_model(model), load_chip(chip), par
        self.offload = offload
        self.speculative = speculation(speculative)
        par.check(self.spec)
        from ..perf.stack import stack_for

        self.stack = stack_for(self.chip, stack)
        self.kw = dict(weights=weights, kv=kv, activations=activations, impl=impl, tp=par.tp, ep=par.ep, stack=self.stack)
        self.r = 2.0 ** (1.0 / resolution)
        # GEMM time is a step function of the rows M (one more tile every `seg` rows) plus parts linear in M:
        # decode batch sizes interpolate between the ends of each tile segment, where that is exact
        self.seg = int(min(t[0] for t in self.stack.params_for(self.chip).gemm_tiles))
        if self.speculative:   # a verification step has K+1 rows per sequence: a tile every seg / (K+1) sequences
            self.seg = max(1, self.seg // (self.speculative.k + 1))
        # below one sequence per core, split-KV decode attention changes its split count with n: exact there
        self.exact_rows = -(-max(self.seg, self.chip.cores.count) // self.seg) * self.seg
        self.cache: dict = {}
        self.calls = 0
        from ..llm.kernels import DTYPE_BYTES
        from ..perf.api import dtypes_for

        self.dtypes = dtypes_for(weights, kv, activations, self.chip, self.stack)
        self._act_bytes = DTYPE_BYTES.get(self.dtypes.activations, 2.0)

    # ---- the seam
    def _measure(self, k: int, T: float, P: float, n: int, ctx: float) -> tuple[float, float]:
        from ..perf.api import run_batch

        pre = ()
        if k:
            new = max(1, round(T / k))
            cached = max(0, round((P / k - new * (new + 1) / 2) / new))
            pre = ((new, cached),) * k
        self.calls += 1
        if self.speculative and n:
            return self._speculative(pre, n, max(0, round(ctx)))
        st = run_batch(self.spec, self.chip, Batch(prefill=pre, decode=(max(0, round(ctx)),) * n), **self.kw)
        return st.seconds, step_energy_j(self.chip, st)

    def _speculative(self, pre: tuple, n: int, ctx: int) -> tuple[float, float]:
        """A step whose n decoding sequences each verify K drafted tokens (perf.speculative.spec_step: K+1
        queries per sequence beside the prefill chunks, plus the drafting passes)."""
        from ..perf.speculative import spec_step

        kw = self.kw
        st = spec_step(self.speculative, self.chip, self.spec, n, ctx, self.dtypes, self.stack, kw["impl"], kw["tp"],
                       kw["ep"], 0.0, prefill=pre)
        return st.seconds, st.energy_j(self.chip)

    def _cached(self, key) -> tuple[float, float]:
        v = self.cache.get(key)
        if v is None:
            v = self.cache[key] = self._measure(*key)
        return v

    def step(self, prefill: tuple[int, int, int] = (0, 0, 0), n_decode: int = 0, sum_ctx: int = 0,
             offload_bytes: float = 0.0) -> tuple[float, float]:
        """(seconds, joules per chip) of one step: prefill = (chunks, new tokens, attention pairs); with
        `offload_bytes` per chip to stream from the offload tier, at least their transfer time."""
        sec, joule = self._compute(prefill, n_decode, sum_ctx)
        if offload_bytes > 0:
            if self.offload is None:
                raise ValueError("offload_bytes without an offload tier")
            sec = with_offload(sec, self.offload, offload_bytes)
        return sec, joule

    def offload_s(self, nbytes: float) -> float:
        """Seconds to stream nbytes per chip from the offload tier."""
        if self.offload is None:
            raise ValueError("offload_bytes without an offload tier")
        return tier_seconds(self.offload, nbytes)

    def _compute(self, prefill, n_decode, sum_ctx) -> tuple[float, float]:
        k, T, P = prefill
        n, C = n_decode, sum_ctx
        ep = self.par.ep
        if ep > 1:  # one attention group's share
            k, T, P = math.ceil(k / ep), T / ep, P / ep
            n, C = math.ceil(n / ep), C / ep
        if k == 0 and n == 0:
            return 0.0, 0.0
        if k == 0:
            sec, joule = self._decode(n, C / n)
        else:
            r = self.r
            key = (k, snap(T, r), snap(P, r, 1024), n and int(snap(n, r, 64)), snap(C / n, r) if n else 0.0)
            sec, joule = self._cached(key)
        pp = self.par.pp
        if pp == 1:
            return sec, joule
        return sec * math.ceil(self.spec.layers / pp) / self.spec.layers, joule / pp

    def _rows(self, n: int) -> tuple[int, int, float]:
        if n <= self.exact_rows:
            return n, n, 0.0
        lo = (n - 1) // self.seg * self.seg + 1
        hi = lo + self.seg - 1
        return lo, hi, (n - lo) / (hi - lo)

    def _decode(self, n: int, ctx: float) -> tuple[float, float]:
        n0, n1, wn = self._rows(n)
        c0, c1, wc = _grid(ctx, self.r)
        out = [0.0, 0.0]
        for nn, a in ((n0, 1 - wn), (n1, wn)):
            if a == 0 or nn == 0:
                continue
            for cc, b in ((c0, 1 - wc), (c1, wc)):
                if b == 0:
                    continue
                s, j = self._cached((0, 0.0, 0.0, int(round(nn)), float(cc)))
                out[0] += a * b * s
                out[1] += a * b * j
        return out[0], out[1]

    def stage_send_s(self, tokens: int) -> float:
        """Seconds to pass one stage's activations (tokens x hidden) to the next pipeline stage."""
        if self.par.pp == 1 or tokens <= 0:
            return 0.0
        from ..parallel import transfer_time

        return transfer_time(self.chip, tokens * self.spec.hidden * self._act_bytes / self.par.tp)


def pipeline_span(stage_s: float, send_s: float, pp: int, m: int) -> float:
    """Seconds for m micro-batches started together to pass pp idle stages (each stage_s, then a send)."""
    return (m + pp - 1) * stage_s + (pp - 1) * send_s


def bubble_fraction(pp: int, m: int) -> float:
    """Idle share of the stages' time while m micro-batches fill and drain pp stages (sends aside)."""
    return (pp - 1) / (m + pp - 1)


def attention_pairs(new: int, cached: int) -> int:
    """(query, key) pairs of a prefill chunk of `new` tokens after `cached` tokens, causal."""
    return new * cached + new * (new + 1) // 2


