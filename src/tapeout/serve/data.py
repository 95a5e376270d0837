"""The serving layer's data tables (`src/tapeout/data/serve/*.toml`), loaded through `tapeout.sourced`.

Every number is a sourced quantity (`{value, ref, confidence, note}`; see tapeout/sourced.py);
`table(name)` returns data/serve/<name>.toml with plain floats, its sources checked.
"""
from __future__ import annotations

from ..sourced import table as _table


def table(name: str) -> dict:
    """data/serve/<name>.toml with every quantity reduced to its value (sources checked)."""
    return _table(f"serve/{name}.toml")
