"""Calibration parameters of the performance model, per chip family (data files, not code).

`src/tapeout/data/perf/<family>.toml` holds the parameters no datasheet gives (achievable
fractions of peak, per-kernel overheads), each with its provenance. A chip names its family
in its file (`chip.family`); a family without a file inherits `default.toml`'s values (the
documented defaults for NPU-style chips). Files may set `inherit = "other-family"`.
"""
from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from importlib import resources

from ..errors import TapeoutError


@dataclass(frozen=True)
class PerfParams:
    family: str
    mma_efficiency: float          # steady-state fraction of the matrix units' peak inside a GEMM tile
    attention_mma_efficiency: float  # the same inside a flash-attention tile (softmax interleaved)
    dram_efficiency: float         # achievable fraction of peak DRAM bandwidth of streaming (elementwise) kernels
    tiled_dram_efficiency: float   # the same for tiled kernels (GEMM, attention) streaming their operands
    kv_dram_efficiency: float      # the same for flash-decoding's read-only stream of the KV cache
    gemm_inflight_bytes: float     # operand bytes one core's GEMM tile keeps in flight from DRAM (Little's law)
    l2_bytes_per_cycle_per_core: float  # shared-buffer (L2) operand bandwidth per core per cycle
    launch_s: float                # gap between two kernels launched one by one from the host
    queued_launch_s: float         # the same inside a CUDA graph / an NPU's command queue
    tile_latency_s: float          # fill and drain of one wave of GEMM/attention tiles (first loads, last stores)
    dram_latency_s: float          # one DRAM round trip: the fixed cost of a streaming kernel
    split_latency_s: float         # the serialized reduction of a split-K / split-KV kernel's partial results
    row_block_bytes: float         # bytes one row-block (norm/softmax) keeps in flight per DRAM latency
    softmax_row_block_bytes: float  # the same for softmax kernels
    fused_row_block_bytes: float   # the same for a tuned engine's fused add+norm kernel (one read pass)
    blocks_per_core: int           # thread blocks of a norm kernel resident on one core at a time
    softmax_blocks_per_core: int   # the same for a softmax kernel (one wide block per row)
    attention_q_block: int         # query rows per flash-attention block
    attention_vector_ops: float    # vector-lane operations per attention score besides the exp (online softmax)
    attention_kv_block: int        # keys per flash-attention block iteration
    attention_block_latency_s: float  # one prefill KV-block iteration when its loads (from L2) are not hidden
    decode_inflight_bytes: float   # KV-cache bytes one core's flash-decoding blocks keep in flight from DRAM
    decode_blocks_per_core: int    # flash-decoding blocks resident per core (the split heuristic's slots)
    kv_split_within: float         # split-KV picks the fewest splits within this fraction of the best wave efficiency
    max_kv_splits: int             # most KV splits flash-decoding uses
    mma_min_rows: int              # rows of the smallest MMA instruction (fewer query rows are padded)
    list_tail_fraction: float      # tail of list-scheduled blocks, x the longest block
    split_k_waves: int             # split-K only while the tiles fill at most this many waves of the cores
    l2_resident_fraction: float    # part of the shared buffer that holds a kernel's reused data while others stream
    tma_alignment_bytes: int       # row strides fast GEMM kernels need (TMA/wgmma); 0: no rule
    unaligned_mma_efficiency: float  # fraction of the matrix units' peak a GEMM with unaligned strides sustains
    norm_read_passes: float        # times a norm kernel reads its input
    softmax_read_passes: float     # times a softmax kernel reads its input
    gemm_tiles: tuple              # candidate output tiles (rows, cols) of a GEMM kernel
    pipeline_stages: int           # K-slices a GEMM tile's pipeline keeps in flight
    tile_k: int                    # K-slice per pipeline stage
    max_split_k: int
    min_clock_fraction: float      # lowest clock the power limit can push the chip to, x max clock
    step_overhead_s: float = 0.0   # host time per engine step outside the kernels (scheduler, sampling)
    comm_efficiency: float = 1.0   # achieved fraction of the collective's modelled link time
    comm_latency_s: float = 0.0    # fixed software cost of one collective (launch, synchronisation)
    sources: dict = field(default_factory=dict, compare=False, repr=False)


@lru_cache(maxsize=None)
def _raw(family: str) -> dict:
    res = resources.files("tapeout.data") / "perf" / f"{family}.toml"
    if not res.is_file():
        return {}
    data = tomllib.loads(res.read_text())
    parent = data.pop("inherit", "default" if family != "default" else None)
    base = dict(_raw(parent)) if parent else {}
    srcs = {**base.get("sources", {}), **data.pop("sources", {})}
    base.update(data)
    base["sources"] = srcs
    return base


@lru_cache(maxsize=None)
def load_params(family: str) -> PerfParams:
    raw = _raw(family) or _raw("default")
    names = {f.name for f in fields(PerfParams)} - {"family"}
    missing = {f.name for f in fields(PerfParams) if f.default is MISSING and f.default_factory is MISSING} - {"family"} - set(raw)
    if missing:
        raise TapeoutError(f"data/perf/{family}.toml: missing {', '.join(sorted(missing))}")
    kw = {k: raw[k] for k in names if k in raw}
    kw["gemm_tiles"] = tuple(tuple(t) for t in raw["gemm_tiles"])
    return PerfParams(family=family, **kw)
