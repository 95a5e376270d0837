"""Helpers shared by the CLI modules: console, number formatting, JSON output."""
from __future__ import annotations

import json
import math
import sys
from typing import Any

import typer
from rich.console import Console

console = Console(highlight=False)

POWER_LIMIT = typer.Option(None, "--power-limit", help="board power limit in W (nvidia-smi -pl, MLPerf MaxQ): "
                                                       "the clock solver fits it instead of the chip's TDP")


def power_limited(chip: str, power_limit: float | None):
    """`chip` under the --power-limit board cap (tapeout.board.as_installed), or as given without one."""
    if power_limit is None:
        return chip
    from ..board import as_installed

    return as_installed(chip, power_limit_w=power_limit)


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """1.5e12 -> '1.50 T'; None -> '-'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for p, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= p:
            return f"{x / p:.{digits}g} {s}{unit}"
    return f"{x:.{digits}g} {unit}".rstrip()


def gib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**30:.1f} GiB"


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=_default) + "\n")


def _default(o: Any):
    import dataclasses

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def output_path(path: Any, option: str, *, folder: bool = False):
    """`path` (a file the command writes, or a `folder`) checked before any work: a Path, or None.

    Missing parent folders are fine (the command creates them); a path below a regular file, an
    empty name or a file where a folder is wanted (and the reverse) is the user's error.
    """
    from pathlib import Path

    from ..errors import TapeoutError

    if path is None:
        return None
    if not str(path).strip():
        raise TapeoutError(f"{option}: empty path")
    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        raise TapeoutError(f"{option} {path}: is {'a file' if folder else 'a folder'}; name {'a folder' if folder else 'a file'}")
    above = next(a for a in p.absolute().parents if a.exists())
    if not above.is_dir():
        raise TapeoutError(f"{option} {path}: {above} is a file, not a folder")
    return p


def at_least(lo: float, **options: Any) -> None:
    """Raise for the first option (given as name=value; None is unset) that is not a number >= `lo`."""
    _bound(lambda v: v >= lo, f">= {lo:g}", options)


def above(lo: float, **options: Any) -> None:
    """Raise for the first option (given as name=value; None is unset) that is not a number > `lo`."""
    _bound(lambda v: v > lo, f"> {lo:g}", options)


def _bound(ok, what: str, options: dict) -> None:
    from ..errors import TapeoutError

    for name, v in options.items():
        if v is not None and not ok(v):   # NaN fails every comparison
            raise TapeoutError(f"--{name.replace('_', '-')} {v}: must be {what}")
