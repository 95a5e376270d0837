"""A chip as a system installs it, where that differs from its file: a board power limit, or links
wired point to point instead of through a switch (benchmarks/validation.py --siblings)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .chip import Chip, load_chip
from .energy import idle_w
from .errors import TapeoutError


def as_installed(chip: "str | Path | Chip", *, power_limit_w: float | None = None, link_peers: int | None = None) -> Chip:
    """The chip as a system installs it, where that differs from its file.

    `power_limit_w`: a board power limit below the chip's TDP (`nvidia-smi -pl`, MLPerf's MaxQ
    systems) or above it (a higher-TGP board): the sustained-clock solver fits this instead.
    `link_peers`: the chip's links wired point to point to this many peers, split evenly, instead of
    through its switch (NVIDIA's 4-GPU HGX boards: 6 of an H100's 18 NVLinks to each of 3 peers).
    The result is renamed (`h100-sxm@450W`, `h100-sxm-4way`) so that per-name tables do not apply."""
    c = load_chip(chip)
    name = c.name
    if power_limit_w is not None:
        idle = idle_w(c)     # a power limit leaves the idle draw as it is
        if not idle < float(power_limit_w) <= 5000:
            raise TapeoutError(f"power_limit_w {power_limit_w!r}: must be above {c.name}'s idle power "
                               f"({idle:.0f} W) and at most 5000 W")
        name = f"{name}@{float(power_limit_w):g}W"
        c = replace(c, chip=replace(c.chip, tdp_w=float(power_limit_w), idle_w=idle))
    if link_peers is not None:
        link = c.links.chip_to_chip
        if link.count == 0 or link.topology == "none":
            raise TapeoutError(f"link_peers: {c.name} has no chip-to-chip links (links.chip_to_chip)")
        if not 1 <= int(link_peers) <= link.count:
            raise TapeoutError(f"link_peers {link_peers!r}: must be 1 to {c.name}'s {link.count} links")
        name = f"{name}-{int(link_peers) + 1}way"
        c = replace(c, links=replace(c.links, chip_to_chip=replace(link, count=int(link_peers), topology="fully-connected")))
    return replace(c, chip=replace(c.chip, name=name)) if name != c.name else c
