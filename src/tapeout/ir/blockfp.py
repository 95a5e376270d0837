"""Block-scaled FP4 formats, NVFP4 and MXFP4: e2m1 elements in blocks that share one scale.

A format (`FORMATS`, read from data/block_formats.json with its sources) is a block size, a
scale dtype and whether a per-tensor f32 scale sits on top. In the IR a block-scaled tensor is
ordinary data plus the ordinary quantize/dequantize ops with a blocked scale:

    w = dequantize(q: f4e2m1[N, K], s: <scale dtype>[N, K/block], dtype=..., tensor_scale=ts)
      = round_dt((f32(q) * f32(s[n, k // block])) * f32(ts))           # left to right, in f32

`quantize(x, fmt)` is the reference quantizer: it picks the scales (which the IR ops take as
inputs) and then applies the IR's own `quantize` op. Per block of x (f32), amax = max |x|:

- mxfp4 (OCP MX v1.0, section 6.3): s = 2^(floor(log2(amax)) - 2), the exponent clipped to
  e8m0's [-127, 127] (2^-127 for an all-zero block; 2 = emax of e2m1), ts = 1.
- nvfp4 (NVIDIA): ts = amax(tensor) / (6 * 448) in f32 (1 for an all-zero tensor);
  s = e4m3(RNE(min((amax / 6) / ts, 448))), the divisions in f32.

then q = e2m1(RNE(clip(x / (f32(s) * ts), -6, 6))) (the product s * ts rounded to f32; for
mxfp4 ts = 1 and x / s is exact up to the final rounding). A block whose nvfp4 scale rounds to 0
dequantizes to 0. Non-finite inputs are rejected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import ml_dtypes
import numpy as np

from ..errors import TapeoutError
from .core import Eqn, Program, Var
from .dtypes import DTYPES
from .ops import infer

E2M1_MAX = float(ml_dtypes.finfo(ml_dtypes.float4_e2m1fn).max)          # 6
E2M1_EMAX = int(np.frexp(E2M1_MAX)[1]) - 1                                 # 2 = floor(log2(6))
E4M3_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)            # 448
E8M0_EXP = (-127, 127)                                                     # 2^-127 .. 2^127


@dataclass(frozen=True)
class BlockFormat:
    name: str
    block: int            # consecutive elements along the blocked axis sharing a scale
    scale_dtype: str      # IR dtype of the block scales
    tensor_scale: bool    # a per-tensor f32 scale on top of the block scales


def _load() -> dict[str, BlockFormat]:
    raw = json.loads((resources.files("tapeout.data") / "block_formats.json").read_text())
    return {k: BlockFormat(k, int(v["block"]), v["scale_dtype"], bool(v["tensor_scale"]))
            for k, v in raw.items() if isinstance(v, dict) and "block" in v}


FORMATS = _load()


@dataclass(frozen=True)
class Quantized:
    """x ~ dequantize(q, scale, tensor_scale=tensor_scale), blocks along `axis`."""
    q: np.ndarray           # f4e2m1, x's shape
    scale: np.ndarray       # fmt.scale_dtype, x's shape with the blocked axis divided by the block
    tensor_scale: float
    fmt: BlockFormat
    axis: int


def fmt_of(name: str) -> BlockFormat:
    if name not in FORMATS:
        raise TapeoutError(f"block format {name!r}: unknown (known: {', '.join(FORMATS)})")
    return FORMATS[name]


def _block_amax(x: np.ndarray, block: int, axis: int) -> np.ndarray:
    """max |x| over each block of `block` consecutive elements along `axis` (keeps x's rank)."""
    xs = np.moveaxis(np.abs(x), axis, -1)
    am = xs.reshape(xs.shape[:-1] + (xs.shape[-1] // block, block)).max(-1)
    return np.moveaxis(am, -1, axis)


def _scales(amax: np.ndarray, tensor_amax: float, fmt: BlockFormat) -> tuple[np.ndarray, float]:
    if fmt.scale_dtype == "f8e8m0":
        e = np.frexp(amax)[1].astype(np.int64) - 1 - E2M1_EMAX          # floor(log2(amax)) - emax
        e = np.where(amax > 0, np.clip(e, *E8M0_EXP), E8M0_EXP[0])
        return np.ldexp(np.float32(1), e).astype(np.float32).astype(DTYPES["f8e8m0"]), 1.0
    ts = np.float32(tensor_amax) / np.float32(E2M1_MAX * E4M3_MAX) if tensor_amax > 0 else np.float32(1)
    s = np.minimum(amax.astype(np.float32) / np.float32(E2M1_MAX) / ts, np.float32(E4M3_MAX))
    return s.astype(DTYPES[fmt.scale_dtype]), float(ts)


def quantize(x, fmt: str | BlockFormat, axis: int = -1) -> Quantized:
    """The reference block quantization of `x` (see the module docstring for the rule)."""
    from .interp import _quantize
    f = fmt if isinstance(fmt, BlockFormat) else fmt_of(fmt)
    x = np.asarray(x, np.float32)
    ax = axis % max(x.ndim, 1)
    if x.ndim == 0 or x.shape[ax] % f.block:
        raise TapeoutError(f"{f.name}: axis {axis} of shape {x.shape} is not a multiple of the block {f.block}")
    if not np.all(np.isfinite(x)):
        raise TapeoutError(f"{f.name}: cannot quantize non-finite values")
    amax = _block_amax(x, f.block, ax)
    s, ts = _scales(amax, float(amax.max(initial=0.0)), f)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = _quantize(x, s, dtype="f4e2m1", tensor_scale=ts)
    return Quantized(q, s, ts, f, ax)


def dequantize(qt: Quantized, dtype: str = "f32") -> np.ndarray:
    """The IR's dequantize of a Quantized (the interpreter's definition)."""
    from .interp import _dequantize
    return _dequantize(qt.q, qt.scale, dtype=dtype, tensor_scale=qt.tensor_scale)


def weight(b, w, fmt: str, dtype: str = "bf16", axis: int = -1, name: str = "w") -> Var:
    """Emit a block-quantized weight into Builder `b`: consts q and s, one dequantize eqn."""
    qt = quantize(w, fmt, axis)
    return b.dequantize(b.const(qt.q, name=f"{name}_q"), b.const(qt.scale, name=f"{name}_s"),
                        dtype=dtype, tensor_scale=qt.tensor_scale)


def quantize_weights(prog: Program, fmt: str, dtype: str | None = None) -> Program:
    """`prog` with every constant 2-D GEMM weight (linear's w[N, K], matmul's b[K, N]; blocks
    along K) replaced by its block-quantized form: a dequantize eqn (to `dtype`, default the
    weight's own) of f4e2m1 data and scales. Weights whose K is not a multiple of the block
    stay as they are."""
    f = fmt_of(fmt)
    consts, eqns, done = dict(prog.consts), [], {}
    slots = [_weight_slot(prog, e, f.block) for e in prog.eqns]
    other = {a.name for e, k in zip(prog.eqns, slots) for i, a in enumerate(e.inputs) if i != k and hasattr(a, "name")}
    other |= {o.name for o in prog.outputs if hasattr(o, "name")}
    for e, k in zip(prog.eqns, slots):
        if k is not None:
            w = e.inputs[k]
            if w.name not in done:
                done[w.name], new = _dequant_eqn(consts, w, f, 1 if e.op == "linear" else 0, dtype)
                eqns.append(new)
            e = Eqn(e.op, tuple(done[w.name] if i == k else a for i, a in enumerate(e.inputs)), e.outputs, e.params)
        eqns.append(e)
    for n in set(done) - other:
        consts.pop(n)
    return Program(prog.inputs, consts, tuple(eqns), prog.outputs, prog.name)


def _weight_slot(prog, e, block) -> int | None:
    """Index of e's constant GEMM weight operand whose K divides into blocks, else None."""
    k = {"linear": 1, "matmul": 1}.get(e.op)
    if k is None or not hasattr(e.inputs[k], "name") or e.inputs[k].name not in prog.consts:
        return None
    w = e.inputs[k]
    kdim = w.shape[1] if e.op == "linear" else w.shape[0] if len(w.shape) == 2 else 1
    return k if len(w.shape) == 2 and w.dtype in ("f32", "bf16", "f16") and kdim % block == 0 else None


def _shape_only(w: np.ndarray, f: BlockFormat, axis: int) -> Quantized:
    """Zero-stride stand-ins (a shape-only weight, as count-only NPU runs use) of w's quantized form."""
    sshape = tuple(d // f.block if i == axis else d for i, d in enumerate(w.shape))
    zero = lambda dt, shape: np.broadcast_to(np.ones((), DTYPES[dt]), shape)
    return Quantized(zero("f4e2m1", w.shape), zero(f.scale_dtype, sshape), 1.0, f, axis)


def _dequant_eqn(consts, w: Var, f: BlockFormat, axis: int, dtype):
    arr = consts[w.name]
    abstract = arr.size > 1 and not any(arr.strides)
    qt = _shape_only(arr, f, axis) if abstract else quantize(arr, f, axis)
    qn, sn = f"{w.name}_{f.name}_q", f"{w.name}_{f.name}_s"
    consts[qn], consts[sn] = qt.q, qt.scale
    avals = [(qt.q.shape, "f4e2m1"), (qt.scale.shape, f.scale_dtype)]
    (oav,), params = infer("dequantize", avals, {"dtype": dtype or w.dtype, "tensor_scale": qt.tensor_scale})
    out = Var(f"{w.name}_{f.name}", oav[0], oav[1])
    ins = (Var(qn, qt.q.shape, "f4e2m1"), Var(sn, qt.scale.shape, f.scale_dtype))
    return out, Eqn("dequantize", ins, (out,), params)
