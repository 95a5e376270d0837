"""Requests for the serving simulator: arrivals (Poisson, bursty gamma, offline, trace file) and lengths.

    >>> reqs = generate(100, rate=5.0, workload="chat", seed=1)
    >>> len(reqs), reqs[0].arrival_s >= 0
    (100, True)

Length workloads are log-normal distributions from data/serve/workloads.toml (chat, rag,
sharegpt, sharegpt-1024, mlperf-llama2, mlperf-mixtral, mlperf-llama3.1-405b, reasoning,
long-context, agentic) or `fixed:PROMPT:OUTPUT`; a workload with `prefix_groups` and
`prefix_len` (agentic) prepends one of that many shared prefixes unless the caller sets its own; a table with `kind = "vision"` there (imagenet-224) is an image set,
which the LLM functions here refuse with a clear error. Arrivals: `poisson` (exponential
gaps), `gamma` (gaps with coefficient of variation `cv`: > 1 is bursty, < 1 smoother),
`offline` (all at t = 0, as MLPerf's Offline scenario issues every query at once).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TapeoutError
from .data import table

ARRIVALS = ("poisson", "gamma", "offline")


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    arrival_s: float
    prompt: int              # prompt tokens
    output: int              # tokens to generate (>= 1; the first comes out of the prefill)
    prefix_id: int = -1      # requests with the same prefix_id share their first prefix_len tokens
    prefix_len: int = 0


def workload_names(kind: str = "llm") -> list[str]:
    """Names of the shipped workloads of one kind ("llm": token-length distributions; "vision")."""
    return sorted(k for k, w in table("workloads").items() if w.get("kind", "llm") == kind)


def llm_workload(name: str) -> dict:
    """The length distribution of a shipped LLM workload (means, CVs, bounds; optional total_max)."""
    t = table("workloads")
    if name not in t:
        raise TapeoutError(f"workload {name!r}: use one of {', '.join(workload_names())} or fixed:PROMPT:OUTPUT")
    w = t[name]
    if w.get("kind", "llm") != "llm":
        raise TapeoutError(f"workload {name!r} is a {w['kind']} data set (data/serve/workloads.toml), not prompt/output "
                           f"token lengths; LLM serving takes {', '.join(workload_names())} or fixed:PROMPT:OUTPUT")
    if w.get("total_max", math.inf) < w["prompt_max"] + w["output_min"]:
        raise TapeoutError(f"data/serve/workloads.toml: {name}.total_max is below prompt_max + output_min")
    return w


def _clipped_lognormal(rng, n: int, mean: float, cv: float, lo: float, hi) -> np.ndarray:
    """Log-normal samples clipped to [lo, hi] (hi: a number or one bound per sample), scaled so that
    the clipped mean is `mean`."""
    s2 = math.log(1.0 + cv * cv)
    x = rng.lognormal(-s2 / 2, math.sqrt(s2), n)      # mean 1
    a, b = mean * 1e-3, mean * 1e3
    for _ in range(60):                               # bisection on the scale k: mean(clip(k x)) = mean
        k = math.sqrt(a * b)
        if np.clip(k * x, lo, hi).mean() < mean:
            a = k
        else:
            b = k
    return np.maximum(np.rint(np.clip(k * x, lo, hi)), 1).astype(np.int64)


def lengths(workload: str, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) token counts of n requests."""
    if workload.startswith("fixed:"):
        try:
            p, o = (int(v) for v in workload.split(":")[1:3])
        except ValueError:
            raise TapeoutError(f"workload {workload!r}: write fixed:PROMPT:OUTPUT, e.g. fixed:1024:128") from None
        if p < 1 or o < 1:
            raise TapeoutError(f"workload {workload!r}: prompt and output must be >= 1")
        return np.full(n, p, np.int64), np.full(n, o, np.int64)
    w = llm_workload(workload)
    prompt = _clipped_lognormal(rng, n, w["prompt_mean"], w["prompt_cv"], w["prompt_min"], w["prompt_max"])
    out_max = np.minimum(w["output_max"], w.get("total_max", math.inf) - prompt)   # prompt + output <= total_max
    return prompt, _clipped_lognormal(rng, n, w["output_mean"], w["output_cv"], w["output_min"], out_max)


def workload_prefix(workload: str) -> tuple[int, int]:
    """(prefix groups, prefix tokens) a shipped workload shares between its requests ((0, 0): none)."""
    if workload.startswith("fixed:"):
        return 0, 0
    w = llm_workload(workload)
    return int(w.get("prefix_groups", 0)), int(w.get("prefix_len", 0))


def arrival_times(n: int, rate: float | None, rng, process: str = "poisson", cv: float = 1.0) -> np.ndarray:
    if process not in ARRIVALS:
        raise TapeoutError(f"arrival process {process!r}: use one of {', '.join(ARRIVALS)}")
    if process == "offline":
        return np.zeros(n)
    if not rate or rate <= 0:
        raise TapeoutError(f"rate must be > 0 for {process} arrivals (or serve offline)")
    if process == "poisson" or cv == 1.0:
        gaps = rng.exponential(1.0 / rate, n)
    else:
        if cv <= 0:
            raise TapeoutError(f"cv {cv}: the coefficient of variation must be > 0")
        k = 1.0 / (cv * cv)
        gaps = rng.gamma(k, 1.0 / (rate * k), n)
    return np.cumsum(gaps) - gaps[0]


def generate(n: int | None = None, *, rate: float | None = None, duration_s: float | None = None,
             workload: str = "chat", arrival: str = "poisson", cv: float = 1.0, seed: int = 0,
             prefix_groups: int = 0, prefix_len: int = 0) -> list[Request]:
    """`n` requests (or rate x duration_s of them), seeded. With `prefix_groups` > 0 every request
    starts with one of that many shared prefixes of `prefix_len` tokens (e.g. system prompts); with
    neither set, the workload's own (`workload_prefix`, e.g. agentic sessions)."""
    if n is None:
        if rate is None or duration_s is None:
            raise TapeoutError("give the number of requests, or a rate and a duration")
        n = max(1, round(rate * duration_s))
    if n < 1:
        raise TapeoutError(f"number of requests {n}: must be >= 1")
    rng = np.random.default_rng(seed)
    prompt, output = lengths(workload, n, rng)
    if prefix_groups <= 0 and prefix_len <= 0:
        prefix_groups, prefix_len = workload_prefix(workload)
    t = arrival_times(n, rate, rng, arrival, cv)
    groups = rng.integers(0, prefix_groups, n) if prefix_groups > 0 and prefix_len > 0 else None
    out = []
    for i in range(n):
        p, pid, plen = int(prompt[i]), -1, 0
        if groups is not None:
            pid, plen = int(groups[i]), prefix_len
            p += prefix_len
        out.append(Request(i, float(t[i]), p, int(output[i]), pid, plen))
    return out


_COLS = {"arrival_s": ("arrival_s", "arrival", "timestamp", "time"),
         "prompt": ("prompt", "prompt_tokens", "input_tokens", "input_len", "input"),
         "output": ("output", "output_tokens", "output_len", "max_tokens")}


def _field(row: dict, key: str, where: str):
    for name in _COLS[key]:
        if name in row and row[name] not in (None, ""):
            return row[name]
    raise TapeoutError(f"{where}: missing column {key!r} (accepted: {', '.join(_COLS[key])})")


def _rows(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TapeoutError(f"{path}: not a text file (a trace is CSV or JSONL)") from None
    if path.suffix in (".jsonl", ".json"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TapeoutError(f"{path}:{i}: not valid JSON: {e}") from None
                if not isinstance(row, dict):
                    raise TapeoutError(f"{path}:{i}: not a JSON object with arrival_s, prompt and output")
                yield f"{path}:{i}", row
    else:
        for i, row in enumerate(csv.DictReader(text.splitlines()), 2):
            yield f"{path}:{i}", row


def load_trace(path: str | Path) -> list[Request]:
    """Requests from a CSV (header row) or JSONL file with arrival time (s), prompt and output tokens;
    optional prefix_id / prefix_len columns. Sorted by arrival time."""
    p = Path(path)
    if not p.is_file():
        raise TapeoutError(f"{p}: no such trace file")
    reqs = []
    for where, row in _rows(p):
        try:
            t, n_in, n_out = (float(_field(row, "arrival_s", where)), int(float(_field(row, "prompt", where))),
                              int(float(_field(row, "output", where))))
            pid, plen = int(float(row.get("prefix_id", -1) or -1)), int(float(row.get("prefix_len", 0) or 0))
        except ValueError as e:
            raise TapeoutError(f"{where}: not a number: {e}") from None
        if t < 0 or n_in < 1 or n_out < 1 or plen < 0 or plen > n_in:
            raise TapeoutError(f"{where}: need arrival >= 0, prompt >= 1, output >= 1, 0 <= prefix_len <= prompt")
        reqs.append((t, n_in, n_out, pid, plen))
    if not reqs:
        raise TapeoutError(f"{p}: no requests in the trace")
    reqs.sort(key=lambda r: r[0])
    return [Request(i, *r) for i, r in enumerate(reqs)]


def save_trace(reqs: list[Request], path: str | Path) -> None:
    """Write requests as CSV (the format load_trace reads)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrival_s", "prompt", "output", "prefix_id", "prefix_len"])
        for r in reqs:
            w.writerow([f"{r.arrival_s:.6f}", r.prompt, r.output, r.prefix_id, r.prefix_len])
