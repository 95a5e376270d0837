"""The serving layer's data tables (`src/tapeout/data/serve/*.toml`): every number with its source.

Same form as the other sourced tables (`{value, ref, confidence, note}`; see tapeout/sourced.py):

    [network.ib-ndr400.bandwidth_bytes_per_s]
    value = 50e9
    ref = "DGXH100"
    confidence = "derived"
    note = "400 Gb/s per GPU / 8"

`table(name)` returns the nested dicts with plain floats; `cite(name, dotted_key)` the source line.
"""
from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

from ..errors import TapeoutError

CONFIDENCES = ("datasheet", "reported", "derived", "assumed", "fitted")


class ServeDataError(TapeoutError):
    """A data/serve table that breaks the sourced-quantity form."""


def _strip(path: str, key: str, node, refs: dict):
    if isinstance(node, dict) and "value" in node:
        for need in ("ref", "confidence"):
            if need not in node:
                raise ServeDataError(f"{path}: {key}: missing '{need}' (every number needs a source)")
        if node["confidence"] not in CONFIDENCES:
            raise ServeDataError(f"{path}: {key}.confidence: must be one of {', '.join(CONFIDENCES)}")
        if node["confidence"] not in ("datasheet", "reported") and not node.get("note"):
            raise ServeDataError(f"{path}: {key}: a {node['confidence']} value needs a 'note' saying how")
        ref = str(node["ref"])
        if ref not in refs and not ref.startswith(("http", "src/", "docs/", "benchmarks/")):
            raise ServeDataError(f"{path}: {key}.ref: {ref!r} is not in [references]")
        return node["value"]
    if isinstance(node, dict):
        return {k: _strip(path, f"{key}.{k}".lstrip("."), v, refs) for k, v in node.items()}
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        raise ServeDataError(f"{path}: {key}: bare number {node!r}; write {{value = ..., ref = ..., confidence = ...}}")
    return node


@lru_cache(maxsize=None)
def _raw(name: str) -> dict:
    res = resources.files("tapeout") / "data" / "serve" / f"{name}.toml"
    try:
        return tomllib.loads(res.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServeDataError(f"data/serve/{name}.toml: no such data file") from None


@lru_cache(maxsize=None)
def table(name: str) -> dict:
    """data/serve/<name>.toml with every quantity reduced to its value (sources checked)."""
    raw = _raw(name)
    refs = {str(k): str(v) for k, v in raw.get("references", {}).items()}
    return {k: _strip(f"data/serve/{name}.toml", k, v, refs)
            for k, v in raw.items() if k not in ("references", "meta")}


def cite(name: str, key: str) -> str:
    """'reference [confidence]: note' for a dotted key of data/serve/<name>.toml."""
    raw = _raw(name)
    node = raw
    for part in key.split("."):
        node = node[part]
    ref = raw.get("references", {}).get(node["ref"], node["ref"])
    return f"{ref} [{node['confidence']}]" + (f": {node['note']}" if node.get("note") else "")
