"""Per-kernel cost: how long one kernel takes on a chip, from the chip file and family parameters.

Every cost is a tuple (cycles, memory_s, fixed_s, launches): `cycles` of the cores (scale with
the clock), `memory_s` of DRAM streaming (does not), `fixed_s` latencies (each wave of tiles pays
one pipeline fill: its first DRAM loads and last stores), and the number of kernel `launches`
(a split-K or split-KV reduction is a second kernel). At clock f the kernel takes
``launches x launch_gap + fixed_s + max(cycles / f, memory_s)``.

GEMMs are mapped onto the cores as output tiles (tile shapes, split-K for skinny shapes, waves
across the cores with the tail wave), each tile's MACs on the core's matrix units; operands come
from DRAM once (the shared buffer holds the reuse) and from the shared buffer per tile. Attention
is flash-style (prefill: query blocks x KV, MMA plus exp on the special-function units; decode:
split-KV streaming of the cache). Memory-bound kernels stream their bytes, with the bandwidth
ramp of small tensors coming from the number of cores they can occupy.
"""
from __future__ import annotations

import functools
import math
import weakref

from ..chip import Chip
from ..errors import TapeoutError
from ..llm.kernels import Kernel
from .params import PerfParams

INF = float("inf")


def _mma_dtype(chip: Chip, dtype: str) -> str:
    """The dtype the matrix unit runs: `dtype` if supported, else the nearest wider one it has.
    fp4 (both GEMM operands FP4) has no fallback: weight-only FP4 runs at the activations' type."""
    for d in {"fp8": ("fp8", "fp16", "bf16"), "int8": ("int8", "fp8", "bf16", "fp16"), "fp16": ("fp16", "bf16"),
              "bf16": ("bf16", "fp16"), "int4": ("int4", "int8", "fp8", "bf16"), "fp4": ("fp4",)}.get(dtype, (dtype, "bf16")):
        if chip.supports(d):
            return d
    if dtype == "fp4":
        raise TapeoutError(f"{chip.name}: fp4 activations need FP4 matrix units (cores.matrix.macs_per_cycle.fp4); "
                           f"FP4 weights alone run with bf16 or fp8 activations")
    return max(chip.cores.matrix.macs_per_cycle, key=chip.cores.matrix.macs_per_cycle.get)


def _dram_bw(chip: Chip, efficiency: float) -> float:
    """Achievable DRAM bandwidth (the shared buffer's where the chip has no DRAM)."""
    return (chip.dram.bandwidth_bytes_per_s or chip.shared_buffer.bandwidth_bytes_per_s) * efficiency


_CACHES: dict[int, dict] = {}


def chip_cache(chip: Chip) -> dict:
    """A memo dict that lives as long as `chip` (chips hold dicts, so they cannot be hashed)."""
    c = _CACHES.get(id(chip))
    if c is None:
        c = _CACHES[id(chip)] = {}
        weakref.finalize(chip, _CACHES.pop, id(chip), None)
    return c


def gemm_cost(chip: Chip, p: PerfParams, M: float, N: int, K: int, groups: float, dtype: str,
              in_b: float, w_b: float, out_b: float) -> tuple[float, float, float, int]:
    """Best tiling of C[M,N] = A[M,K] @ B[K,N] (x groups) over the candidate tiles and split-K factors."""
    cache = chip_cache(chip)
    key = ("gemm", p, M, N, K, groups, dtype, in_b, w_b, out_b)
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = _gemm_cost(chip, p, M, N, K, groups, dtype, in_b, w_b, out_b)
    return hit


def _systolic_cycles(chip: Chip, M: float, N: int, K: int, groups: float) -> float | None:
    """Cycles of a GEMM on 2-D systolic arrays of known shape and dataflow (None otherwise).

    Weight-stationary: each rows x cols weight tile (a fold) stays in the array while the M rows
    of activations stream through: max(M, rows) cycles per fold (the next fold's weights load
    behind the current stream), plus one fill and drain of rows + cols per core. Output-stationary:
    each rows x cols block of outputs accumulates over K: max(K, rows) per fold. Input-stationary
    is weight-stationary with M and N swapped."""
    mx = chip.cores.matrix
    R, C, flow = mx.array_rows, mx.array_cols, mx.dataflow
    if not R or not C or flow not in ("ws", "os", "is"):
        return None
    if flow == "is":
        M, N = N, M
    if flow == "os":
        folds, per_fold = math.ceil(M / R) * math.ceil(N / C), max(K, R)
    else:
        folds, per_fold = math.ceil(K / R) * math.ceil(N / C), max(M, R)
    arrays = chip.cores.count * mx.units
    return math.ceil(folds * max(1.0, groups) / arrays) * per_fold + R + C


def _gemm_dram_bytes(chip: Chip, M: float, N: int, K: int, groups: float, in_b: float, w_b: float, out_b: float) -> float:
    """DRAM traffic of a GEMM: each operand once, unless the on-chip memory (shared buffer plus all
    cores' SRAM) is too small to hold the reuse; then a T x T output block of fp32 accumulators
    (T = sqrt(on-chip bytes / 4)) streams A and B panels: 2 M N K / T elements (Hong & Kung's bound)."""
    compulsory = groups * (M * K * in_b + N * K * w_b + M * N * out_b)
    onchip = chip.shared_buffer.bytes + chip.cores.count * chip.cores.sram.bytes
    T = math.sqrt(max(onchip, 1.0) / 4.0)
    return max(compulsory, groups * M * N * K * (in_b + w_b) / T)


def _gemm_cost(chip, p, M, N, K, groups, dtype, in_b, w_b, out_b):
    d = _mma_dtype(chip, dtype)
    sys_cyc = _systolic_cycles(chip, M, N, K, groups)
    if sys_cyc is not None:  # the array's dataflow sets the cycles; operands stream from DRAM once
        # an 8-bit (or narrower) MAC packs into a bf16 slot: the array does macs(d)/macs(bf16) per PE
        pack = chip.macs_per_cycle(d) / max(chip.macs_per_cycle("bf16") or chip.macs_per_cycle(d), 1)
        cyc = sys_cyc / max(pack, 1.0) / p.mma_efficiency
        dram = _gemm_dram_bytes(chip, M, N, K, groups, in_b, w_b, out_b)
        return cyc, dram / _dram_bw(chip, p.tiled_dram_efficiency), p.tile_latency_s, 1
    macs = chip.macs_per_cycle(d) * p.mma_efficiency
    cores, f0 = chip.cores.count, chip.max_clock_hz
    l2 = p.l2_bytes_per_cycle_per_core
    l2_bytes = chip.shared_buffer.bytes
    bw = _dram_bw(chip, p.tiled_dram_efficiency)
    core_bw = p.core_dram_bytes_per_cycle * f0
    base_dram = _gemm_dram_bytes(chip, M, N, K, groups, in_b, w_b, out_b)
    g = max(1, math.ceil(groups))
    best = (INF, 0.0, 0.0, 1, INF)
    m_min = min(t[0] for t in p.gemm_tiles)
    for tm, tn in p.gemm_tiles:
        if tm > m_min and tm >= 2 * M:  # a shorter tile covers M with less padding
            continue
        mt, nt = math.ceil(M / tm), math.ceil(N / tn)
        s = 1
        # split K only while it adds parallelism the cores can use
        while s <= p.max_split_k and (s == 1 or (K / s >= 2 * p.tile_k and mt * nt * g * s <= 2 * cores)):
            tiles = mt * nt * s * g
            waves = math.ceil(tiles / cores)
            ks = math.ceil(K / s / p.tile_k) * p.tile_k
            cyc = waves * max(tm * tn * ks / macs, (min(tm, M) + tn) * ks * in_b / l2)
            dram = base_dram
            partials = 2 * s * M * N * 4 * groups if s > 1 else 0.0  # fp32 partial sums, reduced in the kernel
            if partials > l2_bytes / 2:  # they stay in the shared buffer unless it is too small
                dram += partials
            # the whole chip's DRAM bandwidth, and each core pulling its tiles' weights at most core_bw
            mem = max(dram / bw, waves * tn * ks * w_b / core_bw)
            # each wave fills its pipeline (first loads) and drains (last stores): one DRAM round trip,
            # plus the rest of the prologue while the K loop is still short of its full depth
            fill = p.dram_latency_s + (p.tile_latency_s - p.dram_latency_s) * min(1.0, ks / (p.tile_k * p.pipeline_stages))
            fixed = waves * fill + (p.split_latency_s if s > 1 else 0.0)
            total = max(cyc / f0, mem) + fixed
            if total < best[4]:
                best = (cyc, mem, fixed, 1, total)
            s *= 2
    return best[:4]


@functools.lru_cache(maxsize=4096)
def kv_splits(units: int, kv_blocks: int, cores: int, max_splits: int = 128) -> int:
    """Split-KV factor of flash-decoding: the fewest splits whose waves over the cores come within
    85 % of the best wave efficiency (each split needs at least one KV block)."""
    cands = range(1, max(1, min(max_splits, kv_blocks)) + 1)
    eff = {s: units * s / cores / math.ceil(units * s / cores) for s in cands}
    best = max(eff.values())
    return next(s for s in cands if eff[s] >= 0.85 * best)


def attention_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    B, Sq, Skv, hq, hkv, dqk, dv, causal = k.shape
    d = _mma_dtype(chip, "bf16" if k.dtype in ("fp32",) else k.dtype)
    macs = chip.macs_per_cycle(d) * p.attention_mma_efficiency
    sfu = chip.cores.vector.special_functions_per_cycle or chip.cores.vector.lanes
    cores = chip.cores.count
    mem_bytes = k.bytes_read + k.bytes_written
    if Sq == 1:  # decode: stream the KV cache, split over KV blocks to occupy the cores
        group = hq / hkv
        rows = max(16.0, group)
        units = B * hkv  # query heads sharing a KV head ride together (GQA packing)
        blocks = math.ceil(Skv / (2 * p.attention_kv_block))  # decode walks the cache in double-width blocks
        splits = kv_splits(units, blocks, 2 * cores)  # two decoding blocks resident per core
        splits = math.ceil(blocks / math.ceil(blocks / splits))  # whole KV blocks per split
        active = min(cores, units * splits)
        cyc = (units * rows * Skv * (dqk + dv) / macs + B * hq * Skv * (1 / sfu + p.attention_vector_ops / chip.cores.vector.lanes)) / active
        waves = math.ceil(units * splits / cores)
        per_cta = mem_bytes / (units * splits)
        # each split streams its share of the cache at most at what one decode block keeps in flight
        mem = max(mem_bytes / _dram_bw(chip, p.kv_dram_efficiency), waves * per_cta / (p.decode_core_bytes_per_cycle * chip.max_clock_hz))
        # a combine kernel follows a split: its own launch and pipeline fill
        return cyc, mem, (waves + (splits > 1)) * p.tile_latency_s, 2 if splits > 1 else 1
    bq = p.attention_q_block
    nq = math.ceil(Sq / bq)
    cached = Skv - Sq
    # MMA for QK^T and PV, one exp per score on the special-function units, and the online-softmax
    # bookkeeping (running max, sum, rescale, mask) on the vector lanes
    per_pair = (dqk + dv) / macs + 1.0 / sfu + p.attention_vector_ops / chip.cores.vector.lanes
    # query block i sees cached + (i+1)*bq keys under the causal mask
    if causal:
        pairs_total = B * hq * (nq * bq * cached + bq * bq * nq * (nq + 1) / 2)
    else:
        pairs_total = B * hq * nq * bq * Skv
    longest = bq * Skv
    blocks = B * hq * nq
    # list scheduling of query blocks over the cores: the total work spread evenly, plus a tail of
    # about half the longest block (blocks finish unevenly); fewer blocks than cores: the longest
    cyc = (pairs_total / cores + 0.5 * longest) * per_pair if blocks > cores else longest * per_pair
    # the longest block walks its KV blocks in order (from the shared buffer, where every query block
    # of a head reuses them): a latency floor when the loads are not hidden
    chain = math.ceil(Skv / p.attention_kv_block) * p.attention_block_latency_s
    mem = max(mem_bytes / _dram_bw(chip, p.tiled_dram_efficiency), chain)
    return cyc, mem, math.ceil(blocks / cores) * p.tile_latency_s, 1


def stream_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    """Elementwise, norm, softmax, embedding, KV writes: DRAM streaming.

    Norm and softmax kernels give each row to one block of threads, which keeps `row_block_bytes`
    in flight per DRAM latency: a few very long rows cannot use the whole memory system."""
    rows, cols = (tuple(k.shape) + (1, 1))[:2] if k.shape else (1, 1)
    nbytes = k.bytes_read + k.bytes_written
    eff = p.dram_efficiency
    row_limit = 0.0
    extra = 0.0
    if k.kind in ("norm", "softmax", "fused_norm"):
        passes = {"norm": p.norm_read_passes, "softmax": p.softmax_read_passes}.get(k.kind, 1.0)
        extra = k.bytes_read * (passes - 1)  # re-reads: from the shared buffer if the tensor fits there
        if k.bytes_read > chip.shared_buffer.bytes:
            nbytes, extra = nbytes + extra, 0.0
        row_bytes = (k.bytes_read * passes + k.bytes_written) / max(rows, 1)
        waves = math.ceil(rows / (chip.cores.count * p.blocks_per_core))
        inflight = {"norm": p.row_block_bytes, "softmax": p.softmax_row_block_bytes}.get(k.kind, p.fused_row_block_bytes)
        row_limit = waves * row_bytes / inflight * p.dram_latency_s
    mem = max(nbytes / _dram_bw(chip, eff)
              + extra / chip.shared_buffer.bandwidth_bytes_per_s, row_limit)
    cyc = k.flops / max(chip.cores.vector.flops_per_cycle * chip.cores.count, 1.0)
    return cyc, mem, p.dram_latency_s, 1


def comm_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    nbytes, n, kind = k.shape
    from ..parallel import collective_time  # the serving/parallelism layer owns link models

    return 0.0, collective_time(chip, kind, nbytes, int(n), algorithm="auto"), 0.0, 1


COSTS = {
    "attention": attention_cost,
    "comm": comm_cost,
}


def kernel_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    if k.kind == "gemm":
        M, N, K, groups = k.shape
        in_b = (k.bytes_read - k.weight_bytes) / max(groups * M * K, 1e-9)
        w_b = k.weight_bytes / max(groups * N * K, 1e-9)
        out_b = k.bytes_written / max(groups * M * N, 1e-9)
        return gemm_cost(chip, p, float(M), int(N), int(K), float(groups), k.dtype,
                         round(in_b, 4), round(w_b, 4), round(out_b, 4))
    return COSTS.get(k.kind, stream_cost)(chip, p, k)
