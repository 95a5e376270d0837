"""The NPU instruction set: frozen dataclasses, a binary encoding and an assembly text form.

The ISA is derived from the chip file the way VTA derives its ISA from `vta_config.json`:
`Geometry.from_chip` reads the array size, SRAM sizes, core count and vector lanes, and the
instructions address those resources. Every instruction's docstring states its meaning as
loop pseudo-code; `tapeout.npu.sim` executes exactly that.

Machine model (per core): five in-order queues -- `dma`, `mxu` (the systolic array), `vec` (the
vector unit), `epi` (the array's output stage, where the chip has one) and `pool` (the pooling
engine, where the chip has one) -- fed from one instruction stream in program order. Each queue
keeps a completion counter `done[q]` (instructions of queue q finished so far on this core).
Every instruction carries five wait fields:

    before issuing: wait until done[q] >= w_q for every queue q (w_dma, w_mxu, w_vec, w_epi, w_pool)

which are the dependency tokens between a core's queues (counting semaphores). `BARRIER`
synchronises all queues of all cores. Memory spaces: `dram` (off-chip), `shared` (global
buffer shared by the cores) and `sram` (the issuing core's scratchpad); addresses are byte
offsets, strides are in elements.
"""
from __future__ import annotations

import dataclasses
import math
import struct
import textwrap
from dataclasses import dataclass
from typing import Iterable

import ml_dtypes
import numpy as np

from ..chip import Chip
from ..errors import TapeoutError

SPACES = ("dram", "shared", "sram")
QUEUES = ("dma", "mxu", "vec", "epi", "pool")   # epi: the array's output stage; pool: the pooling engine
# ISA dtype name -> numpy dtype ("u8" carries packed int4 / e2m1 pairs, low nibble first;
# "fp4" is an unpacked e2m1 value per byte, "e8m0" an unsigned power-of-two scale)
DTYPES = {
    "fp32": np.dtype(np.float32), "bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16),
    "fp8": np.dtype(ml_dtypes.float8_e4m3fn), "int8": np.dtype(np.int8), "int32": np.dtype(np.int32),
    "u8": np.dtype(np.uint8), "fp8e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "fp4": np.dtype(ml_dtypes.float4_e2m1fn), "e8m0": np.dtype(ml_dtypes.float8_e8m0fnu),
}
DTYPE_NAMES = tuple(DTYPES)
# vector functions: name -> arity (operands a, b, c) and unit ("alu" or "sfu": special functions)
VFUNCS = {
    "fill": (0, "alu"), "copy": (1, "alu"), "neg": (1, "alu"), "abs": (1, "alu"), "relu": (1, "alu"),
    "adds": (1, "alu"), "muls": (1, "alu"), "maxs": (1, "alu"), "mins": (1, "alu"), "rsubs": (1, "alu"),
    "pows": (1, "sfu"), "exp": (1, "sfu"), "log": (1, "sfu"), "sqrt": (1, "sfu"), "rsqrt": (1, "sfu"),
    "recip": (1, "sfu"), "tanh": (1, "sfu"), "sigmoid": (1, "sfu"), "silu": (1, "sfu"), "gelu": (1, "sfu"),
    "gelu_tanh": (1, "sfu"), "sin": (1, "sfu"), "cos": (1, "sfu"), "erf": (1, "sfu"),
    "add": (2, "alu"), "sub": (2, "alu"), "mul": (2, "alu"), "max": (2, "alu"), "min": (2, "alu"),
    "div": (2, "sfu"), "pow": (2, "sfu"), "lt": (2, "alu"), "le": (2, "alu"), "gt": (2, "alu"),
    "ge": (2, "alu"), "eq": (2, "alu"), "ne": (2, "alu"),
    "select": (2, "alu"), "tril": (1, "alu"), "subexp": (2, "sfu"), "where": (3, "alu"), "fma": (3, "alu"),
    "floor": (1, "alu"), "ceil": (1, "alu"), "round": (1, "alu"), "trunc": (1, "alu"), "sign": (1, "alu"),
    "mods": (1, "sfu"), "divs": (1, "sfu"), "axpys": (2, "alu"),
}
VFUNC_NAMES = tuple(VFUNCS)
RFUNCS = ("sum", "max", "min", "absmax", "argmax", "argmin")
NIBBLES = ("int4", "e2m1")
OPERANDS = ("none", "full", "row", "col", "one")   # a Fixpipe stage's second operand: its (rs, cs) below
OPERAND_STRIDES = {"none": None, "full": lambda n: (n, 1), "row": lambda n: (0, 1), "col": lambda n: (1, 0),
                   "one": lambda n: (0, 0)}
FIX_STAGES = 5              # elementwise stages one Fixpipe word holds   # how Dequant4 reads a 4-bit code: two's complement -8..7, or fp4 e2m1
WORD_BYTES = 128  # every instruction encodes to one fixed-width little-endian word of this size


class IsaError(TapeoutError):
    """An instruction or program that does not fit the ISA (bad field, bad assembly text)."""


# ----------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """The chip resources the ISA addresses, derived from the chip file."""
    name: str
    cores: int
    rows: int           # systolic array rows (the K side of a weight tile)
    cols: int           # systolic array columns (the N side of a weight tile)
    dataflow: str
    sram_bytes: int     # per core
    shared_bytes: int
    lanes: int
    macs: dict          # dtype -> MACs per cycle per core
    epilogue_ops: frozenset = frozenset()   # op kinds the array's output stage fuses (chip.EPILOGUE_OPS)
    pooling: bool = False                    # a pooling engine
    conv: tuple | None = None                # the conv engine's (channels_in, channels_out, pixels) per cycle

    @staticmethod
    def from_chip(chip: Chip) -> "Geometry":
        m = chip.cores.matrix
        if chip.chip.kind not in ("npu", "tpu") or not m.array_rows or not m.array_cols:
            raise IsaError(f"{chip.path or chip.name}: cores.matrix: the virtual NPU needs an npu/tpu chip "
                           f"with array_rows and array_cols (got kind {chip.chip.kind!r})")
        return Geometry(chip.name, chip.cores.count, m.array_rows, m.array_cols, m.dataflow,
                        int(chip.cores.sram.bytes), int(chip.shared_buffer.bytes), chip.cores.vector.lanes,
                        dict(m.macs_per_cycle), frozenset(m.epilogue.ops if m.epilogue else ()),
                        chip.cores.pooling is not None,
                        (m.conv.channels_in, m.conv.channels_out, m.conv.pixels) if m.conv else None)

    def pe_macs(self, dtype: str) -> int:
        """MACs per processing element per cycle for `dtype` (2 where 8-bit MACs split a 16-bit one)."""
        key = {"int32": "int8"}.get(dtype, dtype)
        n = self.macs.get(key, 0) / (self.rows * self.cols)
        return max(1, int(round(n))) if n else 0

    def tile_cols(self, dtype: str) -> int:
        """Output columns one fold covers: array columns x MACs per PE for the input dtype."""
        return self.cols * max(1, self.pe_macs(dtype))


# ----------------------------------------------------------------------------- instructions

def _e(kind: str, default=dataclasses.MISSING):
    """A field with its encoding kind: 'u8' 'u32' 'i32' 'u64' 'f32' or an enum table name."""
    return dataclasses.field(default=default, metadata={"kind": kind})


_WAITS = tuple(f"w_{q}" for q in QUEUES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dma:
    """Strided 3-D copy between memory spaces (queue: dma).

        for i in range(n0): for j in range(n1): for k in range(n2):
            dst_space[dst_addr + (i*ds0 + j*ds1 + k*ds2) * size(dtype)] =
                src_space[src_addr + (i*ss0 + j*ss1 + k*ss2) * size(dtype)]      # one element

    A stride of 0 on the source broadcasts; permuted strides transpose; negative strides walk
    backwards from the address (a reversed slice). `sram` is the issuing core's scratchpad. Time: latency of the far memory + bytes / (that memory's bandwidth / cores).
    """
    src_space: str = _e("space")
    src_addr: int = _e("u64")
    dst_space: str = _e("space")
    dst_addr: int = _e("u64")
    dtype: str = _e("dtype")
    n0: int = _e("u32")
    n1: int = _e("u32")
    n2: int = _e("u32")
    ss0: int = _e("i32", 0)
    ss1: int = _e("i32", 0)
    ss2: int = _e("i32", 1)
    ds0: int = _e("i32", 0)
    ds1: int = _e("i32", 0)
    ds2: int = _e("i32", 1)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather:
    """Indirect row copy, e.g. an embedding lookup (queue: dma).

        for i in range(n):
            r = sram.int32[idx_addr + 4*i]
            for j in range(cols):
                dst_space[dst_addr + (i*cols + j)*size(dtype)] = src_space[src_addr + (r*src_stride + j)*size(dtype)]
    """
    src_space: str = _e("space")
    src_addr: int = _e("u64")
    dst_space: str = _e("space")
    dst_addr: int = _e("u64")
    dtype: str = _e("dtype")
    idx_addr: int = _e("u32")
    n: int = _e("u32")
    cols: int = _e("u32")
    src_stride: int = _e("u32")
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Matmul:
    """Tile GEMM on the weight-stationary systolic array, all operands in SRAM (queue: mxu).

        T = tile_cols(in_dtype)                     # array columns x MACs per PE (tile_cols(fp4) when
                                                    #   w_fp4 and the chip has fp4 MACs)
        for n0 in range(0, N, T):                   # one fold: weights w[k0:k0+rows, n0:n0+T]
          for k0 in range(0, K, rows):              #   are loaded into the PEs (stationary),
            for m in range(M):                      #   then the M rows of `a` stream through
              for n in range(n0, min(n0 + T, N)):
                s = sum(f32(a[m*lda + k]) * f32(w[k*ldw + n]) for k in range(k0, min(k0 + rows, K)))
                acc[m*ldc + n] = (acc[m*ldc + n] if (acc_in or k0 > 0) else 0) + s

    in_dtype bf16/fp16/fp8 accumulate in fp32, int8 in int32 (exact). w_fp4 = 1: the weights are
    e2m1 codes times their block scales (a dequant4 output, exact in in_dtype), which an array with
    fp4 multipliers (macs_per_cycle.fp4) takes at its fp4 rate; same sums. Time: folds =
    ceil(K/rows) * ceil(N/T); the weights of the next fold load while rows stream, so the array
    is occupied folds * max(M, rows) cycles and the result is ready rows (first weight load) +
    rows + cols - 2 (skew fill and drain) cycles later; back-to-back Matmuls overlap that latency.
    Alone: cycles = rows + folds * max(M, rows) + rows + cols - 2.
    conv = 1 (a convolution, on a chip whose file declares cores.matrix.conv): the same sums on the
    sliding-window conv engine, (ci, co, px) = (channels_in, channels_out, pixels): folds =
    ceil(K/ci) * ceil(N/co), each occupying max(ceil(M/px), ci) cycles (px output pixels per cycle
    share a fold's weights, which load in ci cycles), ready ci + ci + co - 2 cycles later.
    """
    acc_addr: int = _e("u32")
    a_addr: int = _e("u32")
    w_addr: int = _e("u32")
    M: int = _e("u32")
    K: int = _e("u32")
    N: int = _e("u32")
    lda: int = _e("u32")
    ldw: int = _e("u32")
    ldc: int = _e("u32")
    in_dtype: str = _e("dtype")
    acc_dtype: str = _e("dtype")
    acc_in: int = _e("u8", 0)
    w_fp4: int = _e("u8", 0)
    conv: int = _e("u8", 0)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vec:
    """Elementwise op on strided 2-D SRAM tiles (queue: vec).

        for r in range(rows): for c in range(cols):
            x = f32(a[a_addr + r*a_rs + c*a_cs]); y = f32(b[...]); z = f32(c[...])   # as the arity needs
            d[d_addr + r*d_rs + c*d_cs] = cast(d_dtype, func(x, y, z, imm))

    A stride of 0 broadcasts (a row vector has rs=0, a per-row scalar cs=0). The vector unit
    computes in fp32; `cast` rounds to nearest even; integer results saturate (int8 to [-128, 127],
    int32 to [-2^31, 2^31-1], u8 to [0, 255]) and NaN becomes 0; fp8 e4m3 saturates to +-448,
    fp8e5m2 overflows to inf. funcs: see VFUNCS (`adds`, `muls`, ... use imm);
    the less obvious ones: fill = imm (reads nothing); select = x if y != 0 else imm; tril = x if c <= r + imm else -inf
    (causal masking, r and c are the tile's row and column); subexp = exp(imm * (x - y)); fma = x*y + z; axpys = x + y*imm;
    where = y if x != 0 else z; comparisons give 1.0 or 0.0; round = to nearest, ties to even;
    trunc = toward zero; sign = -1, 0 or 1 (NaN stays NaN); mods = x mod imm, floored (Python's %);
    divs = x / imm (correctly rounded, unlike muls by 1/imm).
    Time: ceil(rows*cols / lanes) on the ALU, or / special_functions_per_cycle for sfu funcs.
    """
    func: str = _e("vfunc")
    rows: int = _e("u32")
    cols: int = _e("u32")
    d_addr: int = _e("u32")
    d_dtype: str = _e("dtype")
    d_rs: int = _e("i32")
    d_cs: int = _e("i32", 1)
    a_addr: int = _e("u32")
    a_dtype: str = _e("dtype")
    a_rs: int = _e("i32")
    a_cs: int = _e("i32", 1)
    b_addr: int = _e("u32", 0)
    b_dtype: str = _e("dtype", "fp32")
    b_rs: int = _e("i32", 0)
    b_cs: int = _e("i32", 0)
    c_addr: int = _e("u32", 0)
    c_dtype: str = _e("dtype", "fp32")
    c_rs: int = _e("i32", 0)
    c_cs: int = _e("i32", 0)
    imm: float = _e("f32", 0.0)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reduce:
    """Row reduction of a strided 2-D SRAM tile (queue: vec).

        for r in range(rows):
            d[d_addr + r*d_rs] = cast(d_dtype, imm * func(f32(a[a_addr + r*a_rs + c*a_cs]) for c in range(cols)))

    func: sum, max, min, absmax (max of |x|), argmax/argmin (first index; imm ignored). Time: ceil(rows*cols / lanes) + log2(cols).
    """
    func: str = _e("rfunc")
    rows: int = _e("u32")
    cols: int = _e("u32")
    d_addr: int = _e("u32")
    d_dtype: str = _e("dtype")
    d_rs: int = _e("i32")
    a_addr: int = _e("u32")
    a_dtype: str = _e("dtype")
    a_rs: int = _e("i32")
    a_cs: int = _e("i32", 1)
    imm: float = _e("f32", 1.0)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scan:
    """Inclusive prefix sum along each row of a strided 2-D SRAM tile (queue: vec).

        for r in range(rows):
            s = 0.0                                                    # fp32, in column order
            for c in range(cols):
                s = s + f32(a[a_addr + r*a_rs + c*a_cs])
                d[d_addr + r*d_rs + c*d_cs] = cast(d_dtype, s)

    Time: ceil(rows*cols / lanes) + log2(cols), like Reduce (a parallel prefix over the lanes).
    """
    rows: int = _e("u32")
    cols: int = _e("u32")
    d_addr: int = _e("u32")
    d_dtype: str = _e("dtype")
    d_rs: int = _e("i32")
    d_cs: int = _e("i32", 1)
    a_addr: int = _e("u32")
    a_dtype: str = _e("dtype")
    a_rs: int = _e("i32")
    a_cs: int = _e("i32", 1)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dequant4:
    """4-bit weight dequantisation with group (block) scales: int4 or fp4 e2m1 (queue: vec).

        for r in range(rows): for c in range(cols):
            byte = u8[a_addr + r*(cols//2) + c//2]
            nib = byte & 0xF if c % 2 == 0 else byte >> 4
            q = signed4(nib) if code == int4 else e2m1(nib)      # -8..7, or 0 0.5 1 1.5 2 3 4 6 (bit 3: sign)
            d[d_addr + r*d_rs + c] = cast(d_dtype, (q * f32(s[s_addr + (r // group)*s_rs + c])) * imm)

    imm is the per-tensor scale (NVFP4), 1 otherwise; both products in fp32.
    Time: ceil(rows*cols / lanes) on the ALU.
    """
    rows: int = _e("u32")
    cols: int = _e("u32")
    group: int = _e("u32")
    d_addr: int = _e("u32")
    d_dtype: str = _e("dtype")
    d_rs: int = _e("i32")
    a_addr: int = _e("u32")
    s_addr: int = _e("u32")
    s_dtype: str = _e("dtype")
    s_rs: int = _e("i32")
    code: str = _e("nibble", "int4")
    imm: float = _e("f32", 1.0)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Barrier:
    """Synchronise every queue of every core, unless the program lists it as chained (sim._Chain).

        t = max(end time of every instruction issued before, on all queues of all cores)
        every queue of every core resumes at t + barrier_cycles
    """
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


_FIXPIPE_DOC = """The array's output stage: an accumulator tile through up to 5 elementwise stages into SRAM (queue: mxu).

    for r in range(M): for c in range(N):
        x = f32(acc[acc_addr + (r*N + c)*size(acc_dtype)])
        for k in range(n):                                   # stage k: func f<k>, operand o<k>, imm<k>
            rs, cs = {full: (N, 1), row: (0, 1), col: (1, 0), one: (0, 0)}[o<k>_kind]   # none: no operand
            y = f32(o<k>[o<k>_addr + (r*rs + c*cs)*size(o<k>_dtype)])
            x = f<k>(y, x, imm<k>) if sw<k> else f<k>(x, y, imm<k>)              # as Vec's func(a, b, imm), fp32
        d[d_addr + (r*N + c)*size(d_dtype)] = cast(d_dtype, x)              # Vec's rounding and saturation

f<k> is a Vec function of one or two operands (each stage computes exactly what a Vec with a = x
(b = x when sw<k>) and d_dtype fp32 would). Runs on the matrix unit's output stage
(cores.matrix.epilogue), its own queue: it drains one tile's accumulators (w_mxu: after its
Matmuls) while the array runs the next tiles' Matmuls (w_epi: before one reuses its accumulators).
Time: max(ceil(M*N / elements_per_cycle), SRAM bytes / sram bandwidth) on the output stage.
"""

_FIX_FIELDS = [(n, k, dataclasses.MISSING) for n, k in (("acc_addr", "u32"), ("acc_dtype", "dtype"), ("M", "u32"),
                                                          ("N", "u32"), ("d_addr", "u32"), ("d_dtype", "dtype"))]
_FIX_FIELDS += [("n", "u8", 0)] + [f for k in range(FIX_STAGES) for f in (
    (f"f{k}", "vfunc", "copy"), (f"o{k}_addr", "u32", 0), (f"o{k}_dtype", "dtype", "fp32"),
    (f"o{k}_kind", "operand", "none"), (f"sw{k}", "u8", 0), (f"imm{k}", "f32", 0.0))]
_FIX_FIELDS += [(w, "u32", 0) for w in _WAITS]
Fixpipe = dataclasses.make_dataclass(
    "Fixpipe", [(n, str if k in ("vfunc", "dtype", "operand") else float if k == "f32" else int, _e(k, d))
                for n, k, d in _FIX_FIELDS],
    frozen=True, slots=True, kw_only=True, namespace={"__doc__": _FIXPIPE_DOC, "__module__": __name__})


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """Window max or sum of a strided 2-D SRAM tile on the pooling engine (queue: vec).

        for r in range(rows): for c in range(cols):
            s = func(f32(a[a_addr + (r*a_rs + c*a_cs + i*a_ks + j*a_ls)*size(a_dtype)])
                     for i in range(kh) for j in range(kw))               # as Reduce over the kh*kw window
            d[d_addr + (r*d_rs + c*d_cs)*size(d_dtype)] = cast(d_dtype, imm * s)

    func: max or sum (sum with imm = 1/window is an average pool). Runs on the pooling engine
    (cores.pooling), its own queue beside the vector unit.
    Time: ceil(rows*cols*kh*kw / elements_per_cycle) + vector_pipeline_cycles on the pooling engine.
    """
    func: str = _e("rfunc")
    rows: int = _e("u32")
    cols: int = _e("u32")
    kh: int = _e("u32")
    kw: int = _e("u32")
    d_addr: int = _e("u32")
    d_dtype: str = _e("dtype")
    d_rs: int = _e("i32")
    d_cs: int = _e("i32", 1)
    a_addr: int = _e("u32")
    a_dtype: str = _e("dtype")
    a_rs: int = _e("i32")
    a_cs: int = _e("i32")
    a_ks: int = _e("i32")
    a_ls: int = _e("i32")
    imm: float = _e("f32", 1.0)
    w_dma: int = _e("u32", 0)
    w_mxu: int = _e("u32", 0)
    w_vec: int = _e("u32", 0)
    w_epi: int = _e("u32", 0)
    w_pool: int = _e("u32", 0)


# opcode -> class; the mnemonic is the lower-case class name
OPCODES = {1: Dma, 2: Gather, 3: Matmul, 4: Vec, 5: Reduce, 6: Dequant4, 7: Barrier, 8: Scan, 9: Fixpipe, 10: Pool}
QUEUE_OF = {Dma: "dma", Gather: "dma", Matmul: "mxu", Vec: "vec", Reduce: "vec", Dequant4: "vec", Barrier: None,
            Scan: "vec", Fixpipe: "epi", Pool: "pool"}
_OPCODE_OF = {cls: op for op, cls in OPCODES.items()}
_MNEMONIC = {cls.__name__.lower(): cls for cls in OPCODES.values()}
_ENUMS = {"space": SPACES, "dtype": DTYPE_NAMES, "vfunc": VFUNC_NAMES, "rfunc": RFUNCS, "nibble": NIBBLES,
          "operand": OPERANDS}
_STRUCT = {"u8": "B", "u32": "I", "i32": "i", "u64": "Q", "f32": "f", **{k: "B" for k in _ENUMS}}


def fields_of(cls) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, f.metadata["kind"]) for f in dataclasses.fields(cls))


_LAYOUT = {cls: (fields_of(cls), struct.Struct("<B" + "".join(_STRUCT[k] for _, k in fields_of(cls))))
           for cls in OPCODES.values()}
assert all(s.size <= WORD_BYTES for _, s in _LAYOUT.values())


# ----------------------------------------------------------------------------- binary encoding

def encode(ins) -> bytes:
    """One instruction -> WORD_BYTES little-endian bytes: opcode, then its fields in order."""
    fields, st = _LAYOUT[type(ins)]
    vals = []
    for name, kind in fields:
        v = getattr(ins, name)
        vals.append(_ENUMS[kind].index(v) if kind in _ENUMS else v)
    try:
        return st.pack(_OPCODE_OF[type(ins)], *vals).ljust(WORD_BYTES, b"\0")
    except struct.error as e:
        raise IsaError(f"{type(ins).__name__.lower()}: field out of range: {e}") from None


def decode(word: bytes):
    cls = OPCODES.get(word[0])
    if cls is None:
        raise IsaError(f"unknown opcode {word[0]}")
    fields, st = _LAYOUT[cls]
    vals = st.unpack_from(word)[1:]
    kw = {name: (_ENUMS[kind][v] if kind in _ENUMS else v) for (name, kind), v in zip(fields, vals)}
    return cls(**kw)


def encode_stream(instrs: Iterable) -> bytes:
    return b"".join(encode(i) for i in instrs)


def decode_stream(data: bytes) -> list:
    if len(data) % WORD_BYTES:
        raise IsaError(f"instruction stream of {len(data)} bytes is not a multiple of {WORD_BYTES}")
    return [decode(data[i:i + WORD_BYTES]) for i in range(0, len(data), WORD_BYTES)]


# ----------------------------------------------------------------------------- assembly text

def _fmt(kind: str, v) -> str:
    if kind == "f32":
        return repr(float(np.float32(v)))
    if kind in ("u64", "u32") and v >= 4096:
        return hex(v)
    return str(v)


def to_asm(ins) -> str:
    """`mnemonic key=value ...`, every field that differs from its default."""
    parts = [type(ins).__name__.lower()]
    for f in dataclasses.fields(ins):
        v = getattr(ins, f.name)
        if f.default is dataclasses.MISSING or v != f.default:
            parts.append(f"{f.name}={_fmt(f.metadata['kind'], v)}")
    return " ".join(parts)


def from_asm(line: str):
    words = line.split("#", 1)[0].split()
    if not words:
        raise IsaError("empty assembly line")
    cls = _MNEMONIC.get(words[0])
    if cls is None:
        raise IsaError(f"unknown mnemonic {words[0]!r} (known: {', '.join(_MNEMONIC)})")
    kinds = dict(fields_of(cls))
    kw = {}
    for w in words[1:]:
        key, eq, val = w.partition("=")
        if not eq or key not in kinds:
            raise IsaError(f"{words[0]}: bad operand {w!r} (fields: {', '.join(kinds)})")
        kind = kinds[key]
        if kind in _ENUMS:
            if val not in _ENUMS[kind]:
                raise IsaError(f"{words[0]}: {key}={val!r} is not one of {', '.join(_ENUMS[kind])}")
            kw[key] = val
        else:
            kw[key] = float(val) if kind == "f32" else int(val, 0)
    try:
        return cls(**kw)
    except TypeError as e:
        raise IsaError(f"{words[0]}: {e}") from None


def program_to_asm(streams: list[list]) -> str:
    out = []
    for c, s in enumerate(streams):
        out.append(f".core {c}")
        out.extend("  " + to_asm(i) for i in s)
    return "\n".join(out) + "\n"


def program_from_asm(text: str) -> list[list]:
    streams: list[list] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        if s.startswith(".core"):
            streams.append([])
            continue
        if not streams:
            raise IsaError(f"line {n}: instruction before the first '.core' directive")
        try:
            streams[-1].append(from_asm(s))
        except IsaError as e:
            raise IsaError(f"line {n}: {e}") from None
    return streams


def queue_of(ins) -> str | None:
    return QUEUE_OF[type(ins)]


def dtype_size(name: str) -> int:
    return DTYPES[name].itemsize


def _engine(geom: Geometry, conv: bool) -> tuple[int, int, int] | None:
    return geom.conv if conv and geom.conv else None


def matmul_cycles(geom: Geometry, M: int, K: int, N: int, in_dtype: str, overlap: bool = True,
                  conv: bool = False) -> int:
    """Cycles of one Matmul (see its docstring). overlap=False: each fold loads its weights,
    then streams and drains alone (SCALE-Sim's WS model: folds * (2*rows + cols + M - 2))."""
    e = _engine(geom, conv)
    if e:
        folds = math.ceil(K / e[0]) * math.ceil(N / e[1])
        if not overlap:
            return folds * (2 * e[0] + e[1] + math.ceil(M / e[2]) - 2)
        return matmul_latency(geom, conv) + matmul_occupancy(geom, M, K, N, in_dtype, conv)
    folds = math.ceil(K / geom.rows) * math.ceil(N / geom.tile_cols(in_dtype))
    if not overlap:
        return folds * (2 * geom.rows + geom.cols + M - 2)
    return matmul_latency(geom) + folds * max(M, geom.rows)


def matmul_occupancy(geom: Geometry, M: int, K: int, N: int, in_dtype: str, conv: bool = False) -> int:
    """Cycles the array (or, for a conv on a chip with one, the conv engine) is busy with one Matmul
    when Matmuls run back to back."""
    e = _engine(geom, conv)
    if e:
        ci, co, px = e
        return math.ceil(K / ci) * math.ceil(N / co) * max(math.ceil(M / px), ci)
    return math.ceil(K / geom.rows) * math.ceil(N / geom.tile_cols(in_dtype)) * max(M, geom.rows)


def matmul_latency(geom: Geometry, conv: bool = False) -> int:
    """First weight load + skew fill/drain: cycles from the last fold's issue to its result."""
    e = _engine(geom, conv)
    if e:
        return e[0] + e[0] + e[1] - 2
    return geom.rows + geom.rows + geom.cols - 2


# which op kind of the chip file's cores.matrix.epilogue.ops a Fixpipe stage is: (func, operand kind) -> kind
EPILOGUE_KIND = {
    **{("mul", k): "scale" for k in ("row", "col", "one")}, ("muls", "none"): "scale",
    **{("add", k): "bias" for k in ("row", "col", "one")}, ("adds", "none"): "bias",
    ("add", "full"): "residual", ("axpys", "full"): "residual", ("mul", "full"): "multiply", ("relu", "none"): "relu",
    **{(f, "none"): "requantize" for f in ("trunc", "round", "floor", "ceil", "maxs", "mins")},
    **{(f, "none"): f for f in ("silu", "gelu", "gelu_tanh", "sigmoid", "tanh")},
}
NARROW_STORES = ("int8", "u8", "fp8", "fp8e5m2", "int32")   # a Fixpipe store to these needs "requantize"


def reference_markdown() -> str:
    """The ISA reference (docs/npu.md embeds it; a test keeps the two identical)."""
    out = [f"Every instruction is one {WORD_BYTES}-byte little-endian word: a u8 opcode, then its fields in "
           "order (u8/u32/i32/u64/f32; enums as u8 indices into the tables below). Assembly: "
           "`mnemonic field=value ...` (fields at their default may be omitted).", ""]
    for op, cls in OPCODES.items():
        doc = (cls.__doc__ or "").strip("\n")
        first, _, rest = doc.partition("\n")
        out += [f"### `{cls.__name__.lower()}` (opcode {op}, queue {QUEUE_OF[cls] or 'all'})", "", first.strip(), "",
                "```", *textwrap.dedent(rest).strip("\n").splitlines(), "```", "",
                "Fields: " + ", ".join(f"`{n}`:{k}" for n, k in fields_of(cls)), ""]
    out += ["Enums: space " + ", ".join(SPACES) + "; dtype " + ", ".join(DTYPE_NAMES) + "; vector func "
            + ", ".join(VFUNC_NAMES) + "; reduce func " + ", ".join(RFUNCS) + "; nibble " + ", ".join(NIBBLES)
            + "; operand " + ", ".join(OPERANDS) + "."]
    return "\n".join(out) + "\n"
