"""ONNX -> IR: `from_onnx(path) -> Program` (opset >= 13; written against 17-21).

Walks the graph once in order. Values are IR Vars or, when known at import time, numpy
arrays (initializers, Constant nodes, and anything computed only from them: Shape arithmetic,
masks). A node whose inputs are all known is folded: evaluated by the reference interpreter
(or by a numpy-only rule for shape ops) instead of emitted. Each op maps through the table in
`tapeout.frontends.onnx_ops`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TapeoutError, UnsupportedOpError
from ..ir.builder import Builder
from ..ir.core import Literal, Var
from ..ir.dtypes import dtype_name
from ..ir.interp import evaluate
from ..ir.passes import dce

# ONNX TensorProto element type -> IR dtype
ONNX_DTYPES = {1: "f32", 2: "u8", 3: "i8", 5: "i16", 6: "i32", 7: "i64", 9: "bool", 10: "f16",
               11: "f64", 16: "bf16", 17: "f8e4m3", 19: "f8e5m2", 21: "u4", 22: "i4"}
MIN_OPSET = 13
_STATIC = {"Shape", "Size"}  # known at import time even on runtime tensors (static shapes)
# never folded: a quantized constant weight must reach the compiler as int data + scales
_NO_FOLD = {"DequantizeLinear"}


def ir_dtype(elem_type: int, where: str) -> str:
    if elem_type not in ONNX_DTYPES:
        raise TapeoutError(f"{where}: ONNX element type {elem_type} not supported")
    return ONNX_DTYPES[elem_type]


@dataclass
class OnnxCtx:
    """Translation state: the builder, and the node being translated (for messages)."""
    b: Builder
    where: str = ""
    lifted: dict = field(default_factory=dict)   # id(array) -> (array, const Var): lift each weight once
    names: dict = field(default_factory=dict)    # id(array) -> initializer name
    n_outputs: int = 1                           # outputs the ONNX node declares

    def atom(self, v, dtype: str | None = None):
        """IR operand for a Var or a known array (0-d arrays become Literals)."""
        if isinstance(v, np.ndarray):
            if v.ndim == 0:
                dt = dtype or dtype_name(v.dtype)
                return Literal(v.item() if dt != "bool" else bool(v), dt)
            if id(v) not in self.lifted:
                self.lifted[id(v)] = (v, self.b.const(v, name=self.names.get(id(v), "c")))
            v = self.lifted[id(v)][1]
        if isinstance(v, Var) and dtype is not None and v.dtype != dtype:
            return self.b.cast(v, dtype=dtype)
        return v

    def known(self, v, what: str) -> np.ndarray:
        """The value of an input that must be known at import time (shapes, axes, pads)."""
        if not isinstance(v, np.ndarray):
            raise UnsupportedOpError(f"{self.where}: {what} must be a constant (dynamic shapes are not supported)")
        return v


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fold(node, ins, attrs, fn, outer: OnnxCtx):
    """Evaluate `fn` on known inputs with the reference interpreter -> list of arrays."""
    cx = OnnxCtx(Builder("fold"), outer.where, n_outputs=outer.n_outputs)
    outs = fn(cx, ins, attrs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    atoms = [cx.atom(o) for o in outs]
    return [np.asarray(r) for r in evaluate(cx.b.build(*atoms))]


def _load(path: Path):
    import onnx
    from google.protobuf.message import DecodeError
    if not path.is_file():
        raise TapeoutError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise TapeoutError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    if not model.graph.node and not model.graph.output:
        raise TapeoutError(f"{path}: ONNX model has an empty graph (truncated or corrupt file?)")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise TapeoutError(f"{path}: opset {opset} is too old (need >= {MIN_OPSET}; re-export with opset 17)")
    return model


def _inputs(model, b: Builder, env: dict, path, shapes: dict, names: dict) -> None:
    from onnx import numpy_helper
    for init in model.graph.initializer:
        env[init.name] = numpy_helper.to_array(init)
        names[id(env[init.name])] = init.name
    for vi in model.graph.input:
        if vi.name in env:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        shape = tuple(shapes.get(vi.name, dims))
        if any(d is None for d in shape):
            raise TapeoutError(f"{path}: input {vi.name!r} has dynamic shape {dims}; pass input_shapes={{name: shape}}")
        env[vi.name] = b.input(shape, ir_dtype(tt.elem_type, f"{path}: input {vi.name}"), name=vi.name)


def from_onnx(path, input_shapes: dict | None = None, name: str | None = None):
    """Import an ONNX model file. input_shapes fixes dynamic input dims: {input name: shape}."""
    from .onnx_ops import NUMPY_ONLY, ONNX
    path = Path(path)
    model = _load(path)
    b = Builder(name or path.stem)
    env: dict = {}
    lifted: dict = {}
    names: dict = {}
    _inputs(model, b, env, path, input_shapes or {}, names)
    for i, node in enumerate(model.graph.node):
        where = f"{path}: node {node.name or i!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{where}: custom domain {node.domain!r} not supported")
        try:
            ins = [env[n] if n else None for n in node.input]
        except KeyError as e:
            raise TapeoutError(f"{where}: input {e} is not defined (corrupt graph?)") from None
        attrs = _attrs(node)
        known = all(x is None or isinstance(x, np.ndarray) for x in ins)
        if node.op_type in NUMPY_ONLY and (known or node.op_type in _STATIC):
            outs = NUMPY_ONLY[node.op_type](ins, attrs)
        elif node.op_type in ONNX:
            fn = ONNX[node.op_type]
            cx = OnnxCtx(b, where, lifted, names, len(node.output))
            fold = known and ins and node.op_type not in _NO_FOLD
            outs = _fold(node, ins, attrs, fn, cx) if fold else fn(cx, ins, attrs)
        elif node.op_type in NUMPY_ONLY:
            raise UnsupportedOpError(f"{where}: only supported on constant inputs")
        else:
            raise UnsupportedOpError(f"{where}: op not supported by the ONNX importer")
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        for n, o in zip(node.output, outs):
            if n:
                env[n] = o
    outs = []
    for o in model.graph.output:
        v = env.get(o.name)
        if v is None:
            raise TapeoutError(f"{path}: graph output {o.name!r} is never computed")
        outs.append(OnnxCtx(b, str(path), lifted, names).atom(v))
    return dce(b.build(*outs))
