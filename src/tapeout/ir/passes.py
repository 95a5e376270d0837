"""Small whole-program passes (pure functions Program -> Program)."""
from __future__ import annotations

from .core import Program, Var


def dce(prog: Program) -> Program:
    """Drop equations whose outputs are never used, and consts nobody reads."""
    live = {o.name for o in prog.outputs if isinstance(o, Var)}
    kept = []
    for e in reversed(prog.eqns):
        if any(o.name in live for o in e.outputs):
            kept.append(e)
            live.update(a.name for a in e.inputs if isinstance(a, Var))
    consts = {n: a for n, a in prog.consts.items() if n in live}
    return Program(prog.inputs, consts, tuple(reversed(kept)), prog.outputs, prog.name)
