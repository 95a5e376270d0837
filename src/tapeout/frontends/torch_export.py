"""PyTorch -> IR via torch.export: `from_torch(module, example_inputs) -> Program`.

The module is exported, decomposed to Core ATen (keeping aten.linear and
aten.scaled_dot_product_attention whole, so the compiler sees them), and walked once. Each aten
op maps through the table in `tapeout.frontends.aten` to IR ops. Parameters and buffers
become consts named by their module path. Any node whose inputs are all constants (masks,
position ids, RoPE tables) is evaluated by torch right away and becomes a const too.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import TapeoutError, UnsupportedOpError
from ..ir.builder import Builder
from ..ir.core import Literal, Program, Var
from ..ir.passes import dce

_TORCH_DTYPES = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
                 "float8_e4m3fn": "f8e4m3", "float8_e5m2": "f8e5m2", "int64": "i64", "int32": "i32",
                 "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool"}
_SKIP = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
         "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg"}


def ir_dtype(tdt) -> str:
    name = str(tdt).removeprefix("torch.")
    if name not in _TORCH_DTYPES:
        raise TapeoutError(f"torch dtype {name} has no IR equivalent")
    return _TORCH_DTYPES[name]


def torch_dtype(name: str):
    import torch
    return getattr(torch, {v: k for k, v in _TORCH_DTYPES.items()}[name])


def to_numpy(t) -> np.ndarray:
    """Bit-exact copy of a torch tensor (bf16/fp8 through integer views)."""
    import ml_dtypes
    import torch
    t = t.detach().cpu().contiguous()
    views = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
             torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
             torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2)}
    if t.dtype in views:
        iv, nv = views[t.dtype]
        return t.view(iv).numpy().view(nv).copy()
    return t.numpy().copy()


def where_from(node) -> str:
    """`module.path (file:line)` for error messages, from the node's export metadata."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    trace = [ln.strip() for ln in (node.meta.get("stack_trace") or "").strip().splitlines()]
    loc = next((ln for ln in reversed(trace) if ln.startswith("File ")), "")
    parts = [p for p in (f"module '{path}'" if path else "", loc) if p]
    return ", ".join(parts) or f"node {node.name}"


@dataclass
class Ctx:
    """Translation state for one export: the builder, and where constants came from."""
    b: Builder
    param_names: dict = field(default_factory=dict)   # tensor storage key -> module path
    lifted: dict = field(default_factory=dict)        # tensor view key -> (tensor, const Var)
    env: dict = field(default_factory=dict)           # fx node -> Var | torch.Tensor | tuple | scalar
    hints: dict = field(default_factory=dict)         # tensor view key -> name of the folded node

    def env_of(self, a):
        return self.env[a] if type(a).__name__ == "Node" else a

    @staticmethod
    def _key(t):
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)

    def lift(self, t, name: str = "c") -> Var:
        """A concrete torch tensor as a const Var (one const per distinct tensor view)."""
        key = self._key(t)
        if key not in self.lifted:
            base = self.param_names.get(t.untyped_storage().data_ptr())
            if base is not None and key[1:4] != self._param_layout.get(base):
                base += "_t" if t.ndim == 2 and t.stride()[0] == 1 else "_v"
            # keep t alive: a freed temporary's storage address could be reused by another tensor
            self.lifted[key] = (t, self.b.const(to_numpy(t), name=base or self.hints.get(key, name)))
        return self.lifted[key][1]

    _param_layout: dict = field(default_factory=dict)

    def register_param(self, name: str, t) -> None:
        clean = name.replace(".", "_")
        self.param_names.setdefault(t.untyped_storage().data_ptr(), clean)
        self._param_layout.setdefault(clean, (t.storage_offset(), tuple(t.shape), tuple(t.stride())))

    def atom(self, v, dtype: str | None = None):
        """A Var/Literal for v (Var, concrete tensor, or Python scalar), cast to dtype if given."""
        import torch
        if isinstance(v, torch.Tensor):
            if v.ndim == 0:
                v = v.item()
            else:
                v = self.lift(v.to(torch_dtype(dtype)) if dtype and ir_dtype(v.dtype) != dtype else v)
        if isinstance(v, Literal):
            v = v.value
        if isinstance(v, Var):
            return v if dtype is None or v.dtype == dtype else self.b.cast(v, dtype=dtype)
        if isinstance(v, (bool, int, float)):
            dt = dtype or ("bool" if isinstance(v, bool) else "i64" if isinstance(v, int) else "f32")
            return Literal(_pyval(v, dt), dt)
        raise TypeError(f"cannot make an IR operand of {v!r}")


def _pyval(v, dt):
    from ..ir.dtypes import FLOATS
    return float(v) if dt in FLOATS else bool(v) if dt == "bool" else int(v)


def _is_var(x) -> bool:
    if isinstance(x, Var):
        return True
    if isinstance(x, (list, tuple)):
        return any(_is_var(i) for i in x)
    return False


def _bind(target, args, kwargs) -> list:
    """Positional values for every schema argument (kwargs and defaults filled in)."""
    out = []
    for i, a in enumerate(target._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            out.append(args[i])
        elif a.name in kwargs:
            out.append(kwargs[a.name])
        else:
            out.append(a.default_value if a.has_default_value() else None)
    return out


def _check(node, out, b: Builder):
    """The translation must match torch's own shape; dtypes are cast to torch's if they differ."""
    val = node.meta.get("val")
    if isinstance(out, Var) and val is not None and hasattr(val, "shape"):
        if tuple(out.shape) != tuple(val.shape):
            raise AssertionError(f"{node.format_node()}: IR shape {out.shape} != torch {tuple(val.shape)}")
        want = ir_dtype(val.dtype)
        return out if out.dtype == want else b.cast(out, dtype=want)
    return out


def _call(cx: Ctx, node, env):
    import torch
    from .aten import ATEN
    load = lambda a: env[a] if isinstance(a, torch.fx.Node) else a  # noqa: E731
    args = torch.fx.node.map_aggregate(node.args, load)
    kwargs = torch.fx.node.map_aggregate(node.kwargs, load)
    if node.target is operator.getitem:
        return args[0][args[1]]
    name = str(node.target)
    if name in _SKIP:
        return None
    if not _is_var(args) and not _is_var(kwargs):  # constant folding
        with torch.no_grad():
            out = node.target(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            cx.hints[cx._key(out)] = node.name  # (out stays alive in env, so its key stays unique)
        return out
    fn = ATEN.get(name) or ATEN.get(name.rsplit(".", 1)[0])
    if fn is None:
        raise UnsupportedOpError(f"{name} at {where_from(node)}: not supported by the torch frontend")
    try:
        return _check(node, fn(cx, node, *_bind(node.target, args, kwargs)), cx.b)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(f"{name} at {where_from(node)}: {e}") from None


def _export(module, args, kwargs):
    import torch
    A = torch.ops.aten
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecation noise
        try:
            ep = torch.export.export(module, args, kwargs=kwargs or None)
        except Exception as e:  # torch raises many types; the user needs to know export failed
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TapeoutError(f"torch.export failed for {type(module).__name__}: {first}") from e
        table = torch.export.default_decompositions()
        for op in (A.linear.default, A.scaled_dot_product_attention.default):
            table.pop(op, None)
        return ep.run_decompositions(table)


def _no_kv_cache(module, kwargs):
    """A transformers model whose config has use_cache=True (the default) returns a DynamicCache,
    which torch.export cannot flatten: export it with use_cache=False (explicit kwargs win). The
    program computes the same outputs, without the cache tensors."""
    import inspect
    if not getattr(getattr(module, "config", None), "use_cache", False) or "use_cache" in (kwargs or {}):
        return kwargs
    if "use_cache" not in inspect.signature(module.forward).parameters:
        return kwargs
    return {**(kwargs or {}), "use_cache": False}


def _placeholders(cx: Ctx, ep, env) -> None:
    from torch.export.graph_signature import InputKind
    nodes = [n for n in ep.graph.nodes if n.op == "placeholder"]
    for node, spec in zip(nodes, ep.graph_signature.input_specs):
        if spec.kind == InputKind.USER_INPUT:
            val = node.meta["val"]
            if not hasattr(val, "shape"):       # a Python scalar kwarg (use_cache=False): a constant
                env[node] = val
                continue
            env[node] = cx.b.input(tuple(val.shape), ir_dtype(val.dtype), name=node.name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = ep.state_dict.get(spec.target)
            t = ep.constants[spec.target] if t is None else t
            cx.register_param(spec.target, t)
            env[node] = t.detach()
        else:
            raise UnsupportedOpError(f"export input {spec.target} of kind {spec.kind.name}")


def from_torch(module, example_inputs, example_kwargs=None, name: str | None = None) -> Program:
    """Export `module` (in eval mode) on `example_inputs` (a tensor or tuple) to an IR Program.
    Program inputs follow the user inputs' order; outputs are the flattened tensor outputs."""
    import torch
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    module = module.eval()
    ep = _export(module, args, _no_kv_cache(module, example_kwargs))
    cx = Ctx(Builder(name or type(module).__name__))
    env = cx.env
    _placeholders(cx, ep, env)
    outs = []
    for node in ep.graph.nodes:
        if node.op == "call_function" and node not in env:
            env[node] = _call(cx, node, env)
        elif node.op == "output":
            outs = [env[a] if isinstance(a, torch.fx.Node) else a for a in node.args[0]]
    specs = ep.graph_signature.output_specs
    outs = [o for o, s in zip(outs, specs) if s.kind.name == "USER_OUTPUT" and o is not None]
    return dce(cx.b.build(*(cx.atom(o) if isinstance(o, torch.Tensor) else o for o in outs)))
