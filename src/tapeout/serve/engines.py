"""Serving engines' settings as the engines set them (`src/tapeout/data/serve/engines.toml`, sourced):
batch limits, KV block size, the memory plan and the micro-batches a pipeline keeps in flight, plus
the default SLOs. The one place these defaults live: serve(), the CLI and the design-space
objective read them from here.

    >>> e = engine_settings("trtllm")
    >>> e.memory_basis, e.memory_fraction, e.block_size
    ('free', 0.9, 32)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import TapeoutError
from .data import table

MEMORY_BASES = ("total", "free")


@dataclass(frozen=True)
class EngineSettings:
    name: str
    max_seqs: int                   # sequences in the running batch
    max_batched_tokens: int         # tokens in one step
    block_size: int                 # KV-cache block (tokens)
    memory_fraction: float          # of the whole memory ("total") or of what weights + activations leave ("free")
    memory_basis: str
    micro_batches_per_stage: int    # micro-batches in flight = this x pipeline stages

    def override(self, **kw) -> "EngineSettings":
        """These settings with each keyword that is not None in place of the engine's value."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def engine_names() -> tuple[str, ...]:
    return tuple(table("engines")["engine"])


def default_engine() -> str:
    return table("engines")["default"]["engine"]


def engine_settings(name: str | None = None) -> EngineSettings:
    """The settings of engine `name` (default: the table's default engine)."""
    t = table("engines")["engine"]
    name = default_engine() if name is None else name
    if name not in t:
        raise TapeoutError(f"engine {name!r}: unknown; data/serve/engines.toml has {', '.join(t)}")
    e = t[name]
    if e["memory_basis"] not in MEMORY_BASES:
        raise TapeoutError(f"data/serve/engines.toml: engine.{name}.memory_basis: use one of {', '.join(MEMORY_BASES)}")
    return EngineSettings(name, int(e["max_seqs"]), int(e["max_batched_tokens"]), int(e["block_size"]),
                          float(e["memory_fraction"]), e["memory_basis"], int(e["micro_batches_per_stage"]))


def default_slo() -> tuple[float, float]:
    """(TTFT seconds, TPOT seconds) used when no SLO is given."""
    s = table("engines")["slo"]
    return float(s["ttft_s"]), float(s["tpot_s"])
