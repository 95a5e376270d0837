"""Perfetto / Chrome trace of a simulated schedule: one process per replica, one slice per step.

Open the JSON in https://ui.perfetto.dev (or chrome://tracing). Slices are named prefill, decode or
mixed and carry the step's prefill tokens, decoding sequences and the engine's queue.
"""
from __future__ import annotations

import json
from pathlib import Path

from .sim import KIND

NAMES = {v: k for k, v in KIND.items()}


def trace_events(rec, limit: int = 200_000) -> list[dict]:
    pools = sorted({s[0] for s in rec.steps})
    pid_of = {}
    events = []
    for pool, rep, *_ in rec.steps:
        if (pool, rep) not in pid_of:
            pid_of[(pool, rep)] = pid = len(pid_of) + 1
            label = f"replica {rep}" if pools == ["continuous"] or len(pools) == 1 else f"{pool} replica {rep}"
            events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": label}})
    for pool, rep, start, end, kind, tokens, decodes, load in rec.steps[:limit]:
        events.append({"name": NAMES[kind], "ph": "X", "pid": pid_of[(pool, rep)], "tid": 1,
                       "ts": start * 1e6, "dur": max(end - start, 0.0) * 1e6,
                       "args": {"prefill_tokens": tokens, "decodes": decodes, "in_engine": load}})
    return events


def write_trace(rec, path: str | Path, limit: int = 200_000) -> int:
    """Write the trace; returns the number of step slices written (at most `limit`)."""
    events = trace_events(rec, limit)
    meta = {"steps": len(rec.steps), "written": min(len(rec.steps), limit)}
    Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}))
    return meta["written"]
