"""A compiled NPU program: per-core instruction streams plus the memory image they expect.

`Tensor` places one tensor in a memory space (contiguous, row-major); `Program` lists the
streams, the DRAM/shared-buffer sizes, the constants to preload (weights) and where the
inputs go and the outputs come from. Constants may be abstract (shape only, `data=None`)
for count-only simulation of models whose weights are never materialised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .isa import DTYPES, encode_stream, program_to_asm


@dataclass(frozen=True)
class Tensor:
    name: str
    space: str          # "dram" or "shared"
    addr: int
    shape: tuple
    dtype: str          # ISA dtype name; "u8" for packed int4

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Program:
    chip: object                    # tapeout.chip.Chip
    streams: list                   # streams[core] = [instruction, ...]
    dram_bytes: int
    shared_bytes: int
    inputs: tuple = ()              # Tensor per model input, in order
    outputs: tuple = ()             # Tensor per model output, in order
    constants: tuple = ()           # (Tensor, np.ndarray | None) preloaded before the run
    meta: dict = field(default_factory=dict)

    @property
    def n_instructions(self) -> int:
        return sum(len(s) for s in self.streams)

    def asm(self) -> str:
        head = [f"# tapeout NPU program for {self.chip.name}: {len(self.streams)} cores, "
                f"{self.n_instructions} instructions, dram {self.dram_bytes} B, shared {self.shared_bytes} B"]
        head += [f"# input  {t.name}: {t.space}@{hex(t.addr)} {t.dtype}{list(t.shape)}" for t in self.inputs]
        head += [f"# output {t.name}: {t.space}@{hex(t.addr)} {t.dtype}{list(t.shape)}" for t in self.outputs]
        return "\n".join(head) + "\n" + program_to_asm(self.streams)

    def binary(self) -> bytes:
        """Streams as fixed-width words: u32 core count, u32 length per core, then the words."""
        counts = np.array([len(self.streams)] + [len(s) for s in self.streams], dtype="<u4").tobytes()
        return counts + b"".join(encode_stream(s) for s in self.streams)
