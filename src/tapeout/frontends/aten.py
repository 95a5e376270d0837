"""The aten -> IR table of the torch frontend. Each entry is `fn(cx, node, *args)` where args
are every schema argument of the aten op in order (defaults filled in); tensor arguments
arrive as IR Vars or, if constant, as torch tensors. It returns a Var (or a tuple for
multi-output aten ops). Keys are "aten.op.overload" or "aten.op" for all overloads.
"""
from __future__ import annotations

from ..errors import UnsupportedOpError
from ..ir.core import Var
from ..ir.dtypes import FLOATS
from .torch_export import Ctx, ir_dtype


# ---- helpers -------------------------------------------------------------------------------
def _val(node):
    return node.meta["val"]


def _shape(node):
    return tuple(int(d) for d in _val(node).shape)


def _dt(node):
    return ir_dtype(_val(node).dtype)


def _rep(v):
    """A torch stand-in with v's dtype and dimensionality class, for torch.result_type."""
    import torch
    from .torch_export import torch_dtype
    if isinstance(v, Var):
        return torch.zeros(() if v.ndim == 0 else (1,), dtype=torch_dtype(v.dtype))
    return v


def _promote(a, b) -> str:
    import torch
    return ir_dtype(torch.result_type(_rep(a), _rep(b)))


def _axes(dims, ndim):
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(ndim))
    return tuple(d % ndim for d in ((dims,) if isinstance(dims, int) else dims))


def _ew(op, compute=None):
    """Elementwise op on operands promoted to the result dtype (or `compute` for compares)."""
    def fn(cx: Ctx, node, a, b=None, *rest):
        dt = _promote(a, b) if compute else _dt(node)
        if b is None or op in _UNARY_SET:
            return cx.b.op(op, cx.atom(a, dt))
        return cx.b.op(op, cx.atom(a, dt), cx.atom(b, dt))
    return fn


_UNARY = ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh",
          "sigmoid", "relu", "silu", "erf", "floor", "ceil", "sign")
_UNARY_SET = frozenset(_UNARY)


def _addsub(op):
    def fn(cx, node, a, b, alpha=1):
        dt = _dt(node)
        b = cx.atom(b, dt)
        if alpha != 1:
            b = cx.b.mul(b, cx.atom(alpha, dt))
        return cx.b.op(op, cx.atom(a, dt), b)
    return fn


def _rsub(cx, node, a, b, alpha=1):
    return _addsub("sub")(cx, node, b, a, alpha) if alpha == 1 else _unsup("rsub with alpha")


def _unsup(what):
    raise UnsupportedOpError(what)


def _pow(cx, node, a, b):
    dt = _dt(node)
    if isinstance(b, (int, float)) and b == 2:
        x = cx.atom(a, dt)
        return cx.b.mul(x, x)
    if isinstance(b, (int, float)) and b == 0.5:
        return cx.b.sqrt(cx.atom(a, dt))
    return cx.b.pow(cx.atom(a, dt), cx.atom(b, dt))


def _div(cx, node, a, b, rounding_mode=None):
    dt = _dt(node)
    if rounding_mode is None or dt not in FLOATS:
        q = cx.b.div(cx.atom(a, dt), cx.atom(b, dt))
        if rounding_mode == "floor" and dt not in FLOATS:  # trunc -> floor for negative quotients
            x, y = cx.atom(a, dt), cx.atom(b, dt)
            inexact = cx.b.ne(cx.b.mul(q, y), x)
            neg = cx.b.logical_xor(cx.b.lt(x, cx.atom(0, dt)), cx.b.lt(y, cx.atom(0, dt)))
            q = cx.b.sub(q, cx.b.cast(cx.b.logical_and(inexact, neg), dtype=dt))
        return q
    q = cx.b.div(cx.atom(a, dt), cx.atom(b, dt))
    if rounding_mode == "floor":
        return cx.b.floor(q)
    return cx.b.where(cx.b.lt(q, cx.atom(0.0, dt)), cx.b.ceil(q), cx.b.floor(q))


def _mod(floor: bool):
    """remainder (sign of the divisor, Python %) or fmod (sign of the dividend)."""
    def fn(cx, node, a, b):
        dt = _dt(node)
        x, y = cx.atom(a, dt), cx.atom(b, dt)
        q = _div(cx, node, x, y, "floor" if floor else "trunc")
        return cx.b.sub(x, cx.b.mul(q, y))
    return fn


def _logical(op):
    def fn(cx, node, a, b=None):
        if _dt(node) != "bool":
            _unsup(f"{op} on non-bool tensors")
        return cx.b.op(op, cx.atom(a, "bool"), cx.atom(b, "bool"))
    return fn


def _where(cx, node, c, a, b):
    dt = _dt(node)
    return cx.b.where(cx.atom(c, "bool"), cx.atom(a, dt), cx.atom(b, dt))


def _clamp(cx, node, x, lo=None, hi=None):
    dt = _dt(node)
    x = cx.atom(x, dt)
    if all(v is None or isinstance(v, (int, float)) for v in (lo, hi)):
        return cx.b.clamp(x, min=lo, max=hi)
    x = x if lo is None else cx.b.maximum(x, cx.atom(lo, dt))
    return x if hi is None else cx.b.minimum(x, cx.atom(hi, dt))


def _leaky_relu(cx, node, x, slope=0.01):
    x = cx.atom(x)
    return cx.b.where(cx.b.gt(x, cx.atom(0.0, x.dtype)), x, cx.b.mul(x, cx.atom(slope, x.dtype)))


def _hardsigmoid(cx, x):
    return cx.b.div(cx.b.clamp(cx.b.add(x, cx.atom(3.0, x.dtype)), min=0.0, max=6.0), cx.atom(6.0, x.dtype))


ELEMENTWISE = {
    **{f"aten.{op}": _ew(op) for op in _UNARY},
    "aten.gelu": lambda cx, node, x, approximate="none": cx.b.gelu(cx.atom(x), approximate=approximate),
    "aten.round.default": _ew("round"),
    "aten.add": _addsub("add"), "aten.sub": _addsub("sub"), "aten.rsub": _rsub,
    "aten.mul": _ew("mul"), "aten.div": _div, "aten.pow": _pow,
    "aten.remainder": _mod(True), "aten.fmod": _mod(False),
    "aten.maximum": _ew("maximum"), "aten.minimum": _ew("minimum"),
    **{f"aten.{t}": _ew(op, compute=True) for t, op in
       (("eq", "eq"), ("ne", "ne"), ("lt", "lt"), ("le", "le"), ("gt", "gt"), ("ge", "ge"))},
    "aten.logical_not": lambda cx, node, x: cx.b.logical_not(cx.atom(x, "bool")),
    "aten.bitwise_not": lambda cx, node, x: cx.b.logical_not(cx.atom(x, "bool")) if _dt(node) == "bool"
    else _unsup("bitwise_not on integers"),
    **{f"aten.{p}_{w}": _logical(f"logical_{w}") for p in ("logical", "bitwise") for w in ("and", "or", "xor")},
    "aten.where.self": _where, "aten.clamp": _clamp, "aten.clamp_min": lambda cx, n, x, lo: _clamp(cx, n, x, lo),
    "aten.clamp_max": lambda cx, n, x, hi: _clamp(cx, n, x, None, hi),
    "aten.hardtanh": lambda cx, n, x, lo=-1.0, hi=1.0: _clamp(cx, n, x, lo, hi),
    "aten.leaky_relu": _leaky_relu,
    "aten.hardsigmoid": lambda cx, n, x: _hardsigmoid(cx, cx.atom(x)),
    "aten.hardswish": lambda cx, n, x: cx.b.mul(cx.atom(x), _hardsigmoid(cx, cx.atom(x))),
}


# ---- reductions ----------------------------------------------------------------------------
def _reduce(op):
    def fn(cx, node, x, dims=None, keepdim=False, dtype=None, *rest):
        dt = _dt(node)
        x = cx.atom(x, dt if op in ("reduce_sum", "reduce_mean") else None)
        if x.dtype == "bool":
            y = cx.b.op(op, cx.b.cast(x, dtype="i32"), axes=_axes(dims, x.ndim), keepdims=bool(keepdim))
            return cx.b.cast(y, dtype="bool")
        return cx.b.op(op, x, axes=_axes(dims, x.ndim), keepdims=bool(keepdim))
    return fn


def _sum_all(cx, node, x, dtype=None):
    return _reduce("reduce_sum")(cx, node, x)


def _any_all(op):
    def fn(cx, node, x, dims=None, keepdim=False):
        x = cx.atom(x)
        y = cx.b.op(op, cx.b.cast(x, dtype="i32"), axes=_axes(dims, x.ndim), keepdims=bool(keepdim))
        return cx.b.ne(y, cx.atom(0, "i32"))
    return fn


def _argreduce(op):
    def fn(cx, node, x, dim=None, keepdim=False):
        x = cx.atom(x)
        if dim is None:
            y = cx.b.op(op, cx.b.reshape(x, shape=(-1,)), axis=0)
            return cx.b.reshape(y, shape=_shape(node)) if keepdim else y
        return cx.b.op(op, x, axis=dim, keepdims=bool(keepdim))
    return fn


def _max_dim(red, arg):
    def fn(cx, node, x, dim, keepdim=False):
        x = cx.atom(x)
        return (cx.b.op(red, x, axes=(dim,), keepdims=bool(keepdim)), cx.b.op(arg, x, axis=dim, keepdims=bool(keepdim)))
    return fn


def _cumsum(cx, node, x, dim, dtype=None):
    return cx.b.cumsum(cx.atom(x, _dt(node)), axis=dim)


def _softmax(op):
    def fn(cx, node, x, dim, half_to_float=False):
        return cx.b.op(op, cx.atom(x, _dt(node)), axis=dim)
    return fn


REDUCTIONS = {
    "aten.sum.dim_IntList": _reduce("reduce_sum"), "aten.sum.default": _sum_all,
    "aten.mean.dim": _reduce("reduce_mean"), "aten.mean.default": lambda cx, n, x, dtype=None: _reduce("reduce_mean")(cx, n, x),
    "aten.amax": _reduce("reduce_max"), "aten.amin": _reduce("reduce_min"),
    "aten.max.default": lambda cx, n, x: _reduce("reduce_max")(cx, n, x),
    "aten.min.default": lambda cx, n, x: _reduce("reduce_min")(cx, n, x),
    "aten.max.dim": _max_dim("reduce_max", "argmax"), "aten.min.dim": _max_dim("reduce_min", "argmin"),
    "aten.argmax": _argreduce("argmax"), "aten.argmin": _argreduce("argmin"),
    "aten.any": _any_all("reduce_max"), "aten.all": _any_all("reduce_min"),
    "aten.cumsum": _cumsum,
    "aten._softmax": _softmax("softmax"), "aten._log_softmax": _softmax("log_softmax"),
    "aten.softmax.int": lambda cx, n, x, dim, dtype=None: _softmax("softmax")(cx, n, x, dim),
}


# ---- shapes and data movement ----------------------------------------------------------------
def _reshape_to_meta(cx, node, x, *rest):
    x = cx.atom(x)
    return x if x.shape == _shape(node) else cx.b.reshape(x, shape=_shape(node))


def _identity(cx, node, x, *rest):
    return cx.atom(x)


def _to_copy(cx, node, x, *rest):
    return cx.atom(x, _dt(node))


def _permute(cx, node, x, dims):
    x = cx.atom(x)
    perm = tuple(d % max(x.ndim, 1) for d in dims)
    return x if perm == tuple(range(x.ndim)) else cx.b.transpose(x, perm=perm)


def _transpose(cx, node, x, d0, d1):
    x = cx.atom(x)
    perm = list(range(x.ndim))
    perm[d0 % x.ndim], perm[d1 % x.ndim] = perm[d1 % x.ndim], perm[d0 % x.ndim]
    return _permute(cx, node, x, perm)


def _t(cx, node, x):
    x = cx.atom(x)
    return x if x.ndim < 2 else cx.b.transpose(x, perm=(1, 0))


def _expand(cx, node, x, *rest):
    x = cx.atom(x)
    return x if x.shape == _shape(node) else cx.b.broadcast_to(x, shape=_shape(node))


def _slice(cx, node, x, dim=0, start=None, end=None, step=1):
    x = cx.atom(x)
    d = dim % x.ndim
    starts, stops, steps = [None] * x.ndim, [None] * x.ndim, [1] * x.ndim
    starts[d], stops[d], steps[d] = start, end, step
    if (start in (None, 0)) and (end is None or end >= x.shape[d]) and step == 1:
        return x
    return cx.b.slice(x, starts=starts, stops=stops, steps=steps)


def _select(cx, node, x, dim, index):
    x = cx.atom(x)
    d = dim % x.ndim
    i = index % x.shape[d]
    return cx.b.reshape(_slice(cx, node, x, d, i, i + 1, 1), shape=_shape(node))


def _split_sizes(cx, node, x, sizes, dim=0):
    return tuple(cx.b.split(cx.atom(x), axis=dim, sizes=tuple(sizes)))


def _split(cx, node, x, size, dim=0):
    x = cx.atom(x)
    n = x.shape[dim % x.ndim]
    return _split_sizes(cx, node, x, [min(size, n - i) for i in range(0, n, size)], dim)


def _unbind(cx, node, x, dim=0):
    x = cx.atom(x)
    d = dim % x.ndim
    parts = cx.b.split(x, axis=d, sizes=(1,) * x.shape[d])
    return tuple(cx.b.reshape(p, shape=x.shape[:d] + x.shape[d + 1:]) for p in parts)


def _cat(cx, node, xs, dim=0):
    dt = _dt(node)
    xs = [cx.atom(x, dt) for x in xs if not (tuple(getattr(x, "shape", ())) == (0,))]
    return xs[0] if len(xs) == 1 else cx.b.concat(*xs, axis=dim)


def _pad(cx, node, x, pad, value=0.0):
    x = cx.atom(x)
    if any(p < 0 for p in pad):
        _unsup("negative padding")
    pads = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        pads[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return cx.b.pad(x, pads=tuple(pads), value=value)


def _full_like(cx, node, x, value, *rest):
    return cx.b.full(shape=_shape(node), value=value, dtype=_dt(node))


def _const_like(value):
    return lambda cx, node, x, *rest: _full_like(cx, node, x, value)


def _new_full(cx, node, x, size, value, *rest):
    return cx.b.full(shape=_shape(node), value=value, dtype=_dt(node))


def _index(cx, node, x, indices):
    """x[..., i0, i1, ...] with adjacent index tensors (broadcast together) -> one gather."""
    x = cx.atom(x)
    pos = [i for i, ix in enumerate(indices) if ix is not None]
    if not pos or pos != list(range(pos[0], pos[-1] + 1)):
        _unsup("index with non-adjacent index tensors")
    if any(str(indices[i].dtype) in ("bool", "torch.bool") for i in pos):
        _unsup("boolean mask indexing (data-dependent shape)")
    p0, dims = pos[0], [x.shape[i] for i in pos]
    flat = None
    for i, n in zip(pos, dims):
        ix = cx.atom(indices[i], "i64")
        ix = cx.b.where(cx.b.lt(ix, cx.atom(0, "i64")), cx.b.add(ix, cx.atom(n, "i64")), ix) if len(pos) > 1 else ix
        flat = ix if flat is None else cx.b.add(cx.b.mul(flat, cx.atom(n, "i64")), ix)
    if len(pos) > 1:
        merged = 1
        for n in dims:
            merged *= n
        x = cx.b.reshape(x, shape=x.shape[:p0] + (merged,) + x.shape[pos[-1] + 1:])
    return cx.b.gather(x, flat, axis=p0)


SHAPES = {
    **{f"aten.{op}": _reshape_to_meta for op in ("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze",
                                                 "flatten", "unflatten", "view_as")},
    **{f"aten.{op}": _identity for op in ("clone", "alias", "contiguous", "detach", "lift_fresh_copy",
                                          "dropout", "lift_fresh")},
    "aten._to_copy": _to_copy, "aten.to": _to_copy, "aten.type_as": _to_copy,
    "aten.permute": _permute, "aten.transpose.int": _transpose, "aten.t": _t,
    "aten.expand": _expand, "aten.expand_as": _expand, "aten.slice.Tensor": _slice, "aten.select.int": _select,
    "aten.split_with_sizes": _split_sizes, "aten.split.Tensor": _split, "aten.unbind.int": _unbind,
    "aten.cat": _cat, "aten.concat": _cat, "aten.constant_pad_nd": _pad,
    "aten.full_like": _full_like, "aten.zeros_like": _const_like(0), "aten.ones_like": _const_like(1),
    "aten.new_full": _new_full, "aten.new_zeros": lambda cx, n, x, size, *r: _new_full(cx, n, x, size, 0),
    "aten.new_ones": lambda cx, n, x, size, *r: _new_full(cx, n, x, size, 1),
    "aten.index.Tensor": _index,
    "aten.index_select": lambda cx, n, x, dim, idx: cx.b.gather(cx.atom(x), cx.atom(idx), axis=dim),
    "aten.embedding": lambda cx, n, w, idx, *r: cx.b.gather(cx.atom(w), cx.atom(idx), axis=0),
    "aten.sym_size.int": lambda cx, n, x, dim: int(x.shape[dim]),
}


# ---- linear algebra and NN -------------------------------------------------------------------
def _linear(cx, node, x, w, b=None):
    dt = _dt(node)
    args = [cx.atom(x, dt), cx.atom(w, dt)] + ([] if b is None else [cx.atom(b, dt)])
    return cx.b.linear(*args)


def _mm(cx, node, a, b):
    dt = _dt(node)
    if not isinstance(b, Var) and b.ndim == 2:  # x @ W with constant W: a linear layer on W.T
        return cx.b.linear(cx.atom(a, dt), cx.atom(b.t(), dt))
    return cx.b.matmul(cx.atom(a, dt), cx.atom(b, dt))


def _addmm(cx, node, bias, a, b, beta=1, alpha=1):
    dt = _dt(node)
    if beta != 1 or alpha != 1:
        _unsup("addmm with beta/alpha != 1")
    bias = cx.atom(bias, dt)
    if not isinstance(b, Var) and bias.shape == (b.shape[1],):
        return cx.b.linear(cx.atom(a, dt), cx.atom(b.t(), dt), bias)
    return cx.b.add(_mm(cx, node, a, b), bias)


def _bn_affine(w, b, mean, var, eps):
    """Per-channel (scale, shift) of inference batch norm, computed by torch in f32."""
    import torch
    n = mean.shape[0]
    w = torch.ones(n) if w is None else w.float()
    b = torch.zeros(n) if b is None else b.float()
    scale = w / torch.sqrt(var.float() + eps)
    return scale, b - mean.float() * scale


def _bn_user(node):
    """The batch-norm node that is the only user of a convolution, if its stats are constants."""
    users = list(node.users)
    if len(users) == 1 and str(users[0].target) == "aten._native_batch_norm_legit_no_training.default":
        return users[0]
    return None


def _conv(cx, node, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    import torch
    if transposed:
        _unsup("transposed convolution")
    if isinstance(w, Var) or (b is not None and isinstance(b, Var)):
        _unsup("convolution with a non-constant weight")
    bn = _bn_user(node)
    stats = None if bn is None else [cx.env_of(a) for a in bn.args[1:5]]
    if stats is not None and not any(isinstance(t, Var) for t in stats):
        scale, shift = _bn_affine(*stats, bn.args[6])
        wname = cx.param_names.get(w.untyped_storage().data_ptr(), "conv")
        w = (w.float() * scale.reshape(-1, *[1] * (w.ndim - 1))).to(w.dtype)
        b = (shift + (b.float() * scale if b is not None else 0)).to(w.dtype)
        cx.hints[cx._key(w)], cx.hints[cx._key(b)] = f"{wname}_bnfold", f"{wname}_bnfold_bias"
        cx.lift(w), cx.lift(b)  # lift now, while the hints' keys are alive
    else:
        bn = None
    dt = _dt(node)
    one_d = w.ndim == 3
    xv = cx.atom(x, dt)
    if one_d:
        xv = cx.b.reshape(xv, shape=xv.shape[:2] + (1, xv.shape[2]))
        w, stride, padding, dilation = w.unsqueeze(2), (1, stride[0]), (0, padding[0]), (1, dilation[0])
    elif w.ndim != 4:
        _unsup(f"{w.ndim - 2}-d convolution")
    args = [xv, cx.atom(w, dt)] + ([] if b is None else [cx.atom(torch.as_tensor(b), dt)])
    y = cx.b.conv2d(*args, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation), groups=groups)
    y = cx.b.reshape(y, shape=_shape(node)) if one_d else y
    if bn is not None:  # the batch norm is folded: its node yields the conv's output
        cx.env[bn] = (y, None, None)
    return y


def _batch_norm(cx, node, x, w, b, mean, var, momentum, eps):
    if any(isinstance(t, Var) for t in (w, b, mean, var)):
        _unsup("batch norm with non-constant statistics")
    scale, shift = _bn_affine(w, b, mean, var, eps)
    x = cx.atom(x)
    shape = (-1,) + (1,) * (x.ndim - 2)
    y = cx.b.mul(x, cx.atom(scale.reshape(shape), x.dtype))
    return (cx.b.add(y, cx.atom(shift.reshape(shape), x.dtype)), None, None)


def _pool_args(kernel, stride, padding):
    return dict(kernel=tuple(kernel), stride=tuple(stride) or tuple(kernel), padding=tuple(padding) * (2 // len(padding)))


def _max_pool(cx, node, x, kernel, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    y = cx.b.max_pool2d(cx.atom(x), **_pool_args(kernel, stride, padding),
                        dilation=tuple(dilation) * (2 // len(dilation)), ceil_mode=ceil_mode)
    return (y, None) if "with_indices" in str(node.target) else y


def _avg_pool(cx, node, x, kernel, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True, divisor=None):
    if divisor is not None:
        _unsup("avg_pool2d with divisor_override")
    return cx.b.avg_pool2d(cx.atom(x), **_pool_args(kernel, stride, padding), ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad)


def _adaptive_avg(cx, node, x, out_size):
    x = cx.atom(x)
    (h, w), (oh, ow) = x.shape[2:], tuple(out_size)
    if (oh, ow) == (1, 1):
        return cx.b.reduce_mean(x, axes=(2, 3), keepdims=True)
    if h % oh or w % ow:
        _unsup(f"adaptive_avg_pool2d from {(h, w)} to {(oh, ow)} (uneven windows)")
    return cx.b.avg_pool2d(x, kernel=(h // oh, w // ow), stride=(h // oh, w // ow))


def _layer_norm(cx, node, x, shape, w=None, b=None, eps=1e-5):
    x = cx.atom(x)
    args = [x] + [cx.atom(t, x.dtype) for t in (w, b) if t is not None]
    if w is None and b is not None:
        _unsup("layer_norm with bias but no weight")
    y = cx.b.layer_norm(*args, axes=tuple(range(x.ndim - len(shape), x.ndim)), eps=eps)
    return (y, None, None)


def _rms_norm(cx, node, x, shape, w=None, eps=None):
    import torch
    x = cx.atom(x)
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    args = [x] + ([] if w is None else [cx.atom(w, x.dtype)])
    return cx.b.rms_norm(*args, axes=tuple(range(x.ndim - len(shape), x.ndim)), eps=eps)


def _unrepeated_kv(cx, fx_node, h_q):
    """The k/v before HF's repeat_kv (unsqueeze(2) -> expand -> [clone] -> view), so attention
    gets the grouped heads (GQA) instead of copies; None if the pattern is not there."""
    def step(n, *names):
        t = str(getattr(n, "target", ""))
        return n.args[0] if any(t.startswith(f"aten.{m}.") for m in names) else None
    n = step(fx_node, "view", "_unsafe_view", "reshape")
    n = n if n is None or not str(n.target).startswith("aten.clone") else n.args[0]
    n = None if n is None else step(n, "expand")
    if n is None or not str(n.target).startswith("aten.unsqueeze") or n.args[1] != 2:
        return None
    base = cx.env_of(n.args[0])
    return base if isinstance(base, Var) and base.ndim == 4 and h_q % base.shape[1] == 0 else None


def _is_causal_mask(m, lq, lk) -> bool:
    """A constant mask that is exactly torch's top-left causal pattern (bool or 0/-inf)."""
    import torch
    if isinstance(m, Var) or m.shape[-2:] != (lq, lk):
        return False
    tril = torch.ones(lq, lk, dtype=torch.bool).tril()
    keep = m if m.dtype == torch.bool else (m == 0)
    if m.dtype != torch.bool and not bool(((m == 0) | (m == float("-inf"))).all()):
        return False
    return bool((keep == tril).all())


def _sdpa(cx, node, q, k, v, mask=None, dropout=0.0, causal=False, scale=None, enable_gqa=False):
    dt = _dt(node)
    q = cx.atom(q, dt)
    kv = [_unrepeated_kv(cx, a, q.shape[-3]) for a in node.args[1:3]]
    k, v = (cx.atom(kv[0], dt), cx.atom(kv[1], dt)) if all(x is not None for x in kv) else (cx.atom(k, dt), cx.atom(v, dt))
    args = [q, k, v]
    if mask is not None:
        if _is_causal_mask(mask, q.shape[-2], k.shape[-2]):
            causal = True
        else:
            args.append(cx.atom(mask, "bool" if str(mask.dtype) in ("bool", "torch.bool") else dt))
    return cx.b.attention(*args, causal=bool(causal), scale=scale)


def _sdpa_cpu(cx, node, q, k, v, dropout=0.0, causal=False, mask=None, scale=None):
    return (_sdpa(cx, node, q, k, v, mask, dropout, causal, scale), None)


NN = {
    "aten.linear": _linear, "aten.mm": _mm, "aten.bmm": _mm, "aten.matmul": _mm, "aten.addmm": _addmm,
    "aten.convolution": _conv,
    "aten._native_batch_norm_legit_no_training": _batch_norm,
    "aten.max_pool2d_with_indices": _max_pool, "aten.max_pool2d": _max_pool, "aten.avg_pool2d": _avg_pool,
    "aten._adaptive_avg_pool2d": _adaptive_avg, "aten.adaptive_avg_pool2d": _adaptive_avg,
    "aten.native_layer_norm": _layer_norm, "aten.rms_norm": _rms_norm,
    "aten.scaled_dot_product_attention": _sdpa,
    "aten._scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu,
}

ATEN = {**ELEMENTWISE, **REDUCTIONS, **SHAPES, **NN}
