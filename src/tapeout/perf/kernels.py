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
from . import npu
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


def core_stream_s(p: PerfParams, units: float, unit_bytes: float, slots: float,
                  inflight_bytes: float, bw: float) -> float:
    """Seconds to stream `units` pieces of work of `unit_bytes` each from DRAM, `slots` at a time.

    Little's law: one slot (a thread block, or a core) keeps `inflight_bytes` in flight per DRAM
    round trip, so it streams at most inflight_bytes / dram_latency_s; the slots active together
    share the chip's achievable bandwidth `bw`. Full waves run at min(bw, slots x per-slot rate);
    the tail wave has fewer slots, each of which gets more of the bandwidth (up to its own limit).
    A chip with more bandwidth per core (same cores, same in-flight bytes) thus streams faster
    until the in-flight bytes, not the DRAM, set the pace."""
    if units <= 0 or unit_bytes <= 0:
        return 0.0
    slots = max(1.0, slots)
    per_slot = inflight_bytes / p.dram_latency_s
    full, tail = divmod(math.ceil(units), int(math.ceil(slots)))
    t = full * slots * unit_bytes / min(bw, slots * per_slot)
    return t + (tail * unit_bytes / min(bw, tail * per_slot) if tail else 0.0)


def _inflight(chip: Chip, p: PerfParams, nominal: float) -> float:
    """Bytes one core keeps in flight. A GPU's SM: the kernel's (nominal). An NPU's DMA engines are
    sized to cover its DRAM's bandwidth-latency product, else the chip could not reach its own memory
    bandwidth: at least that product shared over the cores (a 2-core Gaudi keeps far more per core
    than a 128 KiB default)."""
    if chip.cores.matrix.dataflow == "simt":
        return nominal
    return max(nominal, _dram_bw(chip, 1.0) * p.dram_latency_s / max(chip.cores.count, 1))


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


def tma_aligned(p: PerfParams, N: int, K: int, in_b: float, w_b: float, out_b: float) -> bool:
    """Whether C[M,N] = A[M,K] @ B[N,K]^T (row-major, as torch's F.linear) has the row strides the
    chip's fast GEMM kernels need: TMA descriptors and wgmma operands take only strides that are
    multiples of `tma_alignment_bytes` (16 B on Hopper: 8 bf16 or 16 fp8 elements). A's and B's
    rows are K long, C's N long; M is free. 0 disables the rule."""
    a = p.tma_alignment_bytes
    return not a or all(abs(n * b / a - round(n * b / a)) < 1e-6 for n, b in ((K, in_b), (K, w_b), (N, out_b)))


def _gemm_cost(chip, p, M, N, K, groups, dtype, in_b, w_b, out_b):
    d = _mma_dtype(chip, dtype)
    sys_cyc = _systolic_cycles(chip, M, N, K, groups)
    if sys_cyc is not None:  # the array's dataflow sets the cycles; operands stream from DRAM once
        # an 8-bit (or narrower) MAC packs into a bf16 slot: the array does macs(d)/macs(bf16) per PE
        pack = chip.macs_per_cycle(d) / max(chip.macs_per_cycle("bf16") or chip.macs_per_cycle(d), 1)
        cyc = sys_cyc / max(pack, 1.0) / p.mma_efficiency
        dram = _gemm_dram_bytes(chip, M, N, K, groups, in_b, w_b, out_b)
        return cyc, dram / _dram_bw(chip, p.tiled_dram_efficiency), p.tile_latency_s, 1
    aligned = tma_aligned(p, N, K, in_b, w_b, out_b)
    macs = chip.macs_per_cycle(d) * (p.mma_efficiency if aligned else p.unaligned_mma_efficiency)
    cores, f0 = chip.cores.count, chip.max_clock_hz
    l2 = p.l2_bytes_per_cycle_per_core
    l2_bytes = chip.shared_buffer.bytes
    bw = _dram_bw(chip, p.tiled_dram_efficiency)
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
        while s <= p.max_split_k and (s == 1 or (K / s >= 2 * p.tile_k and mt * nt * g * s <= p.split_k_waves * cores)):
            tiles = mt * nt * s * g
            waves = math.ceil(tiles / cores)
            ks = math.ceil(K / s / p.tile_k) * p.tile_k
            cyc = waves * max(tm * tn * ks / macs, (min(tm, M) + tn) * ks * in_b / l2)
            dram = base_dram
            partials = 2 * s * M * N * 4 * groups if s > 1 else 0.0  # fp32 partial sums, reduced in the kernel
            if partials > l2_bytes * p.l2_resident_fraction:  # they stay in the shared buffer unless it is too small
                dram += partials
            # the whole chip's DRAM bandwidth, and each core pulling its tiles' weights (from DRAM or,
            # reused by other tiles, the shared buffer) with the bytes it keeps in flight
            mem = max(dram / bw, core_stream_s(p, tiles, tn * ks * w_b, cores, p.gemm_inflight_bytes, INF))
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
def kv_splits(units: int, kv_blocks: int, slots: int, within: float, max_splits: int) -> int:
    """Split-KV factor of flash-decoding: the fewest splits whose waves over the `slots` come
    within `within` of the best wave efficiency (each split needs at least one KV block)."""
    cands = range(1, max(1, min(max_splits, kv_blocks)) + 1)
    eff = {s: units * s / slots / math.ceil(units * s / slots) for s in cands}
    best = max(eff.values())
    return next(s for s in cands if eff[s] >= within * best)


def attention_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    B, Sq, Skv, hq, hkv, dqk, dv, causal = k.shape
    d = _mma_dtype(chip, "bf16" if k.dtype in ("fp32",) else k.dtype)
    macs = chip.macs_per_cycle(d) * p.attention_mma_efficiency
    sfu = chip.cores.vector.special_functions_per_cycle or chip.cores.vector.lanes
    cores = chip.cores.count
    mem_bytes = k.bytes_read + k.bytes_written
    if Sq == 1:  # decode: stream the KV cache, split over KV blocks to occupy the cores
        group = hq / hkv
        rows = max(float(p.mma_min_rows), group)  # the MMA instruction's minimum rows, padded
        units = B * hkv  # query heads sharing a KV head ride together (GQA packing)
        blocks = math.ceil(Skv / (2 * p.attention_kv_block))  # decode walks the cache in double-width blocks
        splits = kv_splits(units, blocks, p.decode_blocks_per_core * cores, p.kv_split_within, p.max_kv_splits)
        splits = math.ceil(blocks / math.ceil(blocks / splits))  # whole KV blocks per split
        active = min(cores, units * splits)
        cyc = (units * rows * Skv * (dqk + dv) / macs + B * hq * Skv * (1 / sfu + p.attention_vector_ops / chip.cores.vector.lanes)) / active
        waves = math.ceil(units * splits / cores)
        # each split streams its share of the cache with the bytes one core keeps in flight; the
        # cores of a wave share the chip's bandwidth (more bandwidth per core: faster per core)
        mem = core_stream_s(p, units * splits, mem_bytes / (units * splits), cores,
                            _inflight(chip, p, p.decode_inflight_bytes), _dram_bw(chip, p.kv_dram_efficiency))
        # a combine kernel follows a split: its own launch and pipeline fill
        # a GPU pays a pipeline fill per wave of thread blocks; an NPU's DMA engines prefetch the next
        # unit's cache behind the current one, so only the first fill shows
        fills = waves if chip.cores.matrix.dataflow == "simt" else 1
        return cyc, mem, (fills + (splits > 1)) * p.tile_latency_s, 2 if splits > 1 else 1
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
    # a fraction of the longest block (blocks finish unevenly); fewer blocks than cores: the longest
    cyc = (pairs_total / cores + p.list_tail_fraction * longest) * per_pair if blocks > cores else longest * per_pair
    # the longest block walks its KV blocks in order (from the shared buffer, where every query block
    # of a head reuses them): a latency floor when the loads are not hidden
    chain = math.ceil(Skv / p.attention_kv_block) * p.attention_block_latency_s
    mem = max(mem_bytes / _dram_bw(chip, p.tiled_dram_efficiency), chain)
    return cyc, mem, math.ceil(blocks / cores) * p.tile_latency_s, 1


def resident_blocks(chip: Chip, threads: int, registers: int, fallback: int) -> int:
    """Thread blocks of `threads` threads using `registers` each that one core holds at a time: the
    core's resident threads and its register file (allocated 8 registers per thread at a time) both
    bound it. `fallback` where the chip file does not state them."""
    c = chip.cores
    if not c.registers or not c.max_threads:
        return fallback
    regs = 8 * math.ceil(registers / 8)
    return max(1, min(c.max_threads // threads, c.registers // (threads * regs)))


def softmax_rows(chip: Chip, p: PerfParams, cols: float, elem_bytes: float) -> tuple[int, int, bool]:
    """PyTorch's softmax on a GPU: (threads per row block, resident blocks per core, whether the
    row stays in registers). A row of `cols` elements gets a block of up to `softmax_block_threads`
    threads; while each thread holds fewer than `softmax_register_elements` of them, the row stays
    in registers (one read of the input), and the more it holds, the more registers a thread needs
    and the fewer blocks fit on a core. Wider rows stream through the block, read several times."""
    threads = min(p.softmax_block_threads, 32 * math.ceil(cols / 32))
    per_thread = math.ceil(cols / threads)
    held = per_thread < p.softmax_register_elements
    regs = p.softmax_row_registers + (per_thread * math.ceil(elem_bytes / 4) if held else 0)
    return threads, resident_blocks(chip, threads, regs, p.softmax_blocks_per_core), held


def _held_row_s(chip: Chip, p: PerfParams, rows: float, cols: float, blocks: int, nbytes: float) -> float:
    """Memory time of a softmax that holds each row in registers: each row block loads its whole row,
    waits for it, reduces it twice (max, sum) across the block, computes and stores, one phase
    after the other; the other blocks resident on the core hide that serial part, the DRAM does
    not wait for it. Per core: its share of the DRAM time plus, per wave of rows over the resident
    blocks, the row's latency and arithmetic (fewer resident blocks: less of it hidden)."""
    waves = math.ceil(rows / (chip.cores.count * blocks))
    arith = cols * p.softmax_vector_ops / (chip.cores.vector.lanes * chip.max_clock_hz)
    return nbytes / _dram_bw(chip, p.dram_efficiency) + waves * (p.softmax_row_latency_s + arith)


def stream_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    """Elementwise, norm, softmax, embedding, KV writes: DRAM streaming.

    Norm and softmax kernels give each row to one block of threads, which keeps `row_block_bytes`
    in flight per DRAM latency: a few very long rows cannot use the whole memory system. A GPU's
    softmax follows PyTorch's kernels (softmax_rows): a row held in registers is read once and
    paced by its serial latency (_held_row_s); a wider one streams."""
    rows, cols = (tuple(k.shape) + (1, 1))[:2] if k.shape else (1, 1)
    nbytes = k.bytes_read + k.bytes_written
    cyc = k.flops / max(chip.cores.vector.flops_per_cycle * chip.cores.count, 1.0)
    slots = chip.cores.count * (p.softmax_blocks_per_core if k.kind == "softmax" else p.blocks_per_core)
    if k.kind == "softmax" and chip.cores.matrix.dataflow == "simt":
        _, blocks, held = softmax_rows(chip, p, cols, k.bytes_read / max(rows * cols, 1))
        if held:
            return cyc, _held_row_s(chip, p, rows, cols, blocks, nbytes), p.dram_latency_s, 1
        slots = chip.cores.count * blocks
    eff = p.dram_efficiency
    row_limit = 0.0
    extra = 0.0
    if k.kind in ("norm", "softmax", "fused_norm"):
        passes = {"norm": p.norm_read_passes, "softmax": p.softmax_read_passes}.get(k.kind, 1.0)
        row_in = k.bytes_read / max(rows, 1)
        # re-reads of a row follow its first read: they hit the shared buffer while the rows in
        # flight fit in the part of it that streaming leaves alone, else they go to DRAM again
        extra = k.bytes_read * (passes - 1)
        if min(rows, slots) * row_in > chip.shared_buffer.bytes * p.l2_resident_fraction:
            nbytes, extra = nbytes + extra, 0.0
        row_bytes = (k.bytes_read * passes + k.bytes_written) / max(rows, 1)
        inflight = {"norm": p.row_block_bytes, "softmax": p.softmax_row_block_bytes}.get(k.kind, p.fused_row_block_bytes)
        # each row block's loads (DRAM or shared buffer) are paced by what it keeps in flight
        row_limit = core_stream_s(p, rows, row_bytes, slots, inflight, INF)
    mem = max(nbytes / _dram_bw(chip, eff)
              + extra / chip.shared_buffer.bandwidth_bytes_per_s, row_limit)
    return cyc, mem, p.dram_latency_s, 1


def comm_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    nbytes, n, kind = k.shape[:3]
    from ..parallel import collective_time  # the serving/parallelism layer owns link models

    return 0.0, collective_time(chip, kind, nbytes, int(n), algorithm="auto"), 0.0, 1


COSTS = {
    "attention": attention_cost,
    "comm": comm_cost,
}


def kernel_cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    if npu.applies(chip):   # a chip the virtual NPU runs: its timing in closed form (perf/npu.py)
        cache = chip_cache(chip)
        key = ("npu", p, k.kind, k.name, k.shape, k.dtype, k.flops, k.bytes_read, k.bytes_written, k.weight_bytes)
        if key not in cache:
            d = _mma_dtype(chip, k.dtype) if k.kind in ("gemm", "attention") else k.dtype
            cache[key] = npu.kernel_cost(chip, p, k, d)
        if cache[key] is not None:
            return cache[key]
    if k.kind == "gemm":
        M, N, K, groups = k.shape
        in_b = (k.bytes_read - k.weight_bytes) / max(groups * M * K, 1e-9)
        w_b = k.weight_bytes / max(groups * N * K, 1e-9)
        out_b = k.bytes_written / max(groups * M * N, 1e-9)
        return gemm_cost(chip, p, float(M), int(N), int(K), float(groups), k.dtype,
                         round(in_b, 4), round(w_b, 4), round(out_b, 4))
    return COSTS.get(k.kind, stream_cost)(chip, p, k)
