"""Build programs one equation at a time, with shapes/dtypes inferred and checked.

    b = Builder("mlp")
    x = b.input((4, 64), "f32", name="x")
    w = b.const(np.random.randn(128, 64).astype(np.float32), name="w")
    h = b.linear(x, w)                # == b.op("linear", x, w)
    y = b.relu(h)
    prog = b.build(y)                 # Program; outputs may be several Vars
"""
from __future__ import annotations

import numpy as np

from .core import Atom, Eqn, Literal, Program, Var
from .dtypes import DTYPES, FLOATS, dtype_name
from .ops import RULES, IRError, infer


class Builder:
    def __init__(self, name: str = "program"):
        self.name = name
        self.inputs: list[Var] = []
        self.consts: dict[str, np.ndarray] = {}
        self.eqns: list[Eqn] = []
        self._names: set[str] = set()
        self._n = 0

    def _fresh(self, hint: str) -> str:
        hint = "".join(c if c.isalnum() or c == "_" else "_" for c in hint) or "v"
        name = hint
        while name in self._names:
            self._n += 1
            name = f"{hint}_{self._n}"
        self._names.add(name)
        return name

    def input(self, shape, dtype: str, name: str = "x") -> Var:
        if dtype not in DTYPES:
            raise IRError(f"input {name}: unknown dtype {dtype!r}")
        v = Var(self._fresh(name), tuple(int(d) for d in shape), dtype)
        self.inputs.append(v)
        return v

    def const(self, value, name: str = "c", dtype: str | None = None) -> Var:
        """A weight/const tensor (stored in Program.consts). dtype casts it (RNE for floats)."""
        arr = np.asarray(value)
        arr = arr.astype(DTYPES[dtype]) if dtype else arr
        dtype_name(arr.dtype)  # KeyError for unsupported dtypes
        v = Var(self._fresh(name), tuple(arr.shape), dtype_name(arr.dtype))
        self.consts[v.name] = np.ascontiguousarray(arr).reshape(arr.shape)   # (0-d stays 0-d)
        return v

    def _atom(self, a, like: str | None) -> Atom:
        if isinstance(a, (Var, Literal)):
            return a
        if isinstance(a, (bool, np.bool_)):
            return Literal(bool(a), "bool")
        if np.isscalar(a) or (isinstance(a, np.ndarray) and a.ndim == 0):
            if like is None:
                like = "f32" if isinstance(a, (float, np.floating)) else "i64"
            return Literal(a.item() if isinstance(a, np.generic) else a, like)
        return self.const(a)

    def op(self, op: str, *inputs, name: str | None = None, **params):
        """Append `op(*inputs, **params)`; returns the output Var (a tuple for multi-output ops).
        Python scalars become Literals of the dtype of the first Var operand."""
        like = next((a.dtype for a in inputs if isinstance(a, Var) and (op != "where" or a.dtype != "bool")), None)
        atoms = tuple(self._atom(a, like) for a in inputs)
        avals, params = infer(op, [(a.shape, a.dtype) for a in atoms], params)
        outs = tuple(Var(self._fresh(name or op), s, d) for s, d in avals)
        self.eqns.append(Eqn(op, atoms, outs, params))
        return outs if op == "split" else outs[0]

    def __getattr__(self, op: str):
        if op in RULES:
            return lambda *a, **p: self.op(op, *a, **p)
        raise AttributeError(op)

    def build(self, *outputs) -> Program:
        outs = tuple(o for out in outputs for o in (out if isinstance(out, (tuple, list)) else (out,)))
        return Program(tuple(self.inputs), dict(self.consts), tuple(self.eqns), outs, self.name)


def check(prog: Program) -> None:
    """Verify single assignment, definition before use, and every eqn against its shape rule."""
    defined: dict[str, Var] = {}
    for v in (*prog.inputs, *prog.constvars):
        if v.name in defined:
            raise IRError(f"{prog.name}: {v.name} defined twice")
        defined[v.name] = v
    for i, e in enumerate(prog.eqns):
        for a in e.inputs:
            if isinstance(a, Var) and defined.get(a.name) != a:
                raise IRError(f"{prog.name}: eqn {i} ({e.op}) uses undefined or mistyped {a}")
        avals, params = infer(e.op, [(a.shape, a.dtype) for a in e.inputs], dict(e.params))
        if [(o.shape, o.dtype) for o in e.outputs] != avals or params != dict(e.params):
            raise IRError(f"{prog.name}: eqn {i} ({e}) disagrees with its rule: {avals} {params}")
        for o in e.outputs:
            if o.name in defined:
                raise IRError(f"{prog.name}: {o.name} assigned twice")
            defined[o.name] = o
    for o in prog.outputs:
        if isinstance(o, Var) and defined.get(o.name) != o:
            raise IRError(f"{prog.name}: output {o} is not defined")


__all__ = ["Builder", "check", "FLOATS"]
