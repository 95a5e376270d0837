"""Data tables in which every number carries its source (`src/tapeout/data/**/*.toml`): the one
provenance format and its one validator, for the data tables, the chip files' `[sources]` and the
NPU timing table.

A quantity is a TOML table with `value`, `ref` (a key of the file's `[references]`, a URL or a
repository path), `confidence` and, unless the value is quoted as published, a `note` saying how
it was derived, assumed or fitted:

    [references]
    HOROWITZ = "M. Horowitz, Computing's energy problem, ISSCC 2014"
    [mac_pj.fp16]
    value = 2.0
    ref = "HOROWITZ"
    confidence = "derived"
    note = "fp16 multiply 1.1 pJ + fp32 add 0.9 pJ"

`load_table` checks that form (a bare number anywhere else is an error) and returns the nested
tables with `Quantity` leaves; `values` strips them to plain floats for the models.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import TapeoutError

CONFIDENCES = ("datasheet", "reported", "derived", "assumed", "fitted")
SOURCE_KEYS = ("ref", "confidence", "note")
REF_PREFIXES = ("http", "src/", "benchmarks/", "docs/")
_META_KEYS = ("meta", "references")


class DataFileError(TapeoutError):
    """A data table under src/tapeout/data/ that breaks the sourced-quantity form."""


@dataclass(frozen=True)
class Quantity:
    value: float
    ref: str
    confidence: str
    note: str = ""
    unit: str = ""

    def cite(self, refs: dict[str, str]) -> str:
        src = refs.get(self.ref, self.ref)
        return f"{src} [{self.confidence}]" + (f": {self.note}" if self.note else "")


def source_problem(t: dict, refs: dict[str, str] | None) -> tuple[str, str] | None:
    """What breaks the source form {ref, confidence, note} in `t`: (the sub-key, the reason), or None.

    The one check for every sourced number: data tables, chip files' `[sources]`, the NPU timing
    table. A ref names a key of `refs` (the file's `[references]`) or is a URL or repository path;
    with `refs=None` the caller checks refs itself (chip files, which suggest near names).
    """
    for need in ("ref", "confidence"):
        if need not in t:
            return "", f"missing '{need}' (every number needs a source)"
    for part in SOURCE_KEYS:
        if part in t and not isinstance(t[part], str):
            return part, f"must be a string, got {type(t[part]).__name__}"
    if t["confidence"] not in CONFIDENCES:
        return "confidence", f"must be one of {', '.join(CONFIDENCES)}, got {t['confidence']!r}"
    if t["confidence"] not in ("datasheet", "reported") and not t.get("note", "").strip():
        return "", f"a {t['confidence']} value needs a 'note' saying how"
    if refs is not None and t["ref"] not in refs and not t["ref"].startswith(REF_PREFIXES):
        return "ref", f"{t['ref']!r} is not in [references]"
    return None


def _quantity(path: str, key: str, t: dict, refs: dict[str, str]) -> Quantity:
    extra = set(t) - {"value", "unit", *SOURCE_KEYS}
    if extra:
        raise DataFileError(f"{path}: {key}: unknown keys {sorted(extra)} in a quantity")
    v = t["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataFileError(f"{path}: {key}.value: must be a number, got {v!r}")
    problem = source_problem(t, refs)
    if problem:
        sub, reason = problem
        raise DataFileError(f"{path}: {key}{'.' + sub if sub else ''}: {reason}")
    return Quantity(float(v), t["ref"], t["confidence"], t.get("note", ""), str(t.get("unit", "")))


def _walk(path: str, prefix: str, node: Any, refs: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if "value" in node:
            return _quantity(path, prefix, node, refs)
        return {k: _walk(path, f"{prefix}.{k}".lstrip("."), v, refs) for k, v in node.items()}
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        raise DataFileError(f"{path}: {prefix}: bare number {node!r}; write {{value = ..., ref = ..., confidence = ...}}")
    return node


@lru_cache(maxsize=None)
def load_table(relpath: str) -> dict[str, Any]:
    """The table `src/tapeout/data/<relpath>` with Quantity leaves, plus its `references` and `meta`."""
    res = resources.files("tapeout") / "data" / relpath
    try:
        data = tomllib.loads(res.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(f"data/{relpath}: no such data file") from None
    except tomllib.TOMLDecodeError as e:
        raise DataFileError(f"data/{relpath}: not valid TOML: {e}") from None
    refs = {str(k): str(v) for k, v in data.get("references", {}).items()}
    out = {k: _walk(f"data/{relpath}", k, v, refs) for k, v in data.items() if k not in _META_KEYS}
    out["references"] = refs
    out["meta"] = data.get("meta", {})
    return out


@lru_cache(maxsize=None)
def table(relpath: str) -> dict[str, Any]:
    """The table `src/tapeout/data/<relpath>` with plain floats (sources checked on load)."""
    return values(load_table(relpath))


def values(tree: Any) -> Any:
    """The same nested tables with each Quantity replaced by its float value."""
    if isinstance(tree, Quantity):
        return tree.value
    if isinstance(tree, dict):
        return {k: values(v) for k, v in tree.items() if k not in _META_KEYS}
    return tree


def quantities(tree: Any, prefix: str = ""):
    """Every (dotted key, Quantity) in a table, for listings and the provenance tests."""
    if isinstance(tree, Quantity):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            if k not in _META_KEYS:
                yield from quantities(v, f"{prefix}.{k}".lstrip("."))


@lru_cache(maxsize=None)
def shipped_names(package: str, suffix: str) -> tuple[str, ...]:
    """Sorted names (without `suffix`) of the files shipped in `package`: chip presets, model configs."""
    return tuple(sorted(p.name[: -len(suffix)] for p in resources.files(package).iterdir() if p.name.endswith(suffix)))


def interp_loglog(table: dict[float, float], x: float, what: str) -> float:
    """Piecewise log-log interpolation in {x: y}; outside the table's range is an error."""
    xs = sorted(table)
    if not xs[0] <= x <= xs[-1]:
        raise TapeoutError(f"{what}: {x:g} is outside the data table's range {xs[0]:g}..{xs[-1]:g}")
    for lo, hi in zip(xs, xs[1:]):
        if lo <= x <= hi:
            if x == lo or hi == lo:
                return table[lo]
            w = math.log(x / lo) / math.log(hi / lo)
            return math.exp((1 - w) * math.log(table[lo]) + w * math.log(table[hi]))
    return table[xs[-1]]
