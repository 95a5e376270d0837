"""Helpers shared by the CLI modules: console, number formatting, JSON output."""
from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

console = Console(highlight=False)


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
