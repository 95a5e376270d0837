"""The performance model's Python API: one entry point per level.

    >>> import tapeout
    >>> r = tapeout.estimate("qwen2.5-7b", chip="h100-sxm", batch=8, prompt=2048, output=256)
    >>> r.ttft_s < 1 and r.tpot_s < 0.1
    True
    >>> tapeout.step_time("llama-3.1-8b", chip="h100-sxm", phase="decode", batch=64, context=4096) < 0.1
    True

- `step_time(model, chip, phase, batch, context|prompt)`: seconds of one prefill or decode step.
- `batch_time(model, chip, Batch)`: seconds of one mixed serving batch (the serving simulator's seam).
- `estimate(model, chip, batch, prompt, output)`: TTFT, TPOT, end-to-end latency, tokens/s, memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..chip import Chip, load_chip
from ..errors import DoesNotFitError, TapeoutError
from ..llm.kernels import DTYPE_BYTES, FP4, Batch, Dtypes, build_step
from ..llm.spec import ModelSpec, load_model
from .speculative import add_memory, spec_step, speculation
from .stack import Stack, lower, stack_for
from .step import StepTime, run_kernels

GiB = 2.0 ** 30


def dtypes_for(weights: str, kv: str | None, activations: str | None, chip: Chip, stack: Stack | None = None) -> Dtypes:
    """The dtypes of weights, activations and KV cache as serving engines pick them on `chip` with
    `stack`: 8-bit weights run 8-bit GEMMs (W8A8) where the chip has the format and the stack runs it
    natively, else they are weight-only (dequantized to bf16 for the matmul)."""
    native = lambda d: chip.supports(d) and (stack is None or stack.native(d))  # noqa: E731
    for what, d in (("weights", weights), ("kv", kv), ("activations", activations)):
        if d is not None and d not in DTYPE_BYTES:
            raise TapeoutError(f"{what} dtype {d!r}: use one of {', '.join(DTYPE_BYTES)}")
    act = activations
    if act is None:  # 8-bit (FP4) weights run 8-bit (FP4) GEMMs where the chip and stack have them (W8A8, W4A4), else weight-only
        key = "fp4" if weights in FP4 else weights
        act = weights if weights in ("fp8", "int8", *FP4) and native(key) else "bf16"
    return Dtypes(weights=weights, activations=act, kv=kv or ("fp8" if weights == "fp8" and native("fp8") else "bf16"))


def _run(c: Chip, spec: ModelSpec, batch: Batch, dt: Dtypes, s: Stack, impl: str | None, tp: int, ep: int,
         moe_skew: float, clock_hz: float | None = None) -> StepTime:
    ks = build_step(spec, batch, dt, s.impl if impl is None else impl, tp, ep, moe_skew, s.rank_cores(c),
                    dense_moe=s.moe == "dense")
    return run_kernels(c, lower(s, ks), queued=s.has("graphs"), params=s.params_for(c), clock_hz=clock_hz,
                       step_overhead=True)


def run_batch(model, chip, batch: Batch, *, weights: str = "bf16", kv: str | None = None,
              activations: str | None = None, impl: str | None = None, tp: int = 1, ep: int = 1,
              clock_hz: float | None = None, moe_skew: float = 0.0, stack: str | Stack | None = None) -> StepTime:
    """Per-kernel timing of one step of `batch` (the full result behind batch_time/step_time).
    `stack`: the software stack (default: the chip's deployed stack); `impl` overrides its kernel
    sequence. `clock_hz` pins the clock (a what-if); by default the power-limited clock is solved."""
    c, spec = load_chip(chip), load_model(model)
    s = stack_for(c, stack)
    return _run(c, spec, batch, dtypes_for(weights, kv, activations, c, s), s, impl, tp, ep, moe_skew, clock_hz)


def batch_time(model, chip, batch: Batch, **kw) -> float:
    """Seconds of one step over a mixed batch of prefill chunks and decodes."""
    return run_batch(model, chip, batch, **kw).seconds


def step_time(model, chip="h100-sxm", phase: str = "decode", batch: int = 1, context: int | None = None,
              prompt: int | None = None, **kw) -> float:
    """Seconds of one prefill (`prompt` tokens each) or decode (`context` cached tokens each) step."""
    length = context if phase == "decode" else (prompt if prompt is not None else context)
    if length is None:
        raise TapeoutError("step_time: give context= for decode or prompt= for prefill")
    return batch_time(model, chip, Batch.of(phase, batch, length), **kw)


@dataclass(frozen=True)
class Memory:
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    capacity_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes


def memory_use(spec: ModelSpec, chip: Chip, dt: Dtypes, batch: int, tokens: int, prompt: int, tp: int = 1,
               ep: int = 1) -> Memory:
    """Weights + KV cache (batch x tokens) + the largest prefill activations, per chip of `tp` x `ep`
    (routed experts are split over the `ep` chips, everything else over `tp`)."""
    m = spec.moe
    experts = 0 if m is None else (spec.layers - m.dense_layers) * m.experts * 3 * spec.hidden * m.intermediate
    w = ((spec.n_params - experts) / tp + experts / (tp * ep)) * dt.w
    kv = batch * tokens * spec.kv_bytes_per_token(dt.kvb) / tp
    inter = spec.moe.intermediate * spec.moe.top_k if spec.moe else spec.intermediate
    act = batch * prompt * (2 * spec.hidden + 3 * inter / tp) * dt.a + batch * spec.vocab * 4
    return Memory(w, kv, act, chip.memory_bytes)


def check_fit(m: Memory, chip: Chip, spec: ModelSpec) -> None:
    if not m.fits:
        raise DoesNotFitError(
            f"{spec.name} does not fit on {chip.name}: needs {m.total_bytes / GiB:.1f} GiB "
            f"(weights {m.weights_bytes / GiB:.1f}, KV cache {m.kv_cache_bytes / GiB:.1f}, activations "
            f"{m.activation_bytes / GiB:.1f}), chip has {m.capacity_bytes / GiB:.1f} GiB; try fp8/int4 weights, "
            f"a smaller batch or more chips (tp)")


@dataclass(frozen=True)
class Estimate:
    model: str
    chip: str
    batch: int
    prompt: int
    output: int
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s: float         # generated tokens per second over the whole request (batch x output / e2e)
    decode_tokens_per_s: float  # batch / TPOT
    memory: Memory
    prefill: StepTime
    decode: StepTime
    settings: dict = field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        return self.memory.total_bytes

    @property
    def breakdown(self) -> dict[str, dict[str, float]]:
        """Seconds by kernel kind: prefill (the whole TTFT step) and decode (one average step)."""
        return {"prefill": self.prefill.by_kind(), "decode": self.decode.by_kind()}

    @property
    def bounds(self) -> dict[str, str]:
        return {"prefill": self.prefill.bound, "decode": self.decode.bound}

    def to_dict(self) -> dict:
        return {"model": self.model, "chip": self.chip, "batch": self.batch, "prompt": self.prompt,
                "output": self.output, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
                "tokens_per_s": self.tokens_per_s, "decode_tokens_per_s": self.decode_tokens_per_s,
                "memory": {"weights_bytes": self.memory.weights_bytes, "kv_cache_bytes": self.memory.kv_cache_bytes,
                           "activation_bytes": self.memory.activation_bytes, "total_bytes": self.memory.total_bytes,
                           "capacity_bytes": self.memory.capacity_bytes},
                "bounds": self.bounds, "breakdown": self.breakdown,
                "clock_hz": {"prefill": self.prefill.clock_hz, "decode": self.decode.clock_hz},
                "settings": self.settings}


def estimate(model, chip="h100-sxm", batch: int = 1, prompt: int = 1024, output: int = 128, *,
             weights: str = "bf16", kv: str | None = None, activations: str | None = None, impl: str | None = None,
             tp: int = 1, ep: int = 1, moe_skew: float = 0.0, check_memory: bool = True,
             stack: str | Stack | None = None, speculative=None) -> Estimate:
    """Latency and throughput of `batch` requests of `prompt` tokens generating `output` tokens each.

    TTFT is one prefill step of the whole batch; TPOT is the decode step at the mean context
    (decode time is linear in context, so this is the exact average over the output).
    `speculative` ("mtp:1", "draft:MODEL:K", a perf.speculative.Speculation): TPOT is a verification
    step plus drafting over the expected tokens per step; `decode` is then the verification step."""
    if batch < 1 or prompt < 1 or output < 1:
        raise TapeoutError("batch, prompt and output must be >= 1")
    c, spec = load_chip(chip), load_model(model)
    spec.check_parallel(tp, ep)
    s = stack_for(c, stack)
    dt = dtypes_for(weights, kv, activations, c, s)
    mem = memory_use(spec, c, dt, batch, prompt + output, prompt, tp, ep)
    sp = speculation(speculative)
    mem = add_memory(mem, sp, c, spec, dt, batch, prompt + output, tp, ep)
    if check_memory:
        check_fit(mem, c, spec)
    pre = _run(c, spec, Batch.of("prefill", batch, prompt), dt, s, impl, tp, ep, moe_skew)
    # a stack without dynamic shapes decodes over its compiled length (prompt + output), not the cache so far
    ctx = prompt + output // 2 if s.has("dynamic_shapes") else prompt + output
    settings = {"weights": dt.weights, "activations": dt.activations, "kv": dt.kv, "impl": s.impl if impl is None else impl,
                "stack": s.name, "tp": tp, "ep": ep, "moe_skew": moe_skew}
    if sp is None:
        dec = _run(c, spec, Batch.of("decode", batch, ctx), dt, s, impl, tp, ep, moe_skew)
        tpot = dec.seconds
    else:
        st = spec_step(sp, c, spec, batch, ctx, dt, s, impl, tp, ep, moe_skew)
        dec, tpot = st.verify, st.tpot_s
        settings.update(st.summary(sp))
    e2e = pre.seconds + (output - 1) * tpot
    return Estimate(spec.name, c.name, batch, prompt, output, pre.seconds, tpot, e2e,
                    batch * output / e2e, batch / tpot, mem, pre, dec, settings)
