"""The stable Python API of the virtual NPU.

    prog = tapeout.compile(model, example_inputs, chip="tapeout-n7", dtype="bf16")
    outs = prog(*inputs)          # list of numpy arrays
    prog.stats                    # cycles, seconds, engine_busy_cycles, utilization, bytes, instructions
    prog.trace("out.json")        # Perfetto / Chrome trace of the last run

`model` is a torch nn.Module (with example_inputs), a path to an .onnx file, a HF config dict,
or an IR `Program` (tapeout.ir). `chip` is a preset name, a chip file path or a Chip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..chip import load_chip
from ..errors import TapeoutError
from ..frontends import load
from ..ir.core import Program as IRProgram
from .compiler import MODES, compile_ir
from .sim import Result, simulate, write_trace

DTYPE_ALIASES = {"int4": "int4-weights", "int4w": "int4-weights", "w4": "int4-weights", "fp8e4m3": "fp8"}


def to_ir(model, example_inputs=None):
    """Any supported model form -> IR Program (frontends are imported only when needed)."""
    if isinstance(model, IRProgram):
        return model
    if isinstance(model, Path):
        model = str(model)
    if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    return load(model, example_inputs)


class NpuProgram:
    """A model compiled for the virtual NPU; call it like a function."""

    def __init__(self, ir, program, chip, dtype: str):
        self.ir, self.program, self.chip, self.dtype = ir, program, chip, dtype
        self.last: Result | None = None

    def __call__(self, *inputs) -> list[np.ndarray]:
        arrs = [_numpy(x) for x in inputs]
        self.last = simulate(self.program, arrs)
        return [_out(a, t) for a, t in zip(self.last.outputs, self.program.meta["ir_outputs"])]

    def run(self, *inputs, count_only: bool = False) -> dict:
        """Simulate; count_only skips the arithmetic (no inputs needed) and returns the stats."""
        if count_only:
            self.last = simulate(self.program, (), count_only=True)
            return self.last.stats
        self(*inputs)
        return self.last.stats

    @property
    def stats(self) -> dict:
        if self.last is None:
            self.last = simulate(self.program, (), count_only=True)
        return self.last.stats

    def trace(self, path) -> str:
        if self.last is None:
            self.stats
        write_trace(self.last, path)
        return str(path)

    def asm(self) -> str:
        return self.program.asm()

    def save(self, path) -> str:
        """Write the assembly text (.asm) or the binary encoding (any other suffix)."""
        p = Path(path)
        if p.suffix == ".asm":
            p.write_text(self.asm())
        else:
            p.write_bytes(self.program.binary())
        return str(p)

    def __repr__(self) -> str:
        return (f"NpuProgram({self.ir.name!r} on {self.chip.name}, dtype={self.dtype}, "
                f"{self.program.n_instructions} instructions)")


def compile(model, example_inputs=None, chip="tapeout-n7", dtype: str = "bf16") -> NpuProgram:  # noqa: A001
    """Compile `model` for the NPU described by `chip` with the given numeric `dtype`."""
    mode = DTYPE_ALIASES.get(dtype, dtype)
    if mode not in MODES:
        raise TapeoutError(f"dtype {dtype!r}: choose one of {', '.join(MODES)}")
    c = load_chip(chip)
    ir = to_ir(model, example_inputs)
    return NpuProgram(ir, compile_ir(ir, c, mode), c, mode)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _out(a: np.ndarray, ir_dtype: str) -> np.ndarray:
    if ir_dtype in ("i64", "i32", "i16", "i8", "u8", "i4", "u4"):
        return np.rint(a).astype(np.int64)
    if ir_dtype == "bool":
        return a != 0
    return a.astype(np.float32)
