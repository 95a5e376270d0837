"""Op table: name -> shape/dtype rule. Semantics are in `tapeout.ir.interp`; the user-facing
reference (every op, its params, an example) is docs/ir.md.

A rule takes the input avals (shape, dtype) and the user's params, and returns
(output avals, normalized params). Normalized params are complete (every default filled in)
and canonical (axes non-negative, sequences as tuples), so a consumer of an Eqn never has
to guess a default.
"""
from __future__ import annotations

from math import ceil, prod

import numpy as np

from ..errors import TapeoutError, UnsupportedOpError
from .dtypes import DTYPES, FLOATS, INTS

Aval = tuple[tuple[int, ...], str]


class IRError(TapeoutError):
    """An ill-formed equation: wrong arity, shapes, dtypes or params for its op."""


def _fail(op: str, msg: str):
    raise IRError(f"{op}: {msg}")


def _axis(op, a, ndim):
    if not -max(ndim, 1) <= a < max(ndim, 1):
        _fail(op, f"axis {a} out of range for rank {ndim}")
    return a % max(ndim, 1)


def bcast(op, *shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        _fail(op, f"shapes {' '.join(map(str, shapes))} do not broadcast")


def _same_dtype(op, avals):
    dts = {d for _, d in avals}
    if len(dts) != 1:
        _fail(op, f"operands must share one dtype, got {sorted(dts)}")
    return dts.pop()


def _arity(op, avals, lo, hi=None):
    hi = lo if hi is None else hi
    if not lo <= len(avals) <= hi:
        _fail(op, f"takes {lo}{'' if hi == lo else f'-{hi}'} inputs, got {len(avals)}")


def _need_float(op, dt):
    if dt not in FLOATS:
        _fail(op, f"needs a float dtype, got {dt}")


# ---- elementwise -------------------------------------------------------------------------
UNARY_FLOAT = ("exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh", "sigmoid",
               "silu", "erf", "floor", "ceil", "round")
UNARY_ANY = ("neg", "abs", "relu", "sign")
BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
LOGICAL = ("logical_and", "logical_or", "logical_xor")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _unary(op, avals, float_only=False, **params):
    _arity(op, avals, 1)
    (shape, dt), = avals
    if float_only:
        _need_float(op, dt)
    if dt == "bool":
        _fail(op, "not defined on bool")
    return [(shape, dt)], params


def _gelu(op, avals, approximate="none"):
    if approximate not in ("none", "tanh"):
        _fail(op, f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _unary(op, avals, True, approximate=approximate)


def _clamp(op, avals, min=None, max=None):
    return _unary(op, avals, False, min=None if min is None else float(min),
                  max=None if max is None else float(max))


def _logical_not(op, avals):
    _arity(op, avals, 1)
    if avals[0][1] != "bool":
        _fail(op, "needs bool")
    return [avals[0]], {}


def _binary(op, avals, out_dtype=None):
    _arity(op, avals, 2)
    dt = _same_dtype(op, avals)
    if dt == "bool" and out_dtype is None and op not in LOGICAL:
        _fail(op, "not defined on bool")
    if op in LOGICAL and dt != "bool":
        _fail(op, "needs bool operands")
    return [(bcast(op, *(s for s, _ in avals)), out_dtype or dt)], {}


def _where(op, avals):
    _arity(op, avals, 3)
    if avals[0][1] != "bool":
        _fail(op, f"condition must be bool, got {avals[0][1]}")
    dt = _same_dtype(op, avals[1:])
    return [(bcast(op, *(s for s, _ in avals)), dt)], {}


def _cast(op, avals, dtype):
    _arity(op, avals, 1)
    if dtype not in DTYPES:
        _fail(op, f"unknown dtype {dtype!r}")
    return [(avals[0][0], dtype)], {"dtype": dtype}


# ---- reductions --------------------------------------------------------------------------
def _reduce(op, avals, axes=None, keepdims=False):
    _arity(op, avals, 1)
    (shape, dt), = avals
    if dt == "bool":
        _fail(op, "not defined on bool (cast first)")
    if op == "reduce_mean":
        _need_float(op, dt)
    nd = len(shape)
    axes = tuple(range(nd)) if axes is None else tuple(sorted({_axis(op, a, nd) for a in np.atleast_1d(axes).tolist()}))
    out = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims else \
        tuple(d for i, d in enumerate(shape) if i not in axes)
    return [(out, dt)], {"axes": axes, "keepdims": bool(keepdims)}


def _argreduce(op, avals, axis, keepdims=False):
    _arity(op, avals, 1)
    (shape, dt), = avals
    ax = _axis(op, axis, len(shape))
    out = tuple(1 if i == ax else d for i, d in enumerate(shape)) if keepdims else shape[:ax] + shape[ax + 1:]
    return [(out, "i64")], {"axis": ax, "keepdims": bool(keepdims)}


def _cumsum(op, avals, axis):
    _arity(op, avals, 1)
    (shape, dt), = avals
    return [(shape, dt)], {"axis": _axis(op, axis, len(shape))}


# ---- shape ops ---------------------------------------------------------------------------
def _reshape(op, avals, shape):
    _arity(op, avals, 1)
    (ishape, dt), = avals
    shape = tuple(int(d) for d in shape)
    if shape.count(-1) == 1:
        known = prod(d for d in shape if d != -1)
        shape = tuple(prod(ishape) // max(known, 1) if d == -1 else d for d in shape)
    if prod(shape) != prod(ishape) or any(d < 0 for d in shape):
        _fail(op, f"cannot reshape {ishape} to {shape}")
    return [(shape, dt)], {"shape": shape}


def _transpose(op, avals, perm):
    _arity(op, avals, 1)
    (shape, dt), = avals
    perm = tuple(_axis(op, p, len(shape)) for p in perm)
    if sorted(perm) != list(range(len(shape))):
        _fail(op, f"perm {perm} is not a permutation of rank {len(shape)}")
    return [(tuple(shape[p] for p in perm), dt)], {"perm": perm}


def _broadcast_to(op, avals, shape):
    _arity(op, avals, 1)
    (ishape, dt), = avals
    shape = tuple(int(d) for d in shape)
    if bcast(op, ishape, shape) != shape:
        _fail(op, f"cannot broadcast {ishape} to {shape}")
    return [(shape, dt)], {"shape": shape}


def _concat(op, avals, axis):
    if not avals:
        _fail(op, "needs at least one input")
    dt = _same_dtype(op, avals)
    nd = len(avals[0][0])
    ax = _axis(op, axis, nd)
    for s, _ in avals:
        if len(s) != nd or any(a != b for i, (a, b) in enumerate(zip(s, avals[0][0])) if i != ax):
            _fail(op, f"shapes {[s for s, _ in avals]} differ off axis {ax}")
    out = list(avals[0][0])
    out[ax] = sum(s[ax] for s, _ in avals)
    return [(tuple(out), dt)], {"axis": ax}


def _slice(op, avals, starts, stops, steps=None):
    """Python slicing per axis: x[s0:e0:t0, s1:e1:t1, ...]; None allowed in starts/stops."""
    _arity(op, avals, 1)
    (shape, dt), = avals
    steps = (1,) * len(shape) if steps is None else tuple(steps)
    if not len(starts) == len(stops) == len(steps) == len(shape):
        _fail(op, f"starts/stops/steps need one entry per axis (rank {len(shape)})")
    if any(t == 0 for t in steps):
        _fail(op, "step 0")
    norm = [slice(*slice(a, b, t).indices(d)) for a, b, t, d in zip(starts, stops, steps, shape)]
    out = tuple(len(range(s.start, s.stop, s.step)) for s in norm)
    norm = [s if n else slice(0, 0, 1) for s, n in zip(norm, out)]  # canonical empty slice
    # stop may be -1 after normalizing a negative step that runs to the front: keep None there
    stops_n = tuple(None if s.stop < 0 else s.stop for s in norm)
    return [(out, dt)], {"starts": tuple(s.start for s in norm), "stops": stops_n,
                         "steps": tuple(s.step for s in norm)}


def _split(op, avals, axis, sizes):
    _arity(op, avals, 1)
    (shape, dt), = avals
    ax = _axis(op, axis, len(shape))
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != shape[ax] or any(s < 0 for s in sizes):
        _fail(op, f"sizes {sizes} do not add up to dim {shape[ax]}")
    return [(shape[:ax] + (s,) + shape[ax + 1:], dt) for s in sizes], {"axis": ax, "sizes": sizes}


def _pad(op, avals, pads, value=0.0):
    _arity(op, avals, 1)
    (shape, dt), = avals
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if len(pads) != len(shape) or any(lo < 0 or hi < 0 for lo, hi in pads):
        _fail(op, f"pads {pads} need one non-negative (lo, hi) pair per axis")
    return [(tuple(d + lo + hi for d, (lo, hi) in zip(shape, pads)), dt)], {"pads": pads, "value": value}


def _gather(op, avals, axis=0):
    _arity(op, avals, 2)
    (shape, dt), (ishape, idt) = avals
    if idt not in INTS:
        _fail(op, f"indices must be an integer dtype, got {idt}")
    ax = _axis(op, axis, len(shape))
    return [(shape[:ax] + ishape + shape[ax + 1:], dt)], {"axis": ax}


# ---- constants ---------------------------------------------------------------------------
def _full(op, avals, shape, value, dtype):
    _arity(op, avals, 0)
    if dtype not in DTYPES:
        _fail(op, f"unknown dtype {dtype!r}")
    shape = tuple(int(d) for d in shape)
    return [(shape, dtype)], {"shape": shape, "value": value, "dtype": dtype}


def _iota(op, avals, shape, dtype, axis=0, start=0, step=1):
    _arity(op, avals, 0)
    shape = tuple(int(d) for d in shape)
    if dtype not in DTYPES:
        _fail(op, f"unknown dtype {dtype!r}")
    return [(shape, dtype)], {"shape": shape, "dtype": dtype, "axis": _axis(op, axis, len(shape)),
                              "start": start, "step": step}


# ---- linear algebra and NN ---------------------------------------------------------------
def _acc_defaults(op, dts, acc_dtype, dtype):
    kinds = {"f" if d in FLOATS else "i" if d in INTS else "?" for d in dts}
    if len(kinds) != 1 or "?" in kinds:
        _fail(op, f"operands must be all float or all integer, got {list(dts)}")
    isf = kinds == {"f"}
    acc = acc_dtype or ("f64" if "f64" in dts else "f32" if isf else "i32")
    if (acc in FLOATS) != isf or acc not in ("f64", "f32", "i32", "i64"):
        _fail(op, f"acc_dtype {acc} does not suit operands {list(dts)}")
    out = dtype or (dts[0] if isf else acc)
    if out not in DTYPES:
        _fail(op, f"unknown dtype {out!r}")
    return acc, out


def _matmul(op, avals, acc_dtype=None, dtype=None):
    """numpy.matmul shapes: [..., M, K] @ [..., K, N] with broadcast batch dims; 1-D operands
    get a unit dim that is dropped again."""
    _arity(op, avals, 2)
    (a, da), (b, db) = avals
    if not a or not b:
        _fail(op, "operands must have rank >= 1")
    a2, b2 = (a if len(a) > 1 else (1,) + a), (b if len(b) > 1 else b + (1,))
    if a2[-1] != b2[-2]:
        _fail(op, f"contracting dims differ: {a} @ {b}")
    out = bcast(op, a2[:-2], b2[:-2]) + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())
    acc, dt = _acc_defaults(op, (da, db), acc_dtype, dtype)
    return [(out, dt)], {"acc_dtype": acc, "dtype": dt}


def _linear(op, avals, acc_dtype=None, dtype=None):
    """x[..., K], w[N, K], optional bias[N] -> [..., N]."""
    _arity(op, avals, 2, 3)
    (x, dx), (w, dw) = avals[:2]
    if len(w) != 2 or not x or x[-1] != w[1]:
        _fail(op, f"need x[..., K] and w[N, K], got {x} and {w}")
    acc, dt = _acc_defaults(op, (dx, dw), acc_dtype, dtype)
    if len(avals) == 3 and avals[2][0] != (w[0],):
        _fail(op, f"bias must be [{w[0]}], got {avals[2][0]}")
    return [(x[:-1] + (w[0],), dt)], {"acc_dtype": acc, "dtype": dt}


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(i) for i in v)


def _pads2(padding):
    """int | (ph, pw) | ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    if np.isscalar(padding):
        return ((int(padding),) * 2,) * 2
    return tuple((int(p), int(p)) if np.isscalar(p) else (int(p[0]), int(p[1])) for p in padding)


def _window_out(n, k, s, pads, d, ceil_mode=False):
    span = n + pads[0] + pads[1] - d * (k - 1) - 1
    o = (ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + pads[0]:  # last window must start inside the input or left pad
        o -= 1
    return o


def _conv2d(op, avals, stride=1, padding=0, dilation=1, groups=1, acc_dtype=None, dtype=None):
    """x[N, C, H, W], w[O, C/groups, kh, kw], optional bias[O] -> [N, O, Ho, Wo]."""
    _arity(op, avals, 2, 3)
    (x, dx), (w, dw) = avals[:2]
    st, dil, pads = _pair(stride), _pair(dilation), _pads2(padding)
    if len(x) != 4 or len(w) != 4 or x[1] != w[1] * groups or w[0] % groups:
        _fail(op, f"need x[N,C,H,W], w[O,C/groups,kh,kw] with groups={groups}; got {x}, {w}")
    if len(avals) == 3 and avals[2][0] != (w[0],):
        _fail(op, f"bias must be [{w[0]}], got {avals[2][0]}")
    ho, wo = (_window_out(x[2 + i], w[2 + i], st[i], pads[i], dil[i]) for i in range(2))
    if ho <= 0 or wo <= 0:
        _fail(op, f"window {w[2:]} does not fit input {x[2:]}")
    acc, dt = _acc_defaults(op, (dx, dw), acc_dtype, dtype)
    return [((x[0], w[0], ho, wo), dt)], {"stride": st, "padding": pads, "dilation": dil,
                                          "groups": int(groups), "acc_dtype": acc, "dtype": dt}


def _pool_common(op, avals, kernel, stride, padding, ceil_mode, dilation=1):
    _arity(op, avals, 1)
    (x, dt), = avals
    if len(x) != 4:
        _fail(op, f"needs x[N,C,H,W], got {x}")
    k = _pair(kernel)
    st = k if stride is None or stride == () else _pair(stride)
    pads, dil = _pads2(padding), _pair(dilation)
    if any(p > kk // 2 for pp, kk in zip(pads, k) for p in pp):
        _fail(op, f"padding {pads} must be at most half the kernel {k}")
    ho, wo = (_window_out(x[2 + i], k[i], st[i], pads[i], dil[i], ceil_mode) for i in range(2))
    if ho <= 0 or wo <= 0:
        _fail(op, f"window {k} does not fit input {x[2:]}")
    return ((x[0], x[1], ho, wo), dt), {"kernel": k, "stride": st, "padding": pads, "ceil_mode": bool(ceil_mode)}, dil


def _max_pool2d(op, avals, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    out, p, dil = _pool_common(op, avals, kernel, stride, padding, ceil_mode, dilation)
    return [out], {**p, "dilation": dil}


def _avg_pool2d(op, avals, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    out, p, _ = _pool_common(op, avals, kernel, stride, padding, ceil_mode)
    _need_float(op, out[1])
    return [out], {**p, "count_include_pad": bool(count_include_pad)}


def _softmax(op, avals, axis=-1):
    _arity(op, avals, 1)
    _need_float(op, avals[0][1])
    return [avals[0]], {"axis": _axis(op, axis, len(avals[0][0]))}


def _norm(op, avals, axes=(-1,), eps=1e-5):
    nmax = 3 if op == "layer_norm" else 2
    _arity(op, avals, 1, nmax)
    (x, dt) = avals[0]
    _need_float(op, dt)
    axes = tuple(sorted(_axis(op, a, len(x)) for a in np.atleast_1d(axes).tolist()))
    if axes != tuple(range(len(x) - len(axes), len(x))):
        _fail(op, f"axes {axes} must be the trailing axes")
    for s, d in avals[1:]:
        if s != x[axes[0]:] or d != dt:
            _fail(op, f"weight/bias must be {dt}{list(x[axes[0]:])}, got {d}{list(s)}")
    return [(x, dt)], {"axes": axes, "eps": float(eps)}


def _attention(op, avals, causal=False, scale=None):
    """q[..., Hq, Lq, D], k[..., Hkv, Lk, D], v[..., Hkv, Lk, Dv], optional mask broadcastable
    to [..., Hq, Lq, Lk] (bool: True = attend; float: added to the scores)."""
    _arity(op, avals, 3, 4)
    (q, dq), (k, dk), (v, dv) = avals[:3]
    if len({dq, dk, dv}) != 1:
        _fail(op, f"q, k, v must share a dtype, got {dq}, {dk}, {dv}")
    _need_float(op, dq)
    if len(q) < 3 or len(k) != len(q) or len(v) != len(q) or q[-1] != k[-1] or k[-2] != v[-2] \
            or k[-3] != v[-3] or q[-3] % k[-3] or q[:-3] != k[:-3] or q[:-3] != v[:-3]:
        _fail(op, f"need q[...,Hq,Lq,D], k[...,Hkv,Lk,D], v[...,Hkv,Lk,Dv] with Hq % Hkv == 0; got {q}, {k}, {v}")
    out = q[:-1] + (v[-1],)
    if len(avals) == 4:
        ms, md = avals[3]
        if bcast(op, ms, q[:-1] + (k[-2],)) != q[:-1] + (k[-2],) or md not in ("bool", dq):
            _fail(op, f"mask {md}{list(ms)} must be bool or {dq} and broadcast to {q[:-1] + (k[-2],)}")
    scale = 1.0 / float(np.sqrt(q[-1])) if scale is None else float(scale)
    return [(out, dq)], {"causal": bool(causal), "scale": scale}


def _quant_shapes(op, avals):
    (x, _), (s, sd) = avals[:2]
    if s and (len(s) != len(x) or any(d % e for d, e in zip(x, s))):
        _fail(op, f"scale shape {s} must be () or same rank as {x} with dims dividing it")
    if len(avals) == 3 and avals[2][0] != s:
        _fail(op, f"zero_point shape {avals[2][0]} must equal scale shape {s}")
    _need_float(op, sd)


def _tensor_scale(op, v):
    """The per-tensor f32 scale (NVFP4's second level; 1.0 for every other format)."""
    ts = float(np.float32(v))
    if not (np.isfinite(ts) and ts > 0):
        _fail(op, f"tensor_scale must be a positive finite f32, got {v!r}")
    return ts


def _quantize(op, avals, dtype, tensor_scale=1.0):
    """x (float), scale (float, blocked), optional zero_point (dtype) -> dtype."""
    _arity(op, avals, 2, 3)
    _need_float(op, avals[0][1])
    _quant_shapes(op, avals)
    if dtype not in DTYPES or dtype == "bool":
        _fail(op, f"bad quantized dtype {dtype!r}")
    if len(avals) == 3 and avals[2][1] != dtype:
        _fail(op, f"zero_point dtype {avals[2][1]} must be {dtype}")
    return [(avals[0][0], dtype)], {"dtype": dtype, "tensor_scale": _tensor_scale(op, tensor_scale)}


def _dequantize(op, avals, dtype="f32", tensor_scale=1.0):
    _arity(op, avals, 2, 3)
    _quant_shapes(op, avals)
    if len(avals) == 3 and avals[2][1] != avals[0][1]:
        _fail(op, f"zero_point dtype {avals[2][1]} must equal input dtype {avals[0][1]}")
    _need_float(op, dtype)
    return [(avals[0][0], dtype)], {"dtype": dtype, "tensor_scale": _tensor_scale(op, tensor_scale)}


def _with(rule, *a, **kw):
    return lambda op, avals, **p: rule(op, avals, *a, **{**kw, **p})


RULES = {
    **{op: _with(_unary, True) for op in UNARY_FLOAT},
    **{op: _with(_unary, False) for op in UNARY_ANY},
    "gelu": _gelu, "clamp": _clamp, "logical_not": _logical_not,
    **{op: _binary for op in BINARY + LOGICAL},
    **{op: _with(_binary, "bool") for op in COMPARE},
    "where": _where, "cast": _cast,
    **{op: _reduce for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min")},
    "argmax": _argreduce, "argmin": _argreduce, "cumsum": _cumsum,
    "reshape": _reshape, "transpose": _transpose, "broadcast_to": _broadcast_to, "concat": _concat,
    "slice": _slice, "split": _split, "pad": _pad, "gather": _gather,
    "full": _full, "iota": _iota,
    "matmul": _matmul, "linear": _linear, "conv2d": _conv2d,
    "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
    "softmax": _softmax, "log_softmax": _softmax, "layer_norm": _norm, "rms_norm": _norm,
    "attention": _attention, "quantize": _quantize, "dequantize": _dequantize,
}
OPS = frozenset(RULES)


def infer(op: str, avals: list[Aval], params: dict) -> tuple[list[Aval], dict]:
    """Output avals and normalized params of `op` applied to `avals`; IRError if ill-formed."""
    rule = RULES.get(op)
    if rule is None:
        raise UnsupportedOpError(f"IR has no op {op!r}")
    try:
        return rule(op, avals, **params)
    except TypeError as e:  # missing/unknown param
        raise IRError(f"{op}: bad params {sorted(params)}: {e}") from None
