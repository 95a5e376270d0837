"""The IR: a flat, single-assignment program, like a jaxpr.

    Program(inputs=(Var...), consts={name: ndarray}, eqns=(Eqn...), outputs=(Var|Literal...))
    Eqn(op, inputs=(Var|Literal...), outputs=(Var...), params={...})

Every Var is assigned once (a program input, a const, or one eqn output) and carries its
static shape and dtype (an IR dtype name, see `tapeout.ir.dtypes`). Op semantics live in
`tapeout.ir.interp` (the numpy reference interpreter); shape/dtype rules in `tapeout.ir.ops`.
Build programs with `tapeout.ir.builder.Builder`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .dtypes import DTYPES, dtype_name


@dataclass(frozen=True)
class Var:
    """A value: unique `name` within its program, static `shape`, IR `dtype` name."""
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{self.name}:{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Literal:
    """A scalar constant written inline in an equation (shape ())."""
    value: Any
    dtype: str
    shape: tuple[int, ...] = ()

    def array(self) -> np.ndarray:
        return np.asarray(self.value).astype(DTYPES[self.dtype])

    def __str__(self) -> str:
        return f"{self.value!r}:{self.dtype}"


Atom = Var | Literal


@dataclass(frozen=True, eq=False)
class Eqn:
    """`outputs = op(*inputs, **params)`; params are plain Python values (ints, floats,
    strings, bools, None, tuples of those)."""
    op: str
    inputs: tuple[Atom, ...]
    outputs: tuple[Var, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __str__(self) -> str:
        outs = " ".join(map(str, self.outputs))
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        args = " ".join(a.name if isinstance(a, Var) else str(a) for a in self.inputs)
        return f"{outs} = {self.op}[{ps}] {args}" if ps else f"{outs} = {self.op} {args}"


@dataclass(frozen=True, eq=False)
class Program:
    """inputs (runtime arguments), consts (weights, by Var name), eqns, outputs."""
    inputs: tuple[Var, ...]
    consts: Mapping[str, np.ndarray]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Atom, ...]
    name: str = "program"

    @property
    def constvars(self) -> tuple[Var, ...]:
        return tuple(Var(n, tuple(a.shape), dtype_name(a.dtype)) for n, a in self.consts.items())

    def vars(self) -> dict[str, Var]:
        """Every Var of the program by name (inputs, consts, eqn outputs)."""
        out = {v.name: v for v in (*self.inputs, *self.constvars)}
        out.update((v.name, v) for e in self.eqns for v in e.outputs)
        return out

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.eqns:
            counts[e.op] = counts.get(e.op, 0) + 1
        return counts

    def pretty(self, max_consts: int = 8) -> str:
        """jaxpr-like text: `{ lambda consts ; inputs . let eqns in (outputs) }`."""
        cv = self.constvars
        shown = " ".join(map(str, cv[:max_consts])) + (f" ...(+{len(cv) - max_consts})" if len(cv) > max_consts else "")
        head = f"{{ lambda {shown} ; {' '.join(map(str, self.inputs))} . let"
        body = [f"    {e}" for e in self.eqns]
        outs = ", ".join(o.name if isinstance(o, Var) else str(o) for o in self.outputs)
        return "\n".join([head, *body, f"  in ({outs}) }}"])

    def __str__(self) -> str:
        return self.pretty()
