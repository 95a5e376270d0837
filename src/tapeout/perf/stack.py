"""Software stacks: what a vendor's kernels, compiler and serving engine make of the silicon.

A chip's performance is its silicon times its software. The silicon is the chip file; the
kernel library's behaviour on that class of silicon is the family's parameters
(`data/perf/<family>.toml`: tiles, in-flight bytes, fitted on measurements for NVIDIA); the
stack (`data/stacks/<name>.toml`, sourced form) says how far a given vendor's software gets
from there, in a few parameters with a physical meaning:

- `[params.*]`: overrides of the family's performance parameters (achieved fraction of matrix
  peak in a tile, of DRAM bandwidth when streaming weights or the KV cache, gap between
  kernels), plus `step_overhead_s` (host time per engine step: scheduling, sampling, Python),
  `comm_efficiency` and `comm_latency_s` (collectives: fraction of link bandwidth, fixed cost),
  `comm_message_s` (cost per message of an MoE all-to-all: one per peer a chip's tokens reach);
- `meta.kernels`: the fused kernels it has (`flash_attention`, `paged_attention`, `mla`,
  `grouped_moe`, `fused_norm`, `graphs`), and `dynamic_shapes` (kernels sized to the actual
  context; without it a static batch decodes over its whole compiled length, as ahead-of-time
  compiled graphs with sequence-length buckets do); a missing one runs the unfused way;
- `meta.moe`: `sparse` (default: each routed expert runs the tokens routed to it) or `dense` (every
  token through every expert, the unrouted ones weighted by zero, and under tensor parallelism one
  all-reduce per expert: optimum-habana's Mixtral under DeepSpeed AutoTP before its fused MoE op);
- `meta.tp_ranks`: `chip` (default) or `core`: a stack that makes each core a tensor-parallel
  rank (Neuron over NeuronCores) holds ceil(heads / (tp x cores)) heads per core, so KV heads
  replicate per core;
- `meta.formats`: the number formats its matrix kernels run natively (others fall back to a
  wider format the chip has, weight-only where the weights are narrower).

Every chip names its deployed stack (`chip.stack`); `ideal` is the silicon with a mature kernel
library and no host overhead. The difference between the two is the software moat.

    >>> s = load_stack("ideal")
    >>> s.has("flash_attention"), s.params_for(load_chip("h100-sxm")).step_overhead_s
    (True, 0.0)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..chip import DTYPES, Chip, load_chip
from ..errors import TapeoutError
from ..llm.kernels import Kernel
from ..sourced import DataFileError, load_table, values
from .params import PerfParams, check_params, load_params

KERNELS = ("flash_attention", "paged_attention", "mla", "grouped_moe", "fused_norm", "graphs", "dynamic_shapes")
IMPLS = ("fused", "pytorch-cudagraph")
_META = ("name", "vendor", "software", "description", "inherit", "impl", "kernels", "formats", "tp_ranks", "moe")
TP_RANKS = ("chip", "core")
MOE_MODES = ("sparse", "dense")


@dataclass(frozen=True)
class Stack:
    name: str
    vendor: str
    software: str
    description: str
    impl: str                          # kernel sequence of an LLM step: fused | pytorch-cudagraph
    tp_ranks: str                      # what one tensor-parallel rank is: a chip, or each core of a chip
    kernels: frozenset                 # fused kernels it has (KERNELS)
    formats: tuple | None              # native matrix formats; None: every format the chip has
    overrides: dict = field(compare=False)      # PerfParams field -> value
    quantities: dict = field(compare=False, repr=False)  # field -> Quantity (value and source)
    references: dict = field(compare=False, repr=False)
    inherit: str | None = None
    moe: str = "sparse"                # routed experts: only the tokens routed to each (sparse), or every token (dense)

    def has(self, kernel: str) -> bool:
        return kernel in self.kernels

    def native(self, dtype: str) -> bool:
        """The stack runs `dtype` matrix kernels natively (the chip must have the format too)."""
        return self.formats is None or dtype in self.formats

    def rank_cores(self, chip: Chip) -> int:
        """Tensor-parallel ranks per chip: its cores where the stack shards over cores, else 1."""
        return chip.cores.count if self.tp_ranks == "core" else 1

    def params_for(self, chip: Chip) -> PerfParams:
        """The chip family's performance parameters with this stack's overrides."""
        return _params(tuple(sorted(self.overrides.items())), chip.chip.family)

    def cite(self, key: str) -> str:
        q = self.quantities.get(key)
        return q.cite(self.references) if q else ""


@lru_cache(maxsize=None)
def _params(overrides: tuple, family: str) -> PerfParams:
    return dataclasses.replace(load_params(family), **dict(overrides))


def stacks_dir():
    return resources.files("tapeout") / "data" / "stacks"


def stack_names() -> list[str]:
    return sorted(p.name[:-5] for p in stacks_dir().iterdir() if p.name.endswith(".toml"))


def _check_meta(path: str, meta: dict) -> None:
    for k in meta:
        if k not in _META:
            raise DataFileError(f"{path}: meta.{k}: unknown key (known: {', '.join(_META)})")
    for k in meta.get("kernels", ()):
        if k not in KERNELS:
            raise DataFileError(f"{path}: meta.kernels: unknown kernel {k!r} (known: {', '.join(KERNELS)})")
    for d in meta.get("formats", ()):
        if d not in DTYPES:
            raise DataFileError(f"{path}: meta.formats: unknown format {d!r} (known: {', '.join(DTYPES)})")
    if meta.get("tp_ranks", "chip") not in TP_RANKS:
        raise DataFileError(f"{path}: meta.tp_ranks: must be one of {', '.join(TP_RANKS)}")
    if meta.get("moe", "sparse") not in MOE_MODES:
        raise DataFileError(f"{path}: meta.moe: must be one of {', '.join(MOE_MODES)}")
    if meta.get("impl", "fused") not in IMPLS:
        raise DataFileError(f"{path}: meta.impl: must be one of {', '.join(IMPLS)}")


def _raw(name: str, seen: tuple = ()) -> tuple[dict, dict, dict]:
    """(meta, quantities, references) of a stack file merged over the file it inherits."""
    if name in seen:
        raise DataFileError(f"data/stacks/{name}.toml: inherits itself ({' -> '.join(seen + (name,))})")
    if not (stacks_dir() / f"{name}.toml").is_file():
        raise TapeoutError(f"stack {name!r}: no such software stack (known: {', '.join(stack_names())})")
    t = load_table(f"stacks/{name}.toml")
    path = f"data/stacks/{name}.toml"
    _check_meta(path, t["meta"])
    extra = set(t) - {"params", "meta", "references"}
    if extra:
        raise DataFileError(f"{path}: unknown table(s) {sorted(extra)}: numbers go under [params.<name>]")
    q = check_params(path, dict(t.get("params", {})))
    meta, refs = dict(t["meta"]), dict(t["references"])
    parent = meta.get("inherit")
    if parent:
        pm, pq, pr = _raw(parent, seen + (name,))
        meta = {**{k: v for k, v in pm.items() if k not in ("name", "inherit")}, **meta}
        q, refs = {**pq, **q}, {**pr, **refs}
    return meta, q, refs


def load_stack(spec: str | Stack | None) -> Stack:
    """A stack by name (data/stacks/<name>.toml); a Stack passes through."""
    return spec if isinstance(spec, Stack) else _load("ideal" if spec is None else str(spec))


@lru_cache(maxsize=None)
def _load(name: str) -> Stack:
    meta, q, refs = _raw(name)
    kernels = frozenset(meta.get("kernels", KERNELS))
    formats = tuple(meta["formats"]) if "formats" in meta else None
    return Stack(name=name, vendor=meta.get("vendor", ""), software=meta.get("software", ""),
                 description=meta.get("description", ""), impl=meta.get("impl", "fused"),
                 tp_ranks=meta.get("tp_ranks", "chip"), moe=meta.get("moe", "sparse"), kernels=kernels,
                 formats=formats, overrides=values(q), quantities=q, references=refs, inherit=meta.get("inherit"))


def stack_for(chip, stack: str | Stack | None = None) -> Stack:
    """The stack `chip` runs: `stack` if given, else the chip's deployed stack (its file's chip.stack)."""
    if stack is not None:
        return load_stack(stack)
    c = chip if isinstance(chip, Chip) else load_chip(chip)
    return load_stack(c.chip.stack)


def _materialized(k: Kernel) -> Kernel:
    """Attention without a flash kernel: the score matrix goes to memory (QK^T writes it, softmax
    reads and writes it, PV reads it), 16-bit, once per (query, key) pair under the mask."""
    B, Sq, Skv, hq = k.shape[:4]
    causal = k.shape[7]
    pairs = B * hq * (Sq * (Skv - Sq) + Sq * (Sq + 1) / 2 if causal else Sq * Skv)
    return dataclasses.replace(k, bytes_read=k.bytes_read + 4 * pairs, bytes_written=k.bytes_written + 4 * pairs)


def _ungrouped(k: Kernel) -> Kernel:
    """A grouped GEMM (MoE experts) without a grouped kernel: one launch per group."""
    M, N, K, groups = k.shape
    g = max(1, round(groups))
    return dataclasses.replace(k, shape=(M, N, K, 1), count=k.count * g, flops=k.flops / g,
                               bytes_read=k.bytes_read / g, bytes_written=k.bytes_written / g,
                               weight_bytes=k.weight_bytes / g)


def lower(stack: Stack, kernels: list[Kernel]) -> list[Kernel]:
    """The kernel sequence as `stack` runs it: fused kernels it lacks run the unfused way."""
    flash, grouped = stack.has("flash_attention"), stack.has("grouped_moe")
    if flash and grouped:
        return list(kernels)
    out = []
    for k in kernels:
        if k.kind == "attention" and not flash:
            k = _materialized(k)
        elif k.kind == "gemm" and not grouped and k.shape[3] > 1 and k.name.startswith("expert"):
            k = _ungrouped(k)
        out.append(k)
    return out
