"""The numpy reference interpreter: the definition of what every IR op means.

`evaluate(program, *inputs)` is a read/apply/write loop over `IMPLS`, a table from op name to
a numpy function. Rules that hold for every op (see docs/ir.md for each op):

- Float math on f16/bf16/f8 is carried out in f32 (f64 stays f64) and the result is rounded
  once to the output dtype, round-to-nearest-even (ml_dtypes casting, = PyTorch's CPU kernels).
  Composite ops (softmax, layer_norm, gelu, attention, ...) round only their final result.
- matmul/linear/conv2d accumulate in their `acc_dtype` param (f32 or i32/i64; integer
  accumulation wraps two's complement) and round once to `dtype` (bias added before rounding).
- Integer add/sub/mul/cumsum/reduce_sum wrap; integer div truncates toward zero.
- cast float->int truncates toward zero and saturates (NaN -> 0); int->int wraps;
  float->float rounds to nearest even; f8e4m3 (no inf) saturates out-of-range values and
  +-inf to +-448 as PyTorch does; f8e5m2 overflows to inf.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import TapeoutError
from .core import Literal, Program, Var
from .dtypes import DTYPES, FLOATS, INTS, compute_dtype, dtype_name, float_max, int_range


def _name(x) -> str:
    return dtype_name(x.dtype)


def _up(x: np.ndarray) -> np.ndarray:
    """x in its compute dtype: floats -> f32 (f64 stays), ints -> i64, bool stays."""
    n = _name(x)
    if n in FLOATS:
        return x.astype(compute_dtype(n), copy=False)
    return x.astype(np.int64, copy=False) if n in INTS else x


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    src, dt = _name(x), DTYPES[dtype]
    if src == dtype:
        return x
    if dtype == "bool":
        return x != 0
    if dtype in INTS and src in FLOATS:
        lo, hi = int_range(dtype)
        y = np.nan_to_num(np.trunc(x.astype(np.float64)), nan=0.0)
        return np.clip(y, lo, hi).astype(np.int64).astype(dt)
    if dtype in INTS:
        return x.astype(np.int64).astype(dt)  # wraps
    if src in ("i4", "u4", "bool"):
        x = x.astype(np.int64)
    if dtype == "f8e4m3":  # no inf in e4m3fn: saturate (PyTorch's rule; ml_dtypes would give NaN)
        m = float_max(dtype)
        x = np.clip(x.astype(compute_dtype(src) if src in FLOATS else np.float64), -m, m)
    return x.astype(dt)


# ---- erf (numpy has none): f64, |error| < 1e-15 -------------------------------------------
def erf(x: np.ndarray) -> np.ndarray:
    """erf in f64: the all-positive series erf(x) = 2/sqrt(pi) e^-x^2 sum 2^n x^(2n+1)/(2n+1)!!
    for |x| < 5, and the asymptotic erfc expansion beyond (where erfc < 2e-12)."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    out = np.ones_like(a)
    small = a < 5.0
    xs = a[small]
    term = xs.copy()
    total = xs.copy()
    x2 = xs * xs
    for n in range(1, 200):
        term = term * (2.0 * x2 / (2 * n + 1))
        total += term
        if not np.any(term > 1e-17 * total):
            break
    out[small] = (2.0 / math.sqrt(math.pi)) * np.exp(-x2) * total
    big = ~small & np.isfinite(a)
    xb = a[big]
    inv = 1.0 / (2.0 * xb * xb)
    series, t = np.ones_like(xb), np.ones_like(xb)
    for n in range(1, 12):
        t = -t * (2 * n - 1) * inv
        series += t
    out[big] = 1.0 - np.exp(-xb * xb) / (xb * math.sqrt(math.pi)) * series
    out[np.isnan(a)] = np.nan
    return np.copysign(out, x)


# ---- elementwise -------------------------------------------------------------------------
def _float_unary(f):
    def impl(x, **p):
        return f(_up(x), **p).astype(x.dtype, copy=False)
    return impl


def _gelu(x, approximate):
    if approximate == "tanh":
        c = np.asarray(math.sqrt(2.0 / math.pi), x.dtype)
        return 0.5 * x * (1 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x * x * x)))
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


UNARY = {
    "neg": np.negative, "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x), "reciprocal": lambda x: 1 / x, "sin": np.sin, "cos": np.cos,
    "tanh": np.tanh, "sigmoid": _sigmoid, "silu": lambda x: x * _sigmoid(x),
    "erf": lambda x: erf(x).astype(x.dtype), "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "sign": np.sign, "relu": lambda x: np.maximum(x, np.zeros((), x.dtype)), "gelu": _gelu,
    "clamp": lambda x, min, max: np.clip(x, min, max).astype(x.dtype),
}


def _int_div(a, b):
    q = np.floor_divide(a, np.where(b == 0, 1, b))
    fix = (q * b != a) & ((a < 0) != (b < 0)) & (b != 0)
    return np.where(b == 0, 0, q + fix)


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def _binary(op):
    f = BINARY.get(op)

    def impl(a, b):
        dt = a.dtype
        ua, ub = _up(a), _up(b)
        if op == "div":
            r = ua / ub if _name(a) in FLOATS else _int_div(ua, ub)
        else:
            r = f(ua, ub)
        return r if r.dtype == np.bool_ else r.astype(dt)
    return impl


def _where(c, a, b):
    return np.where(c, a, b)


# ---- reductions --------------------------------------------------------------------------
def _reduce(f):
    def impl(x, axes, keepdims):
        return np.asarray(f(_up(x), axis=axes, keepdims=keepdims)).astype(x.dtype)
    return impl


def _argreduce(f):
    def impl(x, axis, keepdims):
        return np.asarray(f(_up(x), axis=axis, keepdims=keepdims)).astype(np.int64)
    return impl


# ---- shapes ------------------------------------------------------------------------------
def _slice(x, starts, stops, steps):
    return x[tuple(slice(a, b, t) for a, b, t in zip(starts, stops, steps))]


def _split(x, axis, sizes):
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _pad(x, pads, value):
    return np.pad(x, pads, constant_values=cast(np.asarray(value), _name(x)))


def _gather(x, idx, axis):
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"gather: index out of range [{-n}, {n})")
    return np.take(x, idx.astype(np.int64), axis=axis)


def _full(shape, value, dtype):
    return np.broadcast_to(cast(np.asarray(value), dtype), shape).copy()


def _iota(shape, dtype, axis, start, step):
    n = shape[axis]
    v = (np.arange(n, dtype=np.float64) * step + start) if dtype in FLOATS else \
        (np.arange(n, dtype=np.int64) * int(step) + int(start))
    v = cast(v, dtype).reshape([n if i == axis else 1 for i in range(len(shape))])
    return np.broadcast_to(v, shape).copy()


# ---- linear algebra ----------------------------------------------------------------------
def _acc(x: np.ndarray, acc: str) -> np.ndarray:
    """Operand in the dtype the products are formed in. Integers of <= 16 bits go through f64,
    whose BLAS sums them exactly (|sum| < 2^53); wider integers use exact int64 (slow)."""
    n = _name(x)
    if n in FLOATS:
        return x.astype(DTYPES[acc], copy=False)
    return x.astype(np.float64 if int(DTYPES[n].itemsize) <= 2 else np.int64)


def _finish(y: np.ndarray, acc: str, dtype: str, bias=None) -> np.ndarray:
    if acc in INTS:
        y = y if y.dtype == np.int64 else np.rint(y).astype(np.int64)
        y = y.astype(DTYPES[acc])  # wrap to the accumulator width
        if bias is not None:
            y = (y.astype(np.int64) + bias.astype(np.int64)).astype(DTYPES[acc])
        return cast(y, dtype)
    y = y.astype(DTYPES[acc], copy=False)
    if bias is not None:
        y = y + bias.astype(DTYPES[acc])
    return cast(y, dtype)


def _matmul(a, b, acc_dtype, dtype):
    return _finish(np.matmul(_acc(a, acc_dtype), _acc(b, acc_dtype)), acc_dtype, dtype)


def _linear(x, w, b=None, *, acc_dtype, dtype):
    return _finish(np.matmul(_acc(x, acc_dtype), _acc(w, acc_dtype).T), acc_dtype, dtype, b)


def _windows(x, kernel, stride, dilation):
    """[N, C, H, W] -> view [N, C, Ho, Wo, kh, kw] of the (already padded) input."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return as_strided(x, (n, c, ho, wo, kh, kw),
                      (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def _conv2d(x, w, b=None, *, stride, padding, dilation, groups, acc_dtype, dtype):
    xa = np.pad(_acc(x, acc_dtype), ((0, 0), (0, 0), *padding))
    win = _windows(xa, w.shape[2:], stride, dilation)  # [N, C, Ho, Wo, kh, kw]
    n, c, ho, wo, kh, kw = win.shape
    o, g = w.shape[0], groups
    cols = win.reshape(n, g, c // g, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    cols = cols.reshape(g, n * ho * wo, (c // g) * kh * kw)
    wm = _acc(w, acc_dtype).reshape(g, o // g, -1).transpose(0, 2, 1)  # [g, C/g*kh*kw, O/g]
    y = np.matmul(cols, wm).reshape(g, n, ho, wo, o // g).transpose(1, 0, 4, 2, 3).reshape(n, o, ho, wo)
    return _finish(y, acc_dtype, dtype, None if b is None else b.reshape(1, -1, 1, 1))


def pool_pads(hw, kernel, stride, padding, dilation, ceil_mode):
    """Per-axis (lo, hi) padding of an [H, W] input, widened on the high side so ceil_mode's last
    window exists."""
    out = []
    for i in range(2):
        n, k, s, (lo, hi), d = hw[i], kernel[i], stride[i], padding[i], dilation[i]
        span = n + lo + hi - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + lo:
            o -= 1
        out.append((lo, max(hi, (o - 1) * s + d * (k - 1) + 1 - n - lo)))
    return out


def avg_pool_divisor(hw, kernel, stride, padding, ceil_mode, count_include_pad) -> np.ndarray:
    """[Ho, Wo] divisor of avg_pool2d (PyTorch's rules): the window cells inside the input, plus
    the declared padding if count_include_pad (never ceil_mode's extra padding)."""
    pads = pool_pads(hw, kernel, stride, padding, (1, 1), ceil_mode)
    ones = np.ones((1, 1) + tuple(hw), np.float64)
    if count_include_pad:
        ones = np.pad(ones, ((0, 0), (0, 0), *padding), constant_values=1)
        extra = [(lo - p[0], hi - p[1]) for (lo, hi), p in zip(pads, padding)]
    else:
        extra = pads
    return _windows(np.pad(ones, ((0, 0), (0, 0), *extra)), kernel, stride, (1, 1)).sum(axis=(4, 5))[0, 0]


def _max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    pads = pool_pads(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    u = _up(x)
    low = -np.inf if _name(x) in FLOATS else np.iinfo(u.dtype).min
    win = _windows(np.pad(u, ((0, 0), (0, 0), *pads), constant_values=low), kernel, stride, dilation)
    return win.max(axis=(4, 5)).astype(x.dtype)


def _avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    pads = pool_pads(x.shape[2:], kernel, stride, padding, (1, 1), ceil_mode)
    u = _up(x)
    sums = _windows(np.pad(u, ((0, 0), (0, 0), *pads)), kernel, stride, (1, 1)).sum(axis=(4, 5))
    count = avg_pool_divisor(x.shape[2:], kernel, stride, padding, ceil_mode, count_include_pad)
    return (sums / count.astype(u.dtype)).astype(x.dtype)


# ---- normalization, softmax, attention ---------------------------------------------------
def _softmax_f(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_f(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    s = x - np.where(np.isfinite(m), m, 0)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _layer_norm(x, w=None, b=None, *, axes, eps):
    u = _up(x)
    mean = u.mean(axis=axes, keepdims=True)
    d = u - mean
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + np.asarray(eps, u.dtype))
    y = y * _up(w) if w is not None else y
    return (y + _up(b) if b is not None else y).astype(x.dtype)


def _rms_norm(x, w=None, *, axes, eps):
    u = _up(x)
    y = u / np.sqrt((u * u).mean(axis=axes, keepdims=True) + np.asarray(eps, u.dtype))
    return (y * _up(w) if w is not None else y).astype(x.dtype)


def _attention(q, k, v, mask=None, *, causal, scale):
    """softmax(q k^T * scale + mask) v per head; kv head j serves q heads j*r .. j*r+r-1."""
    r = q.shape[-3] // k.shape[-3]
    qf, kf, vf = _up(q), np.repeat(_up(k), r, axis=-3), np.repeat(_up(v), r, axis=-3)
    s = np.matmul(qf, np.swapaxes(kf, -1, -2)) * np.asarray(scale, qf.dtype)
    if causal:  # top-left aligned, as torch's is_causal: query i sees keys 0..i
        lq, lk = s.shape[-2:]
        s = np.where(np.tril(np.ones((lq, lk), bool)), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + _up(mask)
    p = _softmax_f(s, -1)
    p = np.nan_to_num(p, nan=0.0)  # rows with every key masked attend to nothing -> output 0
    return np.matmul(p, vf).astype(q.dtype)


# ---- quantization ------------------------------------------------------------------------
def _blocked(x: np.ndarray, s: np.ndarray, f):
    """f(x, s) where s is broadcast blockwise: x[i] pairs with s[i // (x.shape // s.shape)]."""
    if s.ndim == 0:
        return f(x, s)
    inter = [d for pair in zip(s.shape, (a // b for a, b in zip(x.shape, s.shape))) for d in pair]
    sb = s.reshape([d for n in s.shape for d in (n, 1)])
    return f(x.reshape(inter), sb).reshape(x.shape)


def _quantize(x, scale, zero_point=None, *, dtype, tensor_scale):
    """ints: clip(RNE(x / s) + zp); floats: RNE(clip(x / s, +-max)), s = f32(scale) * tensor_scale
    (the product rounded to f32; tensor_scale is 1 except for NVFP4)."""
    s = scale.astype(np.float32) * np.float32(tensor_scale) if tensor_scale != 1.0 else scale.astype(np.float32)
    y = _blocked(x.astype(np.float32), s, np.divide)
    if zero_point is not None:
        y = y + _blocked(np.zeros_like(y), zero_point.astype(np.float32), np.add)
    if dtype in FLOATS:
        m = float_max(dtype)
        return np.clip(y, -m, m).astype(DTYPES[dtype])
    lo, hi = int_range(dtype)
    return np.clip(np.nan_to_num(np.round(y), nan=0.0), lo, hi).astype(np.int64).astype(DTYPES[dtype])


def _dequantize(q, scale, zero_point=None, *, dtype, tensor_scale):
    """round_dt(((f32(q) - f32(zp)) * f32(scale)) * f32(tensor_scale)), left to right in f32."""
    y = q.astype(np.float32)
    if zero_point is not None:
        y = _blocked(y, zero_point.astype(np.float32), np.subtract)
    y = _blocked(y, scale.astype(np.float32), np.multiply)
    return (y * np.float32(tensor_scale) if tensor_scale != 1.0 else y).astype(DTYPES[dtype])


# ---- the table ---------------------------------------------------------------------------
IMPLS = {
    **{op: (f if op in ("neg", "abs", "sign", "relu", "clamp") else _float_unary(f)) for op, f in UNARY.items()},
    **{op: _binary(op) for op in (*BINARY, "div")},
    "logical_not": np.logical_not, "where": _where, "cast": cast,
    "reduce_sum": _reduce(np.sum), "reduce_mean": _reduce(np.mean),
    "reduce_max": _reduce(np.max), "reduce_min": _reduce(np.min),
    "argmax": _argreduce(np.argmax), "argmin": _argreduce(np.argmin),
    "cumsum": lambda x, axis: np.cumsum(_up(x), axis=axis).astype(x.dtype),
    "reshape": lambda x, shape: x.reshape(shape), "transpose": lambda x, perm: x.transpose(perm),
    "broadcast_to": lambda x, shape: np.broadcast_to(x, shape),
    "concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
    "slice": _slice, "split": _split, "pad": _pad, "gather": _gather,
    "full": _full, "iota": _iota,
    "matmul": _matmul, "linear": _linear, "conv2d": _conv2d,
    "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
    "softmax": _float_unary(_softmax_f), "log_softmax": _float_unary(_log_softmax_f),
    "layer_norm": _layer_norm, "rms_norm": _rms_norm, "attention": _attention,
    "quantize": _quantize, "dequantize": _dequantize,
}


def _fix_unary_exact():
    """neg/abs/sign/relu/clamp are exact in any dtype, but numpy's bf16/f8 loops are slow or
    missing: compute them through the compute dtype too."""
    for op in ("neg", "abs", "sign", "relu", "clamp"):
        f = UNARY[op]
        IMPLS[op] = (lambda f: lambda x, **p: f(_up(x), **p).astype(x.dtype, copy=False))(f)


_fix_unary_exact()


def _read(env, a):
    return a.array() if isinstance(a, Literal) else env[a.name]


def _last_uses(prog: Program) -> dict[int, list[str]]:
    """eqn index -> names whose last use it is (freed afterwards to bound memory)."""
    last: dict[str, int] = {}
    for i, e in enumerate(prog.eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                last[a.name] = i
    keep = {o.name for o in prog.outputs if isinstance(o, Var)}
    out: dict[int, list[str]] = {}
    for n, i in last.items():
        if n not in keep:
            out.setdefault(i, []).append(n)
    return out


def _bind_inputs(prog: Program, args) -> dict[str, np.ndarray]:
    if len(args) != len(prog.inputs):
        raise TapeoutError(f"{prog.name}: expects {len(prog.inputs)} inputs, got {len(args)}")
    env = dict(prog.consts)
    for v, a in zip(prog.inputs, args):
        a = np.asarray(a)
        if tuple(a.shape) != v.shape:
            raise TapeoutError(f"{prog.name}: input {v.name} needs shape {v.shape}, got {tuple(a.shape)}")
        env[v.name] = a if a.dtype == DTYPES[v.dtype] else a.astype(DTYPES[v.dtype])
    return env


def evaluate(prog: Program, *args) -> list[np.ndarray]:
    """Run `prog` on numpy inputs (cast to the declared dtypes); returns its outputs."""
    env = _bind_inputs(prog, args)
    frees = _last_uses(prog)
    with np.errstate(all="ignore"):
        for i, e in enumerate(prog.eqns):
            outs = IMPLS[e.op](*(_read(env, a) for a in e.inputs), **e.params)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for v, o in zip(e.outputs, outs):
                if o.shape != v.shape or o.dtype != DTYPES[v.dtype]:
                    raise AssertionError(f"eqn {i} `{e}` produced {o.dtype}{list(o.shape)}")
                env[v.name] = o
            for n in frees.get(i, ()):
                env.pop(n, None)
    return [np.asarray(_read(env, o)) for o in prog.outputs]
