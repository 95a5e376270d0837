"""Run a sweep: evaluate the points of a space on local processes or a Ray cluster, appending each
result to a JSONL file as it finishes, so that a crash or Ctrl-C loses nothing and a rerun resumes.

    out/sweep-NAME/results.jsonl     one record per point (see evaluate.py), appended as points finish
    out/sweep-NAME/front.csv         the Pareto front; ranked.csv: the feasible points best-first
    out/sweep-NAME/pareto.png        plots (with matplotlib)

Only the parent process writes the file (one line per record, flushed), so a line is either whole
or, if the process dies mid-write, unparsable and skipped on reading. A rerun skips the ids already
in the file; points whose evaluation was under way when the sweep stopped are evaluated again.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import TapeoutError
from .evaluate import evaluate_point
from .pareto import pareto_front, ranked
from .space import Space, context_hash, point_id

CHUNK = 8   # points per Ray task (local processes take one point per task)


@dataclass(frozen=True)
class SweepResult:
    space: Space
    records: list          # every record of this space's points (finished ones)
    front: list
    new: int               # evaluated by this run
    reused: int            # found in the results file
    seconds: float
    out_dir: Path

    @property
    def points_per_minute(self) -> float:
        return self.new / self.seconds * 60 if self.seconds > 0 else 0.0

    @property
    def feasible(self) -> list:
        return [r for r in self.records if r["feasible"]]


# ----------------------------------------------------------------------------- the results file

def read_records(path: Path) -> dict[str, dict]:
    """{id: record} of the complete lines of a results file (a torn last line is skipped)."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and "id" in r:
                out.setdefault(r["id"], r)
    return out


class Appender:
    """Appends records to a JSONL file, one flushed line each; starts on a fresh line after a torn one."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self.f = open(path, "a", encoding="utf-8")
        if torn:
            self.f.write("\n")

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec, separators=(",", ":"), default=float) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# ----------------------------------------------------------------------------- executors

_SPACE: Space | None = None


def _init_worker(space: Space, ignore_sigint: bool = False) -> None:
    global _SPACE
    _SPACE = space
    if ignore_sigint:   # Ctrl-C goes to the parent, which stops the pool; workers stay quiet

        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _eval_chunk(chunk: list[tuple[str, dict]]) -> list[dict]:
    return [evaluate_point(_SPACE, params, pid) for pid, params in chunk]


def _chunks(todo: list[tuple[str, dict]], n: int) -> list[list[tuple[str, dict]]]:
    return [todo[i:i + n] for i in range(0, len(todo), n)]


def _local(space: Space, todo, workers: int) -> Iterator[list[dict]]:
    if workers <= 1:
        _init_worker(space)
        for c in _chunks(todo, 1):
            yield _eval_chunk(c)
        return

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    chunk = 1   # one point per task: each result is written as soon as its point finishes
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(space, True))
    try:
        yield from pool.imap_unordered(_eval_chunk, _chunks(todo, chunk))
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _ray(space: Space, todo, address: str, workers: int) -> Iterator[list[dict]]:
    try:
        import ray
    except ImportError:
        raise TapeoutError("ray is not installed, so the sweep cannot run on a Ray cluster (pip install 'tapeout[ray]')") from None
    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address == "local":
            ray.init(num_cpus=workers, **kw)
        else:
            ray.init(address=address, **kw)
    try:
        remote = ray.remote(_ray_task)
        ref = ray.put(space)
        pending = [remote.remote(ref, c) for c in _chunks(todo, CHUNK)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for d in done:
                yield ray.get(d)
    finally:
        if started:
            ray.shutdown()


def _ray_task(space: Space, chunk):
    _init_worker(space)
    return _eval_chunk(chunk)


# ----------------------------------------------------------------------------- the sweep

def default_out(space: Space) -> Path:
    return Path("out") / f"sweep-{space.name}"


def plan(space: Space, sample: int | None = None, seed: int = 0) -> list[tuple[str, dict]]:
    """(id, params) of the points to run, in a deterministic order."""
    ctx = context_hash(space)
    return [(point_id(ctx, p), p) for p in space.points(sample, seed)]


def run_sweep(space: Space, out_dir: Path | str | None = None, *, workers: int | None = None,
              ray: str | None = None, sample: int | None = None, seed: int = 0, limit: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Evaluate the points of `space` not yet in out_dir/results.jsonl, appending each as it finishes.

    workers: local processes (default: the CPUs); ray: "local" or a cluster address; limit: stop
    after this many new points (for tests and benchmarks); progress(done, total) after each chunk."""
    out = Path(out_dir) if out_dir is not None else default_out(space)
    path = out / "results.jsonl"
    points = plan(space, sample, seed)
    ids = {pid for pid, _ in points}
    have = {k: v for k, v in read_records(path).items() if k in ids}
    todo = [(pid, p) for pid, p in points if pid not in have]
    if limit is not None:
        todo = todo[:limit]
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    app = Appender(path)
    new: dict[str, dict] = {}
    batches = _ray(space, todo, ray, workers) if ray else _local(space, todo, workers)
    try:
        for batch in batches:
            for rec in batch:
                if rec["id"] not in have and rec["id"] not in new:
                    app.write(rec)
                    new[rec["id"]] = rec
            if progress:
                progress(len(have) + len(new), len(points))
    finally:
        batches.close()
        app.close()
    secs = time.perf_counter() - t0
    records = [r for r in ({**have, **new}.get(pid) for pid, _ in points) if r is not None]
    return SweepResult(space, records, pareto_front(records, space.objectives), len(new), len(have), secs, out)


def write_tables(res: SweepResult, top: int | None = None) -> dict[str, Path]:
    """front.csv and ranked.csv next to the results; returns their paths."""
    space = res.space
    knobs = [k for k, _ in space.knobs]
    cols = [m for m, _ in space.objectives] + ["cost_usd", "die_mm2", "tdp_w"]
    cols = list(dict.fromkeys(cols))
    sign = -1 if space.rank_by in space.minimize else 1
    files = {"front": res.out_dir / "front.csv", "ranked": res.out_dir / "ranked.csv"}
    rows = {"front": res.front, "ranked": ranked(res.records, space.rank_by, sign)[:top]}
    for name, recs in rows.items():
        with open(files[name], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", *knobs, *cols])
            for r in recs:
                w.writerow([r["id"], *(r["params"].get(k) for k in knobs), *(r["metrics"].get(c) for c in cols)])
    return files


def reasons(records: Iterable[dict]) -> dict[str, int]:
    """Counts of infeasibility reasons, with numbers stripped so that similar reasons group."""
    out: dict[str, int] = {}
    for r in records:
        if not r["feasible"]:
            key = re.sub(r"(?<![A-Za-z])\d[\d.,]*", "N", r["reason"] or "?")[:120]
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
