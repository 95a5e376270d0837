"""The ONNX -> IR table. `ONNX[op_type](cx, inputs, attrs)` emits IR (inputs are Vars or known
numpy arrays, None for an omitted optional input); `NUMPY_ONLY[op_type](inputs, attrs)`
computes ops that only make sense on known values (Shape, Range, ConstantOfShape, ...)."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.core import Var
from ..ir.dtypes import DTYPES
from .onnx_import import ONNX_DTYPES

_UNARY = {"Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
          "Sin": "sin", "Cos": "cos", "Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Erf": "erf",
          "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Not": "logical_not"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq", "Less": "lt",
           "LessOrEqual": "le", "Greater": "gt", "GreaterOrEqual": "ge", "And": "logical_and",
           "Or": "logical_or", "Xor": "logical_xor"}


def _shape(v):
    return tuple(v.shape)


def _rank(v):
    return len(v.shape)


def _unary(op):
    return lambda cx, ins, at: cx.b.op(op, cx.atom(ins[0]))


def _binary(op):
    def fn(cx, ins, at):
        a, b = ins
        dt = a.dtype if isinstance(a, Var) else b.dtype if isinstance(b, Var) else None
        return cx.b.op(op, cx.atom(a, dt if isinstance(a, Var) else None), cx.atom(b, dt))
    return fn


def _variadic(op):
    def fn(cx, ins, at):
        out = cx.atom(ins[0])
        for x in ins[1:]:
            out = cx.b.op(op, out, cx.atom(x, out.dtype))
        return out
    return fn


def _pow(cx, ins, at):
    x = cx.atom(ins[0])
    e = ins[1]
    if isinstance(e, np.ndarray) and e.ndim == 0 and float(e) == 2.0:
        return cx.b.mul(x, x)
    return cx.b.pow(x, cx.atom(e.astype(DTYPES[x.dtype]) if isinstance(e, np.ndarray) else e, x.dtype))


def _clip(cx, ins, at):
    x = cx.atom(ins[0])
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if all(v is None or isinstance(v, np.ndarray) for v in (lo, hi)):
        return cx.b.clamp(x, min=None if lo is None else float(lo), max=None if hi is None else float(hi))
    x = x if lo is None else cx.b.maximum(x, cx.atom(lo, x.dtype))
    return x if hi is None else cx.b.minimum(x, cx.atom(hi, x.dtype))


def _cast(cx, ins, at):
    return cx.b.cast(cx.atom(ins[0]), dtype=ONNX_DTYPES[at["to"]])


def _where(cx, ins, at):
    c, a, b = ins
    dt = a.dtype if isinstance(a, Var) else b.dtype if isinstance(b, Var) else None
    dt = dt or np.result_type(a, b).name
    dt = dt if dt in DTYPES else next(k for k, v in DTYPES.items() if v == np.dtype(dt))
    return cx.b.where(cx.atom(c), cx.atom(a, dt), cx.atom(b, dt))


def _gelu(cx, ins, at):
    return cx.b.gelu(cx.atom(ins[0]), approximate=at.get("approximate", "none"))


def _leaky(cx, ins, at):
    x = cx.atom(ins[0])
    return cx.b.where(cx.b.gt(x, cx.atom(np.array(0, DTYPES[x.dtype]))), x,
                      cx.b.mul(x, cx.atom(np.array(at.get("alpha", 0.01), DTYPES[x.dtype]))))


def _hardsigmoid(cx, x, alpha=0.2, beta=0.5):
    lit = lambda v: cx.atom(np.array(v, DTYPES[x.dtype]))  # noqa: E731
    return cx.b.clamp(cx.b.add(cx.b.mul(x, lit(alpha)), lit(beta)), min=0.0, max=1.0)


ELEMENTWISE = {
    **{k: _unary(v) for k, v in _UNARY.items()},
    **{k: _binary(v) for k, v in _BINARY.items()},
    "Max": _variadic("maximum"), "Min": _variadic("minimum"), "Sum": _variadic("add"),
    "Pow": _pow, "Clip": _clip, "Cast": _cast, "CastLike": lambda cx, ins, at: cx.atom(ins[0], cx.atom(ins[1]).dtype),
    "Where": _where, "Gelu": _gelu, "LeakyRelu": _leaky,
    "HardSigmoid": lambda cx, ins, at: _hardsigmoid(cx, cx.atom(ins[0]), at.get("alpha", 0.2), at.get("beta", 0.5)),
    "HardSwish": lambda cx, ins, at: cx.b.mul(cx.atom(ins[0]), _hardsigmoid(cx, cx.atom(ins[0]), 1 / 6, 0.5)),
    "Identity": lambda cx, ins, at: ins[0], "Dropout": lambda cx, ins, at: ins[0],
    "IsNaN": lambda cx, ins, at: cx.b.ne(cx.atom(ins[0]), cx.atom(ins[0])),
    "IsInf": lambda cx, ins, at: _isinf(cx, cx.atom(ins[0]), at),
}


def _isinf(cx, x, at):
    pos = cx.b.eq(x, cx.atom(np.array(np.inf, DTYPES[x.dtype])))
    neg = cx.b.eq(x, cx.atom(np.array(-np.inf, DTYPES[x.dtype])))
    use_pos, use_neg = at.get("detect_positive", 1), at.get("detect_negative", 1)
    return cx.b.logical_or(pos, neg) if use_pos and use_neg else pos if use_pos else neg


# ---- reductions ------------------------------------------------------------------------------
def _reduce(op):
    """Reduce*: axes from the attribute (opset < 18) or the second input (>= 18)."""
    def fn(cx, ins, at):
        x = cx.atom(ins[0])
        axes = at.get("axes")
        if len(ins) > 1 and ins[1] is not None:
            axes = cx.known(ins[1], "axes").tolist()
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = None
        return cx.b.op(op, x, axes=axes, keepdims=bool(at.get("keepdims", 1)))
    return fn


def _argreduce(op):
    def fn(cx, ins, at):
        if at.get("select_last_index", 0):
            raise UnsupportedOpError(f"{cx.where}: select_last_index=1")
        return cx.b.op(op, cx.atom(ins[0]), axis=at.get("axis", 0), keepdims=bool(at.get("keepdims", 1)))
    return fn


def _softmax(op):
    return lambda cx, ins, at: cx.b.op(op, cx.atom(ins[0]), axis=at.get("axis", -1))


REDUCTIONS = {
    "ReduceSum": _reduce("reduce_sum"), "ReduceMean": _reduce("reduce_mean"),
    "ReduceMax": _reduce("reduce_max"), "ReduceMin": _reduce("reduce_min"),
    "ArgMax": _argreduce("argmax"), "ArgMin": _argreduce("argmin"),
    "CumSum": lambda cx, ins, at: _cumsum(cx, ins, at),
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
}


def _cumsum(cx, ins, at):
    if at.get("exclusive", 0) or at.get("reverse", 0):
        raise UnsupportedOpError(f"{cx.where}: exclusive/reverse CumSum")
    return cx.b.cumsum(cx.atom(ins[0]), axis=int(cx.known(ins[1], "axis")))


# ---- shapes ----------------------------------------------------------------------------------
def _reshape(cx, ins, at):
    x = cx.atom(ins[0])
    shape = [int(d) for d in cx.known(ins[1], "shape")]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return cx.b.reshape(x, shape=shape)


def _to_shape(cx, x, shape):
    x = cx.atom(x)
    return x if x.shape == tuple(shape) else cx.b.reshape(x, shape=tuple(shape))


def _unsqueeze(cx, ins, at):
    axes = at.get("axes") if len(ins) < 2 else cx.known(ins[1], "axes").tolist()
    shape = list(_shape(ins[0]))
    n = len(shape) + len(axes)
    for a in sorted(a % n for a in axes):
        shape.insert(a, 1)
    return _to_shape(cx, ins[0], shape)


def _squeeze(cx, ins, at):
    axes = at.get("axes") if len(ins) < 2 or ins[1] is None else cx.known(ins[1], "axes").tolist()
    shape = _shape(ins[0])
    axes = {a % len(shape) for a in axes} if axes is not None else {i for i, d in enumerate(shape) if d == 1}
    return _to_shape(cx, ins[0], [d for i, d in enumerate(shape) if i not in axes])


def _flatten(cx, ins, at):
    shape = _shape(ins[0])
    ax = at.get("axis", 1) % (len(shape) + 1)
    return _to_shape(cx, ins[0], (int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))))


def _transpose(cx, ins, at):
    x = cx.atom(ins[0])
    return cx.b.transpose(x, perm=at.get("perm", list(range(x.ndim))[::-1]))


def _slice(cx, ins, at):
    x = cx.atom(ins[0])
    starts, ends = cx.known(ins[1], "starts"), cx.known(ins[2], "ends")
    axes = cx.known(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
    steps = cx.known(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
    st, en, sp = [None] * x.ndim, [None] * x.ndim, [1] * x.ndim
    for a, s, e, t in zip(axes.tolist(), starts.tolist(), ends.tolist(), steps.tolist()):
        n = x.shape[a % x.ndim]
        st[a % x.ndim] = max(min(s, n), -n - 1)
        en[a % x.ndim] = None if (t < 0 and e < -n) else max(min(e, n), -n - 1)  # ONNX clamps, Python wraps
        sp[a % x.ndim] = t
    return cx.b.slice(x, starts=st, stops=en, steps=sp)


def _split(cx, ins, at):
    x = cx.atom(ins[0])
    ax = at.get("axis", 0) % x.ndim
    n = x.shape[ax]
    if len(ins) > 1 and ins[1] is not None:
        sizes = cx.known(ins[1], "split").tolist()
    elif "split" in at:
        sizes = list(at["split"])
    else:
        k = at.get("num_outputs") or cx.n_outputs
        step = -(-n // k)
        sizes = [min(step, n - i) for i in range(0, n, step)]
    return tuple(cx.b.split(x, axis=ax, sizes=sizes))


def _gather(cx, ins, at):
    x = cx.atom(ins[0])
    idx = ins[1]
    if isinstance(idx, np.ndarray) and idx.ndim == 0:  # scalar index drops the axis
        ax = at.get("axis", 0) % x.ndim
        g = cx.b.gather(x, cx.atom(idx.reshape(1)), axis=ax)
        return _to_shape(cx, g, x.shape[:ax] + x.shape[ax + 1:])
    return cx.b.gather(x, cx.atom(idx), axis=at.get("axis", 0))


def _expand(cx, ins, at):
    x = cx.atom(ins[0])
    shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in cx.known(ins[1], "shape")))
    return x if x.shape == shape else cx.b.broadcast_to(x, shape=shape)


def _concat(cx, ins, at):
    xs = [cx.atom(x) for x in ins if x is not None and 0 not in _shape(x)]
    return xs[0] if len(xs) == 1 else cx.b.concat(*xs, axis=at["axis"])


def _pad(cx, ins, at):
    x = cx.atom(ins[0])
    if at.get("mode", b"constant") not in (b"constant", "constant"):
        raise UnsupportedOpError(f"{cx.where}: Pad mode {at['mode']!r}")
    p = cx.known(ins[1], "pads").tolist()
    value = float(cx.known(ins[2], "value")) if len(ins) > 2 and ins[2] is not None else 0.0
    axes = cx.known(ins[3], "axes").tolist() if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
    pads = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        pads[a % x.ndim] = (p[i], p[i + len(axes)])
    if any(v < 0 for pr in pads for v in pr):
        raise UnsupportedOpError(f"{cx.where}: negative pads")
    return cx.b.pad(x, pads=pads, value=value)


SHAPES = {
    "Reshape": _reshape, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Flatten": _flatten,
    "Transpose": _transpose, "Slice": _slice, "Split": _split, "Gather": _gather, "Expand": _expand,
    "Concat": _concat, "Pad": _pad,
}


# ---- linear algebra and NN -------------------------------------------------------------------
def _matmul(cx, a, b):
    """MatMul; with a constant 2-D right operand it is a linear layer on b.T (weights [N, K])."""
    if isinstance(b, np.ndarray) and b.ndim == 2 and len(_shape(a)) >= 1:
        wt = np.ascontiguousarray(b.T)
        cx.names[id(wt)] = f"{cx.names.get(id(b), 'w')}_t"
        return cx.b.linear(cx.atom(a), cx.atom(wt))
    return cx.b.matmul(cx.atom(a), cx.atom(b))


def _gemm(cx, ins, at):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    x = cx.atom(a)
    if at.get("transA", 0):
        x = cx.b.transpose(x, perm=(1, 0))
    if isinstance(b, np.ndarray) and alpha == 1.0 and beta == 1.0 and (c is None or _shape(c) == (_shape(b)[0 if at.get("transB", 0) else 1],)):
        w = b if at.get("transB", 0) else np.ascontiguousarray(b.T)
        return cx.b.linear(*[x, cx.atom(w)] + ([] if c is None else [cx.atom(c)]))
    w = cx.atom(b)
    y = cx.b.matmul(x, cx.b.transpose(w, perm=(1, 0)) if at.get("transB", 0) else w)
    y = y if alpha == 1.0 else cx.b.mul(y, cx.atom(np.array(alpha, DTYPES[y.dtype])))
    if c is None:
        return y
    c = cx.atom(c, y.dtype)
    return cx.b.add(y, c if beta == 1.0 else cx.b.mul(c, cx.atom(np.array(beta, DTYPES[y.dtype]))))


def _conv_pads(cx, at, spatial, kernel, strides, dil):
    """ONNX pads [b1, b2, ..., e1, e2, ...] (or auto_pad) -> ((b1, e1), (b2, e2), ...)."""
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    n = len(spatial)
    if auto in ("NOTSET", ""):
        p = list(at.get("pads", [0] * 2 * n))
        return tuple((p[i], p[i + n]) for i in range(n))
    if auto == "VALID":
        return ((0, 0),) * n
    out = []
    for x, k, s, d in zip(spatial, kernel, strides, dil):
        total = max((-(-x // s) - 1) * s + (k - 1) * d + 1 - x, 0)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return tuple(out)


def _conv(cx, ins, at):
    x, w = cx.atom(ins[0]), ins[1]
    b = ins[2] if len(ins) > 2 else None
    n = x.ndim - 2
    kernel = tuple(at.get("kernel_shape", _shape(w)[2:]))
    strides, dil = tuple(at.get("strides", [1] * n)), tuple(at.get("dilations", [1] * n))
    pads = _conv_pads(cx, at, x.shape[2:], kernel, strides, dil)
    args = lambda xx, ww: [xx, ww] + ([] if b is None else [cx.atom(b, x.dtype)])  # noqa: E731
    if n == 2:
        return cx.b.conv2d(*args(x, cx.atom(w, x.dtype)), stride=strides, padding=pads, dilation=dil,
                           groups=at.get("group", 1))
    if n != 1:
        raise UnsupportedOpError(f"{cx.where}: {n}-d Conv")
    x4 = cx.b.reshape(x, shape=x.shape[:2] + (1, x.shape[2]))
    w4 = cx.b.reshape(cx.atom(w, x.dtype), shape=_shape(w)[:2] + (1, _shape(w)[2]))
    y = cx.b.conv2d(*args(x4, w4), stride=(1, strides[0]), padding=((0, 0), pads[0]),
                    dilation=(1, dil[0]), groups=at.get("group", 1))
    return cx.b.reshape(y, shape=y.shape[:2] + (y.shape[3],))


def _pool(op):
    def fn(cx, ins, at):
        x = cx.atom(ins[0])
        if x.ndim != 4:
            raise UnsupportedOpError(f"{cx.where}: only 2-d pooling")
        k = tuple(at["kernel_shape"])
        st, dil = tuple(at.get("strides", [1, 1])), tuple(at.get("dilations", [1, 1]))
        kw = dict(kernel=k, stride=st, padding=_conv_pads(cx, at, x.shape[2:], k, st, dil),
                  ceil_mode=bool(at.get("ceil_mode", 0)))
        if op == "max_pool2d":
            return cx.b.max_pool2d(x, dilation=dil, **kw)
        return cx.b.avg_pool2d(x, count_include_pad=bool(at.get("count_include_pad", 0)), **kw)
    return fn


def _global(op):
    def fn(cx, ins, at):
        x = cx.atom(ins[0])
        return cx.b.op(op, x, axes=tuple(range(2, x.ndim)), keepdims=True)
    return fn


def _batch_norm(cx, ins, at):
    x = cx.atom(ins[0])
    scale, bias, mean, var = (cx.known(v, "BatchNormalization parameters").astype(np.float32) for v in ins[1:5])
    s = scale / np.sqrt(var + np.float32(at.get("epsilon", 1e-5)))
    shape = (-1,) + (1,) * (x.ndim - 2)
    y = cx.b.mul(x, cx.atom(s.reshape(shape).astype(DTYPES[x.dtype])))
    return cx.b.add(y, cx.atom((bias - mean * s).reshape(shape).astype(DTYPES[x.dtype])))


def _layer_norm(cx, ins, at):
    x = cx.atom(ins[0])
    ax = at.get("axis", -1) % x.ndim
    args = [x] + [cx.atom(v, x.dtype) for v in ins[1:3] if v is not None]
    if len(ins) > 2 and ins[2] is not None and ins[1] is None:
        raise UnsupportedOpError(f"{cx.where}: bias without scale")
    w_shape = x.shape[ax:]
    args = [args[0]] + [a if a.shape == w_shape else cx.b.broadcast_to(a, shape=w_shape) for a in args[1:]]
    return cx.b.layer_norm(*args, axes=tuple(range(ax, x.ndim)), eps=at.get("epsilon", 1e-5))


def _rms_norm(cx, ins, at):
    x = cx.atom(ins[0])
    ax = at.get("axis", -1) % x.ndim
    args = [x] + [cx.atom(v, x.dtype) for v in ins[1:2] if v is not None]
    return cx.b.rms_norm(*args, axes=tuple(range(ax, x.ndim)), eps=at.get("epsilon", 1e-5))


def _qscale(cx, s, x_shape, at):
    """ONNX per-axis (1-D) / blocked scales -> the IR's blocked layout (same rank as data)."""
    s = cx.atom(s)
    if len(s.shape) in (0, len(x_shape)):
        return s
    ax = at.get("axis", 1) % len(x_shape)
    return cx.b.reshape(s, shape=tuple(d if i == ax else 1 for i, d in enumerate(x_shape)))


def _quantize(cx, ins, at):
    x = cx.atom(ins[0])
    zp = ins[2] if len(ins) > 2 else None
    dt = ONNX_DTYPES[at["output_dtype"]] if at.get("output_dtype") else (str(zp.dtype) if zp is not None else "u8")
    dt = {"uint8": "u8", "int8": "i8", "int4": "i4", "uint4": "u4", "int16": "i16",
          "float8_e4m3fn": "f8e4m3", "float8_e5m2": "f8e5m2"}.get(dt, dt)
    args = [x, _qscale(cx, ins[1], x.shape, at)]
    if zp is not None and (not isinstance(zp, np.ndarray) or np.any(zp.astype(np.float32) != 0)):
        args.append(_qscale(cx, zp, x.shape, at))
    return cx.b.quantize(*args, dtype=dt)


def _dequantize(cx, ins, at):
    q = cx.atom(ins[0])
    zp = ins[2] if len(ins) > 2 else None
    args = [q, _qscale(cx, ins[1], q.shape, at)]
    if zp is not None and (not isinstance(zp, np.ndarray) or np.any(zp.astype(np.float32) != 0)):
        args.append(_qscale(cx, zp, q.shape, at))
    return cx.b.dequantize(*args, dtype=cx.atom(ins[1]).dtype)


def _attention(cx, ins, at):
    """ONNX Attention (opset 23) in its 4-D form: q [B, Hq, L, D], k/v [B, Hkv, S, D]."""
    q, k, v = (cx.atom(t) for t in ins[:3])
    if q.ndim != 4 or len(ins) > 4:
        raise UnsupportedOpError(f"{cx.where}: only 4-D Attention without KV cache inputs")
    mask = ins[3] if len(ins) > 3 and ins[3] is not None else None
    args = [q, k, v] + ([] if mask is None else [cx.atom(mask, None if _dtype_of(mask) == "bool" else q.dtype)])
    return cx.b.attention(*args, causal=bool(at.get("is_causal", 0)), scale=at.get("scale"))


def _dtype_of(v):
    return v.dtype if isinstance(v, Var) else ("bool" if v.dtype == np.bool_ else str(v.dtype))


NN = {
    "MatMul": lambda cx, ins, at: _matmul(cx, *ins),
    "Gemm": _gemm, "Conv": _conv, "MaxPool": _pool("max_pool2d"), "AveragePool": _pool("avg_pool2d"),
    "GlobalAveragePool": _global("reduce_mean"), "GlobalMaxPool": _global("reduce_max"),
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm, "RMSNormalization": _rms_norm,
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize, "Attention": _attention,
}

ONNX = {**ELEMENTWISE, **REDUCTIONS, **SHAPES, **NN}


# ---- ops on known values only (shape arithmetic, constants) ---------------------------------
def _constant(ins, at):
    from onnx import numpy_helper
    if "value" in at:
        return numpy_helper.to_array(at["value"])
    for k, dt in (("value_float", np.float32), ("value_int", np.int64), ("value_floats", np.float32),
                  ("value_ints", np.int64)):
        if k in at:
            return np.array(at[k], dt)
    raise UnsupportedOpError(f"Constant with attributes {sorted(at)}")


def _const_of_shape(ins, at):
    from onnx import numpy_helper
    val = numpy_helper.to_array(at["value"]) if "value" in at else np.zeros(1, np.float32)
    return np.full(tuple(int(d) for d in ins[0]), val.reshape(-1)[0], val.dtype)


def _shape_op(ins, at):
    return np.array(ins[0].shape, np.int64)[at.get("start", 0):at.get("end", None)]


def _trilu(ins, at):
    k = int(ins[1]) if len(ins) > 1 and ins[1] is not None else 0
    return np.triu(ins[0], k) if at.get("upper", 1) else np.tril(ins[0], k)


NUMPY_ONLY = {
    "Constant": _constant, "ConstantOfShape": _const_of_shape, "Shape": _shape_op,
    "Size": lambda ins, at: np.array(ins[0].size, np.int64),
    "Range": lambda ins, at: np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype),
    "Trilu": _trilu,
}
