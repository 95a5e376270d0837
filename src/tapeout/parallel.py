"""Collective communication over a chip's links (all-reduce, all-gather, all-to-all).

Bandwidth-latency (alpha-beta) models of the classic algorithms; the link figures come from
the chip file (`links.chip_to_chip`): total bandwidth per direction, latency, topology.
"""
from __future__ import annotations

from .chip import Chip
from .errors import TapeoutError


def collective_time(chip: Chip, kind: str, nbytes: float, n: int, algorithm: str = "ring") -> float:
    """Seconds for a collective of `nbytes` (per participant's buffer) across `n` chips."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    link = chip.links.chip_to_chip
    if link.count == 0 or link.bandwidth_bytes_per_s <= 0:
        raise TapeoutError(f"{chip.name}: has no chip-to-chip links (links.chip_to_chip) for a {n}-chip {kind}")
    bw, lat = link.bandwidth_bytes_per_s, link.latency_s
    if link.topology in ("ring",) or link.topology == "mesh":
        bw = min(bw, 2 * bw / max(link.count, 1))  # a ring uses two links per chip
    steps = {"allreduce": 2 * (n - 1), "allgather": n - 1, "reducescatter": n - 1, "alltoall": n - 1}.get(kind)
    if steps is None:
        raise TapeoutError(f"unknown collective {kind!r}")
    volume = {"allreduce": 2 * (n - 1) / n, "allgather": (n - 1) / n, "reducescatter": (n - 1) / n,
              "alltoall": 1.0}[kind] * nbytes
    if algorithm == "tree" and kind == "allreduce":
        import math

        steps = 2 * math.ceil(math.log2(n))
    return steps * lat + volume / bw
