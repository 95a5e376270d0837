"""The tapeout IR: a flat single-assignment program (like a jaxpr) and its numpy reference
interpreter. See docs/ir-contract.md and docs/ir.md.

    from tapeout.ir import Builder, evaluate
    b = Builder(); x = b.input((2, 3), "f32"); y = b.exp(x); prog = b.build(y)
    evaluate(prog, np.ones((2, 3), np.float32))
"""
from .builder import Builder, check
from .core import Eqn, Literal, Program, Var
from .dtypes import DTYPES, FLOATS, INTS, dtype_name, np_dtype
from .interp import IMPLS, evaluate
from .ops import OPS, IRError, infer

__all__ = ["Builder", "check", "Eqn", "Literal", "Program", "Var", "DTYPES", "FLOATS", "INTS",
           "dtype_name", "np_dtype", "IMPLS", "evaluate", "OPS", "IRError", "infer"]
