"""Calibration parameters of the performance model, per chip family (data files, not code).

`src/tapeout/data/perf/<family>.toml` holds the parameters no datasheet gives (achievable
fractions of peak, per-kernel overheads), each a sourced quantity under `[params.<name>]` in
the one provenance format (`tapeout.sourced`: value, ref, confidence, note), loaded and checked
by `sourced.load_table`. `[meta]` holds what is not a number: `inherit` (the family whose values
this file overrides; default.toml for all but itself), `gemm_tiles`, a `note` and the `fit` that
benchmarks/calibrate.py records. A chip names its family in its file (`chip.family`); a family
without a file uses `default.toml`'s values (the documented defaults for NPU-style chips).
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from importlib import resources

from ..errors import TapeoutError
from ..sourced import DataFileError, Quantity, load_table

META = ("inherit", "note", "gemm_tiles", "fit")


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
    softmax_read_passes: float     # times a softmax kernel reads its input (a GPU: the kernel that streams a wide row)
    softmax_block_threads: int     # threads of a GPU softmax kernel's block (one row per block)
    softmax_register_elements: int  # a GPU softmax holds its row in registers below this many elements per thread
    softmax_row_registers: int     # registers per thread of that kernel besides the row's elements
    softmax_row_latency_s: float   # serial latency of one row in that kernel: its loads' round trip, two block reductions
    softmax_vector_ops: float      # vector-lane operations per element of that kernel (two exps, a division, conversions)
    gemm_tiles: tuple              # candidate output tiles (rows, cols) of a GEMM kernel
    pipeline_stages: int           # K-slices a GEMM tile's pipeline keeps in flight
    tile_k: int                    # K-slice per pipeline stage
    max_split_k: int
    min_clock_fraction: float      # lowest clock the power limit can push the chip to, x max clock
    step_overhead_s: float = 0.0   # host time per engine step outside the kernels (scheduler, sampling)
    comm_efficiency: float = 1.0   # achieved fraction of the collective's modelled link time
    comm_latency_s: float = 0.0    # fixed software cost of one collective (launch, synchronisation)
    comm_message_s: float = 0.0    # software cost per message of an all-to-all: one per peer a chip sends to
    custom_allreduce_max_bytes: float = 0.0  # all-reduces up to this size run on the stack's own kernel (0: none)
    custom_allreduce_pair_max_bytes: float = 0.0  # the same cap when only two chips reduce (0: custom_allreduce_max_bytes)
    custom_allreduce_sync_s: float = 0.0     # one cross-chip synchronisation of that kernel
    custom_allreduce_efficiency: float = 1.0  # fraction of the links' bandwidth that kernel reaches
    sources: dict = field(default_factory=dict, compare=False, repr=False)  # name -> its source, cited

    def cite(self, name: str) -> str:
        """Where parameter `name`'s value comes from: reference [confidence]: note."""
        return self.sources.get(name, "")


def param_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(PerfParams)) - {"family", "sources"}


def check_params(path: str, params: dict) -> dict:
    """A data file's `[params.*]` (a perf family or a stack): each a PerfParams field, each sourced."""
    names = param_names()
    for k, v in params.items():
        if k not in names:
            raise DataFileError(f"{path}: params.{k}: not a performance parameter (see tapeout.perf.params.PerfParams)")
        if not isinstance(v, Quantity):
            raise DataFileError(f"{path}: params.{k}: write {{value = ..., ref = ..., confidence = ...}}")
    return params


def _file(family: str) -> tuple[dict, dict, dict] | None:
    """(meta, values, cited sources) of data/perf/<family>.toml alone; None without a file."""
    rel = f"perf/{family}.toml"
    if not (resources.files("tapeout") / "data" / rel).is_file():
        return None
    t, path = load_table(rel), f"data/{rel}"
    extra = set(t) - {"params", "meta", "references"}
    if extra:
        raise DataFileError(f"{path}: unknown table(s) {sorted(extra)}: numbers go under [params.<name>]")
    for k in t["meta"]:
        if k not in META:
            raise DataFileError(f"{path}: meta.{k}: unknown key (known: {', '.join(META)})")
    q = check_params(path, dict(t.get("params", {})))
    return dict(t["meta"]), {k: v.value for k, v in q.items()}, {k: v.cite(t["references"]) for k, v in q.items()}


@lru_cache(maxsize=None)
def _raw(family: str, seen: tuple = ()) -> tuple[dict, dict, dict] | None:
    """(meta, values, sources) of a family file merged over the family it inherits."""
    own = _file(family)
    if own is None:
        return None
    meta, vals, srcs = own
    parent = meta.get("inherit", "default" if family != "default" else None)
    if parent in seen + (family,):
        raise DataFileError(f"data/perf/{family}.toml: inherits itself ({' -> '.join(seen + (family, parent))})")
    if parent:
        base = _raw(parent, seen + (family,))
        if base is None:
            raise DataFileError(f"data/perf/{family}.toml: meta.inherit: no family file {parent!r}")
        pm, pv, ps = base
        meta, vals, srcs = {**pm, **meta}, {**pv, **vals}, {**ps, **srcs}
    return meta, vals, srcs


def _typed(family: str, name: str, v: float):
    """`v` as the field's type: a count must be a whole number."""
    kind = PerfParams.__dataclass_fields__[name].type
    if kind != "int":
        return v
    if not float(v).is_integer():
        raise DataFileError(f"data/perf/{family}.toml: params.{name}: must be a whole number, got {v!r}")
    return int(v)


@lru_cache(maxsize=None)
def load_params(family: str) -> PerfParams:
    meta, vals, srcs = _raw(family) or _raw("default")
    required = {f.name for f in fields(PerfParams) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - {"family", "gemm_tiles"} - set(vals) | ({"gemm_tiles"} - set(meta))
    if missing:
        raise TapeoutError(f"data/perf/{family}.toml: missing {', '.join(sorted(missing))}")
    kw = {k: _typed(family, k, v) for k, v in vals.items()}
    return PerfParams(family=family, gemm_tiles=tuple(tuple(t) for t in meta["gemm_tiles"]), sources=srcs, **kw)
