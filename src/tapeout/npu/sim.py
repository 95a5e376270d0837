"""The virtual NPU: executes a Program and times it in the same walk.

One walk, many uses (VTA's simulator): every instruction is visited once, in each core's
program order. The walk computes its start and end cycle on its queue (dma, mxu or vec of
its core) -- after the queue is free and after the instructions its wait fields name have
completed -- and, unless `count_only`, performs the loop of its docstring with numpy on the
modelled DRAM, shared buffer and per-core SRAM. Program order is a valid topological order
(waits only name earlier instructions), so executing in that order is exact; the timeline
records the overlap the queues would achieve. `Barrier` closes a segment: all cores reach it
before any continues.

Costs, all derived from the chip file plus `data/npu_timing.toml`:
  Dma      bytes / (bandwidth of the far memory / cores) cycles on the dma queue; the result is
           ready `latency` later (DMAs pipeline: the queue is free while the latency elapses)
  Matmul   folds * max(M, rows) cycles on the mxu queue, ready matmul_latency later (isa.Matmul)
  Vec etc. ceil(elements / lanes) (ALU) or / special_functions_per_cycle (SFU), at least the
           SRAM bytes touched / sram bandwidth, + vector_pipeline_cycles
  Fixpipe  ceil(M*N / epilogue elements_per_cycle), at least its SRAM bytes / sram bandwidth, on the
           epi queue (the array's output stage: it overlaps the Matmuls that follow it)
  Pool     ceil(window elements / pooling elements_per_cycle) + vector_pipeline_cycles on the pool queue
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..sourced import table
from .isa import (_WAITS, DTYPES, OPERAND_STRIDES, QUEUE_OF, QUEUES, VFUNCS, Barrier, Dequant4, Dma, Fixpipe,
                  Gather, Geometry, IsaError, Matmul, Pool, Reduce, Scan, Vec, matmul_cycles, matmul_latency,
                  matmul_occupancy)
from .program import Program



def timing_params() -> dict:
    return table("npu_timing.toml")


@dataclass(frozen=True)
class Timing:
    """Per-core costs of the chip, in cycles."""
    geom: Geometry
    clock_hz: float
    bytes_per_cycle: dict      # space -> per-core DMA bytes per cycle
    latency: dict              # space -> cycles
    lanes: int
    sfu_per_cycle: float
    sram_bytes_per_cycle: float
    vec_overhead: int
    barrier: int
    overlap: bool
    epilogue_per_cycle: float = 0.0    # results per cycle of the array's output stage (0: none)
    pool_per_cycle: float = 0.0        # window elements per cycle of the pooling engine (0: none)

    @staticmethod
    def from_chip(chip) -> "Timing":
        p, clk, n = timing_params(), chip.cores.clock_hz, chip.cores.count
        sram_bw = chip.cores.sram.bandwidth_bytes_per_cycle
        dram_bw = chip.dram.bandwidth_bytes_per_s or chip.shared_buffer.bandwidth_bytes_per_s
        bpc = {"dram": dram_bw / n / clk, "shared": chip.shared_buffer.bandwidth_bytes_per_s / n / clk,
               "sram": sram_bw}
        lat = {k: int(round(v * clk)) for k, v in p["dma_latency_s"].items()}
        if not chip.dram.bandwidth_bytes_per_s:          # no DRAM: the "dram" space is on-chip memory
            lat["dram"] = lat["shared"]
        v, m, pool = chip.cores.vector, chip.cores.matrix, chip.cores.pooling
        epi = (m.epilogue.elements_per_cycle or m.array_cols) if m.epilogue else 0.0   # default: keeps up with the array
        return Timing(Geometry.from_chip(chip), clk, bpc, lat, v.lanes,
                      v.special_functions_per_cycle or v.lanes * p["special_function_lane_fraction"], sram_bw,
                      int(p["vector_pipeline_cycles"]), int(p["barrier_cycles"]), p["matrix_weight_buffers"] >= 2,
                      float(epi), float(pool.elements_per_cycle) if pool else 0.0)

    @property
    def queues(self) -> tuple:
        """The queues (engines) this chip has: dma, mxu, vec, and epi / pool where it has them."""
        return tuple(q for q in QUEUES if (q != "epi" or self.epilogue_per_cycle) and (q != "pool" or self.pool_per_cycle))


# ----------------------------------------------------------------------------- numerics

INT_RANGE = {k: (int(np.iinfo(d).min), int(np.iinfo(d).max)) for k, d in DTYPES.items() if d.kind in "iu"}


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    """fp32 -> ISA dtype: round to nearest even; integers saturate (NaN -> 0), fp8 e4m3 saturates
    to +-448, fp8e5m2 overflows to inf."""
    if dtype in INT_RANGE:
        lo, hi = INT_RANGE[dtype]
        y = np.rint(np.asarray(x, np.float64))
        return np.clip(np.where(np.isnan(y), 0.0, y), lo, hi).astype(DTYPES[dtype])
    if dtype == "fp8":
        return np.clip(x, -448.0, 448.0).astype(DTYPES["fp8"])
    return x.astype(DTYPES[dtype])


def _erf(x):
    # Numerical Recipes' erfc Chebyshev fit (relative error < 1.2e-7 everywhere)
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    y = 1 - t * np.exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.sign(x) * y


_F = {
    "fill": lambda a, b, c, s: a + s, "copy": lambda a, b, c, s: a, "neg": lambda a, b, c, s: -a, "abs": lambda a, b, c, s: np.abs(a),
    "relu": lambda a, b, c, s: np.maximum(a, 0), "adds": lambda a, b, c, s: a + s,
    "muls": lambda a, b, c, s: a * s, "maxs": lambda a, b, c, s: np.maximum(a, s),
    "mins": lambda a, b, c, s: np.minimum(a, s), "rsubs": lambda a, b, c, s: s - a,
    "pows": lambda a, b, c, s: np.power(a, s), "exp": lambda a, b, c, s: np.exp(a),
    "log": lambda a, b, c, s: np.log(a), "sqrt": lambda a, b, c, s: np.sqrt(a),
    "rsqrt": lambda a, b, c, s: 1 / np.sqrt(a), "recip": lambda a, b, c, s: 1 / a,
    "tanh": lambda a, b, c, s: np.tanh(a), "sigmoid": lambda a, b, c, s: 1 / (1 + np.exp(-a)),
    "silu": lambda a, b, c, s: a / (1 + np.exp(-a)),
    "gelu": lambda a, b, c, s: 0.5 * a * (1 + _erf(a * np.float32(0.7071067811865476))),
    "gelu_tanh": lambda a, b, c, s: 0.5 * a * (1 + np.tanh(np.float32(0.7978845608028654) * (a + 0.044715 * a ** 3))),
    "sin": lambda a, b, c, s: np.sin(a), "cos": lambda a, b, c, s: np.cos(a), "erf": lambda a, b, c, s: _erf(a),
    "add": lambda a, b, c, s: a + b, "sub": lambda a, b, c, s: a - b, "mul": lambda a, b, c, s: a * b,
    "max": lambda a, b, c, s: np.maximum(a, b), "min": lambda a, b, c, s: np.minimum(a, b),
    "div": lambda a, b, c, s: a / b, "pow": lambda a, b, c, s: np.power(a, b),
    "lt": lambda a, b, c, s: (a < b).astype(np.float32), "le": lambda a, b, c, s: (a <= b).astype(np.float32),
    "gt": lambda a, b, c, s: (a > b).astype(np.float32), "ge": lambda a, b, c, s: (a >= b).astype(np.float32),
    "eq": lambda a, b, c, s: (a == b).astype(np.float32), "ne": lambda a, b, c, s: (a != b).astype(np.float32),
    "where": lambda a, b, c, s: np.where(a != 0, b, c), "select": lambda a, b, c, s: np.where(b != 0, a, s),
    "subexp": lambda a, b, c, s: np.exp(s * (a - b)),
    "tril": lambda a, b, c, s: np.where(np.arange(a.shape[1])[None, :] <= np.arange(a.shape[0])[:, None] + s, a,
                                        np.float32(-np.inf)), "fma": lambda a, b, c, s: a * b + c,
    "floor": lambda a, b, c, s: np.floor(a), "ceil": lambda a, b, c, s: np.ceil(a),
    "round": lambda a, b, c, s: np.rint(a), "trunc": lambda a, b, c, s: np.trunc(a),
    "sign": lambda a, b, c, s: np.sign(a), "mods": lambda a, b, c, s: np.mod(a, s), "divs": lambda a, b, c, s: a / s,
    "axpys": lambda a, b, c, s: a + b * np.float32(s),
}
_R = {"sum": lambda x: x.sum(axis=1), "max": lambda x: x.max(axis=1), "min": lambda x: x.min(axis=1),
      "absmax": lambda x: np.abs(x).max(axis=1), "argmax": lambda x: x.argmax(axis=1).astype(np.float32),
      "argmin": lambda x: x.argmin(axis=1).astype(np.float32)}
assert set(_F) == set(VFUNCS)


class Memory:
    """Byte-addressed DRAM, shared buffer and per-core SRAM as numpy uint8 arrays."""

    def __init__(self, prog: Program, geom: Geometry):
        up = lambda n: max(64, -(-int(n) // 64) * 64)
        self.bufs = {"dram": np.zeros(up(prog.dram_bytes), np.uint8),
                     "shared": np.zeros(up(prog.shared_bytes), np.uint8)}
        self.sram = [np.zeros(up(geom.sram_bytes), np.uint8) for _ in range(geom.cores)]

    def buf(self, space: str, core: int) -> np.ndarray:
        return self.sram[core] if space == "sram" else self.bufs[space]

    def view(self, space: str, core: int, addr: int, dtype: str, shape, strides) -> np.ndarray:
        buf, dt = self.buf(space, core), DTYPES[dtype]
        es = dt.itemsize
        if addr % es:
            raise IsaError(f"{space} address {addr:#x} is not aligned to {dtype}")
        lo = addr + sum((n - 1) * s for n, s in zip(shape, strides) if s < 0) * es     # negative strides
        hi = addr + (sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) + 1) * es
        if lo < 0 or hi > len(buf) or min(shape) <= 0:
            raise IsaError(f"{space} access {dtype}{list(shape)} strides {list(strides)} at {addr:#x} "
                           f"is outside the {len(buf)}-byte memory")
        raw = np.dtype(f"u{es}")               # stride over plain unsigned words (as_strided rejects some ml_dtypes)
        base = buf[lo:lo + (len(buf) - lo) // es * es].view(raw)[(addr - lo) // es:]
        return as_strided(base, tuple(shape), tuple(s * es for s in strides), writeable=True).view(dt)

    def write(self, space, addr, arr: np.ndarray, dtype: str):
        a = np.ascontiguousarray(arr.astype(DTYPES[dtype], copy=False))
        self.bufs[space][addr:addr + a.nbytes] = a.view(np.uint8).reshape(-1)

    def read(self, space, addr, shape, dtype) -> np.ndarray:
        n = math.prod(shape) * DTYPES[dtype].itemsize
        return self.bufs[space][addr:addr + n].view(DTYPES[dtype]).reshape(shape).copy()


# ----------------------------------------------------------------------------- execution (functional)

def _f32(x):
    return x.astype(np.float32, copy=False)


def exec_dma(m: Memory, c: int, i: Dma):
    shape = (i.n0, i.n1, i.n2)
    src = m.view(i.src_space, c, i.src_addr, i.dtype, shape, (i.ss0, i.ss1, i.ss2))
    dst = m.view(i.dst_space, c, i.dst_addr, i.dtype, shape, (i.ds0, i.ds1, i.ds2))
    dst[...] = src.copy()


def exec_gather(m: Memory, c: int, i: Gather):
    idx = m.view("sram", c, i.idx_addr, "int32", (i.n,), (1,))
    rows = int(idx.max()) + 1 if i.n else 1
    if idx.min() < 0:
        raise IsaError(f"gather: negative row index {int(idx.min())}")
    table = m.view(i.src_space, c, i.src_addr, i.dtype, (rows, i.cols), (i.src_stride, 1))
    m.view(i.dst_space, c, i.dst_addr, i.dtype, (i.n, i.cols), (i.cols, 1))[...] = table[idx]


def exec_matmul(m: Memory, c: int, i: Matmul):
    a = m.view("sram", c, i.a_addr, i.in_dtype, (i.M, i.K), (i.lda, 1))
    w = m.view("sram", c, i.w_addr, i.in_dtype, (i.K, i.N), (i.ldw, 1))
    acc = m.view("sram", c, i.acc_addr, i.acc_dtype, (i.M, i.N), (i.ldc, 1))
    if i.acc_dtype == "int32":    # exact: |products| < 2^14, sums far below 2^53
        s = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        acc[...] = (acc.astype(np.int64) + s if i.acc_in else s).astype(np.int32)
    else:
        s = _f32(a) @ _f32(w)
        acc[...] = cast(_f32(acc) + s if i.acc_in else s, i.acc_dtype)


def _operand(m, c, rows, cols, addr, dtype, rs, cs):
    return _f32(m.view("sram", c, addr, dtype, (rows, cols), (rs, cs)))


def exec_vec(m: Memory, c: int, i: Vec):
    ar = VFUNCS[i.func][0]
    a = _operand(m, c, i.rows, i.cols, i.a_addr, i.a_dtype, i.a_rs, i.a_cs) if ar else np.zeros((i.rows, i.cols), np.float32)
    b = _operand(m, c, i.rows, i.cols, i.b_addr, i.b_dtype, i.b_rs, i.b_cs) if ar > 1 else None
    z = _operand(m, c, i.rows, i.cols, i.c_addr, i.c_dtype, i.c_rs, i.c_cs) if ar > 2 else None
    with np.errstate(all="ignore"):
        r = _F[i.func](a, b, z, np.float32(i.imm))
    m.view("sram", c, i.d_addr, i.d_dtype, (i.rows, i.cols), (i.d_rs, i.d_cs))[...] = cast(_f32(r), i.d_dtype)


def exec_reduce(m: Memory, c: int, i: Reduce):
    a = _operand(m, c, i.rows, i.cols, i.a_addr, i.a_dtype, i.a_rs, i.a_cs)
    r = _R[i.func](a) * (np.float32(i.imm) if i.func[:3] != "arg" else np.float32(1))
    m.view("sram", c, i.d_addr, i.d_dtype, (i.rows,), (i.d_rs,))[...] = cast(_f32(r), i.d_dtype)


def exec_scan(m: Memory, c: int, i: Scan):
    a = _operand(m, c, i.rows, i.cols, i.a_addr, i.a_dtype, i.a_rs, i.a_cs)
    r = np.cumsum(a, axis=1, dtype=np.float32)                       # sequential, in fp32
    m.view("sram", c, i.d_addr, i.d_dtype, (i.rows, i.cols), (i.d_rs, i.d_cs))[...] = cast(r, i.d_dtype)


def exec_dequant4(m: Memory, c: int, i: Dequant4):
    packed = m.view("sram", c, i.a_addr, "u8", (i.rows, i.cols // 2), (i.cols // 2, 1))
    nib = np.empty((i.rows, i.cols), np.uint8)
    nib[:, 0::2], nib[:, 1::2] = packed & 0xF, packed >> 4
    if i.code == "e2m1":
        q = nib.view(DTYPES["fp4"]).astype(np.float32)
    else:
        q = np.where(nib > 7, nib.astype(np.int16) - 16, nib).astype(np.float32)
    s = _operand(m, c, -(-i.rows // i.group), i.cols, i.s_addr, i.s_dtype, i.s_rs, 1)
    r = q * np.repeat(s, i.group, axis=0)[:i.rows]
    r = r * np.float32(i.imm) if i.imm != 1.0 else r
    m.view("sram", c, i.d_addr, i.d_dtype, (i.rows, i.cols), (i.d_rs, 1))[...] = cast(r, i.d_dtype)


def fixpipe_stages(i) -> list:
    """A Fixpipe's stages as (func, operand kind, operand addr, operand dtype, swapped, imm)."""
    return [(getattr(i, f"f{k}"), getattr(i, f"o{k}_kind"), getattr(i, f"o{k}_addr"), getattr(i, f"o{k}_dtype"),
             getattr(i, f"sw{k}"), getattr(i, f"imm{k}")) for k in range(i.n)]


def exec_fixpipe(m: Memory, c: int, i):
    x = _operand(m, c, i.M, i.N, i.acc_addr, i.acc_dtype, i.N, 1)
    for func, kind, addr, dtype, sw, imm in fixpipe_stages(i):
        y = None if kind == "none" else _operand(m, c, i.M, i.N, addr, dtype, *OPERAND_STRIDES[kind](i.N))
        a, b = (y, x) if sw else (x, y)
        with np.errstate(all="ignore"):
            x = _f32(_F[func](a, b, None, np.float32(imm)))
    m.view("sram", c, i.d_addr, i.d_dtype, (i.M, i.N), (i.N, 1))[...] = cast(x, i.d_dtype)


def exec_pool(m: Memory, c: int, i: Pool):
    win = m.view("sram", c, i.a_addr, i.a_dtype, (i.rows, i.cols, i.kh, i.kw), (i.a_rs, i.a_cs, i.a_ks, i.a_ls))
    a = np.ascontiguousarray(_f32(win)).reshape(i.rows * i.cols, i.kh * i.kw)     # Reduce's operand layout
    r = (_R[i.func](a) * np.float32(i.imm)).reshape(i.rows, i.cols)
    m.view("sram", c, i.d_addr, i.d_dtype, (i.rows, i.cols), (i.d_rs, i.d_cs))[...] = cast(_f32(r), i.d_dtype)


EXEC = {Dma: exec_dma, Gather: exec_gather, Matmul: exec_matmul, Vec: exec_vec, Reduce: exec_reduce,
        Dequant4: exec_dequant4, Scan: exec_scan, Fixpipe: exec_fixpipe, Pool: exec_pool}


# ----------------------------------------------------------------------------- costs (cycles, bytes)

def _dma_cost(t: Timing, i):
    n = i.n0 * i.n1 * i.n2 if type(i) is Dma else i.n * i.cols
    nbytes = n * DTYPES[i.dtype].itemsize
    far = [s for s in (i.src_space, i.dst_space) if s != "sram"] or ["sram"]
    bpc = min(t.bytes_per_cycle[s] for s in far)
    lat = max(t.latency[s] for s in far)
    traffic = {i.src_space: nbytes}
    traffic[i.dst_space] = traffic.get(i.dst_space, 0) + nbytes
    return math.ceil(nbytes / bpc), lat, traffic


def _matmul_cost(t: Timing, i: Matmul):
    es, ea = DTYPES[i.in_dtype].itemsize, DTYPES[i.acc_dtype].itemsize
    nbytes = (i.M * i.K + i.K * i.N) * es + i.M * i.N * ea * (2 if i.acc_in else 1)
    dt = "fp4" if i.w_fp4 and t.geom.pe_macs("fp4") else i.in_dtype      # native fp4 x in_dtype multipliers
    conv = bool(i.conv)
    if not t.overlap:
        return matmul_cycles(t.geom, i.M, i.K, i.N, dt, False, conv), 0, {"sram": nbytes}
    return matmul_occupancy(t.geom, i.M, i.K, i.N, dt, conv), matmul_latency(t.geom, conv), {"sram": nbytes}


def _vec_cost(t: Timing, i):
    rows, cols = i.rows, i.cols
    n = rows * cols
    if type(i) is Vec:
        ar, unit = VFUNCS[i.func]
        nbytes = n * (DTYPES[i.d_dtype].itemsize + (DTYPES[i.a_dtype].itemsize if ar else 0)
                      + (DTYPES[i.b_dtype].itemsize if ar > 1 else 0) + (DTYPES[i.c_dtype].itemsize if ar > 2 else 0))
        per = t.sfu_per_cycle if unit == "sfu" else t.lanes
        cyc = math.ceil(n / per)
    elif type(i) is Reduce:
        nbytes = n * DTYPES[i.a_dtype].itemsize + rows * DTYPES[i.d_dtype].itemsize
        cyc = math.ceil(n / t.lanes) + max(1, cols).bit_length()
    elif type(i) is Scan:
        nbytes = n * (DTYPES[i.a_dtype].itemsize + DTYPES[i.d_dtype].itemsize)
        cyc = math.ceil(n / t.lanes) + max(1, cols).bit_length()
    else:  # Dequant4
        nbytes = n // 2 + n * DTYPES[i.d_dtype].itemsize
        cyc = math.ceil(n / t.lanes)
    return max(cyc, math.ceil(nbytes / t.sram_bytes_per_cycle)) + t.vec_overhead, 0, {"sram": nbytes}


def fixpipe_cycles(t: Timing, M: int, N: int, sram_bytes: int) -> int:
    """Cycles a Fixpipe occupies the array's output stage (see isa.Fixpipe)."""
    if not t.epilogue_per_cycle:
        raise IsaError(f"fixpipe: chip {t.geom.name} has no matrix output stage (cores.matrix.epilogue)")
    return max(math.ceil(M * N / t.epilogue_per_cycle), math.ceil(sram_bytes / t.sram_bytes_per_cycle))


def pool_cycles(t: Timing, window_elements: int) -> int:
    """Cycles a Pool occupies the pooling engine (see isa.Pool)."""
    if not t.pool_per_cycle:
        raise IsaError(f"pool: chip {t.geom.name} has no pooling engine (cores.pooling)")
    return math.ceil(window_elements / t.pool_per_cycle) + t.vec_overhead


def _fixpipe_cost(t: Timing, i):
    n = i.M * i.N
    nbytes = n * DTYPES[i.d_dtype].itemsize + sum(
        {"full": n, "row": i.N, "col": i.M, "one": 1}.get(kind, 0) * DTYPES[dt].itemsize
        for _, kind, _, dt, _, _ in fixpipe_stages(i))
    return fixpipe_cycles(t, i.M, i.N, nbytes), 0, {"sram": nbytes}


def _pool_cost(t: Timing, i: Pool):
    n = i.rows * i.cols * i.kh * i.kw
    nbytes = n * DTYPES[i.a_dtype].itemsize + i.rows * i.cols * DTYPES[i.d_dtype].itemsize
    return pool_cycles(t, n), 0, {"sram": nbytes}


COST = {Dma: _dma_cost, Gather: _dma_cost, Matmul: _matmul_cost, Vec: _vec_cost, Reduce: _vec_cost,
        Dequant4: _vec_cost, Scan: _vec_cost, Fixpipe: _fixpipe_cost, Pool: _pool_cost}
QIDX = {cls: QUEUES.index(q) for cls, q in QUEUE_OF.items() if q}


# ----------------------------------------------------------------------------- the walk

@dataclass(frozen=True)
class Result:
    outputs: list                  # numpy arrays (None in count-only mode)
    stats: dict
    events: list                   # (core, queue index, start, end, instruction)
    clock_hz: float
    barriers: list = ()            # cycle at which each barrier released (kernel boundaries)


def simulate(prog: Program, inputs=(), count_only: bool = False, timing: Timing | None = None) -> Result:
    """Run `prog`; `inputs` are numpy arrays in the order of prog.inputs. `timing` overrides the
    costs derived from the chip (e.g. Timing.from_chip(chip) with overlap=False).

    A barrier listed in prog.meta["chained"] (the compiler lists those between conv kernels on a chip
    with a conv engine) does not stop the cores: the kernel after it issues while the one before
    drains (see `_Chain`). Execution order is still segment by segment, so the numerics are the same."""
    t = timing or Timing.from_chip(prog.chip)
    mem = None if count_only else _load(prog, t.geom, inputs)
    ncores = len(prog.streams)
    nq = len(QUEUES)
    free = [[0] * nq for _ in range(ncores)]            # cycle each queue is next free
    done = [tuple([] for _ in QUEUES) for _ in range(ncores)]   # completion cycle of each instruction, per queue
    busy, stall = [0] * nq, [0] * nq
    traffic: dict = {"dram": 0, "shared": 0, "sram": 0}
    events: list = []
    pos = [0] * ncores
    release, releases = 0, []
    chained = frozenset(prog.meta.get("chained", ()))
    chain = _Chain(ncores) if chained else None
    seg = 0
    while True:
        if chain is not None:
            chain.begin(seg - 1 in chained, seg in chained)
        for c in range(ncores):
            pos[c] = _run_segment(prog.streams[c], pos[c], c, t, mem, free[c], done[c], busy, stall, traffic, events,
                                  chain)
        ends = [max(max(f), *(d[-1] for d in dn if d)) if any(dn) else max(f) for f, dn in zip(free, done)]
        release = max(ends + [release] + (chain.end if chain is not None else []))
        if all(pos[c] >= len(prog.streams[c]) for c in range(ncores)):
            break
        if not all(pos[c] < len(prog.streams[c]) for c in range(ncores)):
            raise IsaError("barrier count differs between cores")
        releases.append(release)
        if seg in chained:        # two kernels in flight at most: the next starts once the one before this is done
            gate = releases[-2] + t.barrier if len(releases) > 1 else 0
            for c in range(ncores):
                free[c][:] = [max(f, gate) for f in free[c]]
            chain.gate = gate
        else:
            release += t.barrier
            for c in range(ncores):
                free[c][:] = [release] * nq
        for c in range(ncores):
            pos[c] += 1                                  # step over the barrier
        seg += 1
    outs = None if count_only else [_output(mem.read(o.space, o.addr, o.shape, o.dtype)) for o in prog.outputs]
    return Result(outs, _stats(prog, t, release, busy, stall, traffic), events, t.clock_hz, releases)


FAR = ("dram", "shared")


def _far_ranges(i) -> list:
    """(space, first byte, end byte, writes) of what a Dma / Gather reads and writes outside the
    core's SRAM: the bounding byte range of each strided access (a Gather's table: all of it above
    its base)."""
    es = DTYPES[i.dtype].itemsize
    out = []
    if type(i) is Dma:
        shape = (i.n0, i.n1, i.n2)
        for space, addr, st, w in ((i.src_space, i.src_addr, (i.ss0, i.ss1, i.ss2), False),
                                   (i.dst_space, i.dst_addr, (i.ds0, i.ds1, i.ds2), True)):
            if space in FAR:
                lo = addr + sum((n - 1) * s for n, s in zip(shape, st) if s < 0) * es
                hi = addr + (sum((n - 1) * s for n, s in zip(shape, st) if s > 0) + 1) * es
                out.append((space, lo, hi, w))
    else:
        if i.src_space in FAR:
            out.append((i.src_space, i.src_addr, 1 << 62, False))
        if i.dst_space in FAR:
            out.append((i.dst_space, i.dst_addr, i.dst_addr + i.n * i.cols * es, True))
    return out


class _Chain:
    """Timing of chained kernels (a barrier the compiler marked chained), in the spirit of the
    Hanguang 800's 'operation-fused coarse-grained instructions' and memory engine:

    - the kernel after a chained barrier (k+1) starts once kernel k-1 has finished on every core
      (+ barrier cycles): at most two kernels are in flight, and they use alternate halves of each
      core's SRAM (the compiler's `Compiler.sram`), so they share no buffer;
    - the compute queues (mxu, epi, vec, pool) stay in order: k+1's folds follow k's;
    - each core's DMA engine runs the two kernels' descriptors as two in-order streams sharing the
      engine: a descriptor of k+1 takes the earliest gap of the engine's timeline after it is ready,
      so k+1's first loads go ahead of k's last stores (which wait for k's output stage);
    - data dependencies between the two kernels, across cores, at the granularity of one DMA: a
      descriptor of k+1 that reads what k writes outside SRAM waits for those writes to complete,
      one that writes waits for k's reads and writes of that memory (bounding byte ranges: exact for
      row tiles of a channels-last tensor, conservative for strided views)."""

    def __init__(self, ncores: int):
        self.busy = [[] for _ in range(ncores)]     # per core: the DMA engine's busy intervals (start, end), sorted
        self.prev: dict = {}                        # (space, writes) -> (lo, hi, done) arrays of kernel k
        self.cur: list = []                         # this kernel's (space, lo, hi, writes, done)
        self.gate = 0
        self.soft = self.record = False
        self.stream = [0] * ncores                  # this kernel's DMA stream: next free cycle, per core
        self.last = [0] * ncores                    # and its last completion (in-order completion)
        self.end = [0] * ncores                     # latest DMA completion so far, per core

    def begin(self, soft: bool, record: bool):
        """A segment starts; soft: after a chained barrier; record: a chained barrier ends it."""
        if soft:
            arr = {}
            for space, lo, hi, w, d in self.cur:
                arr.setdefault((space, w), []).append((lo, hi, d))
            self.prev = {k: np.array(v, np.int64).T for k, v in arr.items()}
        else:
            self.prev = {}
        self.cur, self.soft, self.record = [], soft, record or soft

    def hazard(self, i) -> tuple[int, list]:
        """Earliest start of DMA `i` from kernel k's far-memory accesses, and i's own ranges."""
        rng = _far_ranges(i)
        t = 0
        for space, lo, hi, w in rng:
            for key in ((space, True), (space, False)) if w else ((space, True),):
                a = self.prev.get(key)
                if a is not None:
                    hit = (a[0] < hi) & (a[1] > lo)
                    if hit.any():
                        t = max(t, int(a[2][hit].max()))
        return t, rng

    def place(self, c: int, ready: int, occ: int) -> int:
        """Start of a DMA of `occ` cycles ready at `ready` in core c's engine timeline (earliest gap)."""
        iv = self.busy[c]
        k = bisect.bisect_right(iv, (ready, 1 << 62))
        if k and iv[k - 1][1] > ready:
            ready = iv[k - 1][1]
        while k < len(iv) and iv[k][0] < ready + occ:
            ready = max(ready, iv[k][1])
            k += 1
        iv.insert(k, (ready, ready + occ))
        if len(iv) > 4096 and iv[0][1] <= self.gate:             # drop what no later DMA can precede
            self.busy[c] = [x for x in iv if x[1] > self.gate]
        return ready


def _output(a: np.ndarray) -> np.ndarray:
    """An output as fp32, or int64 for integer tensors (exact)."""
    return a.astype(np.int64) if a.dtype.kind in "iu" else cast(_f32(a), "fp32")


def _run_segment(stream, p, c, t, mem, free, done, busy, stall, traffic, events, chain=None):
    n = len(stream)
    first = True
    while p < n:
        i = stream[p]
        cls = type(i)
        if cls is Barrier:
            return p
        q = QIDX[cls]
        dma = chain is not None and chain.record and q == 0
        if dma and first:                                  # this kernel's DMA stream starts at the gate
            chain.stream[c], chain.last[c], first = (chain.gate if chain.soft else free[q]), 0, False
        ready = chain.stream[c] if dma else free[q]
        for k, w in enumerate(getattr(i, f) for f in _WAITS):
            if w:
                if w > len(done[k]):
                    raise IsaError(f"core {c} instruction {p}: waits for {QUEUES[k]} count {w}, "
                                   f"but only {len(done[k])} issued before it")
                ready = max(ready, done[k][w - 1])
        occ, lat, tr = COST[cls](t, i)
        if dma:
            haz, rng = chain.hazard(i)
            ready = chain.place(c, max(ready, haz), occ)
            end = max(ready + occ + lat, chain.last[c])             # in order within the kernel's stream
            chain.stream[c], chain.last[c], chain.end[c] = ready + occ, end, max(chain.end[c], end)
            chain.cur += [(sp, lo, hi, w, end) for sp, lo, hi, w in rng]
            stall[q] += max(0, ready - free[q])
            free[q] = max(free[q], ready + occ)
            done[q].append(end)
        else:
            stall[q] += ready - free[q]
            free[q] = ready + occ
            dq = done[q]
            dq.append(max(ready + occ + lat, dq[-1]) if dq else ready + occ + lat)   # counters complete in order
        busy[q] += occ
        for k, v in tr.items():
            traffic[k] += v
        events.append((c, q, ready, ready + occ + lat, i))
        if mem is not None:
            EXEC[cls](mem, c, i)
        p += 1
    return p


def _load(prog: Program, geom: Geometry, inputs) -> Memory:
    mem = Memory(prog, geom)
    if len(inputs) != len(prog.inputs):
        raise IsaError(f"program takes {len(prog.inputs)} inputs, got {len(inputs)}")
    for tns, arr in prog.constants:
        if arr is None:
            raise IsaError(f"constant {tns.name} has no data (abstract weights): use count_only=True")
        mem.write(tns.space, tns.addr, np.asarray(arr).reshape(tns.shape), tns.dtype)
    for tns, arr in zip(prog.inputs, inputs):
        arr = np.asarray(arr)
        if tuple(arr.shape) != tuple(tns.shape):
            raise IsaError(f"input {tns.name}: expected shape {list(tns.shape)}, got {list(arr.shape)}")
        mem.write(tns.space, tns.addr, cast(_f32(arr), tns.dtype) if tns.dtype != "int32" else arr.astype(np.int32), tns.dtype)
    return mem


def _stats(prog, t: Timing, cycles, busy, stall, traffic) -> dict:
    ncores = len(prog.streams)
    cycles = max(int(cycles), 1)
    eng = [(QUEUES.index(q), q) for q in t.queues]      # the chip's queues: dma mxu vec (+ epi, pool)
    return {
        "cycles": cycles,
        "seconds": cycles / t.clock_hz,
        "engine_busy_cycles": {q: int(busy[k]) for k, q in eng},
        "utilization": {q: busy[k] / (cycles * ncores) for k, q in eng},
        "stall_cycles": {q: int(stall[k]) for k, q in eng},
        "bytes": {k: int(v) for k, v in traffic.items()},
        "instructions": prog.n_instructions,
        "cores": ncores,
    }


def write_trace(result: Result, path, max_events: int = 500_000) -> int:
    """Chrome / Perfetto trace JSON: pid = core, tid = queue, one complete event per instruction."""
    us = 1e6 / result.clock_hz
    ev = [{"ph": "M", "name": "process_name", "pid": c, "args": {"name": f"core {c}"}}
          for c in sorted({e[0] for e in result.events})]
    ev += [{"ph": "M", "name": "thread_name", "pid": c, "tid": k, "args": {"name": q}}
           for c in sorted({e[0] for e in result.events}) for k, q in enumerate(QUEUES)]
    for c, q, s, e, ins in result.events[:max_events]:
        ev.append({"ph": "X", "pid": c, "tid": q, "ts": s * us, "dur": max(e - s, 1) * us,
                   "name": type(ins).__name__.lower() + (f".{ins.func}" if hasattr(ins, "func") else "")})
    with open(path, "w") as f:
        json.dump({"traceEvents": ev, "displayTimeUnit": "ns"}, f)
    return len(ev)


def kernel_times(prog: Program, result: Result) -> list[tuple[str, int]]:
    """(op name, cycles) of each kernel, from the barrier release times."""
    names = prog.meta.get("kernels", [])
    out, prev = [], 0
    for name, t in zip(names, result.barriers):
        out.append((name, int(t - prev)))
        prev = t
    return out
