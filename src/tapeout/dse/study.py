"""`tapeout study NAME`: a sweep, the best designs it finds, and the incumbents, served in the
serving simulator and written up as an HTML report and a Markdown summary (docs/study.md).

    1. sweep the study's space with the analytic objective (resumable, out/study-NAME/sweep/);
    2. pick designs from the Pareto front: the best in tokens/s per chip, per joule and per dollar,
       and the balanced one (the knee);
    3. evaluate the picks, the reference design (the base chip as specified) and the incumbents on
       every workload, analytically (every layout) and in the serving simulator (the best layout,
       the highest Poisson rate whose p99 TTFT and TPOT meet the SLO);
    4. write report.html (plots embedded), summary.md (plots as PNG files next to it), results.json
       and the picked designs as chip files (designs/*.toml).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..chip import Chip, load_chip
from ..cost import chip_usd_per_hour, usd_per_mtok
from .design import Infeasible, chip_toml, physicals, point_chip, source_note
from .evaluate import chip_facts, served_costs
from .objective import EVALUATORS, Served, Workload
from .pareto import knee
from .space import Space, canonical, load_space, model_fingerprint
from .sweep import Appender, SweepResult, read_records, run_sweep

ROLES = (("throughput", "tok_s_per_chip"), ("efficiency", "tok_per_j"), ("value", "tok_s_per_kusd"))
RESULT_VERSION = 2   # bump when _served's record changes, so cached results are recomputed


@dataclass(frozen=True)
class Entry:
    """One chip of the comparison: an incumbent, the reference design or a picked design."""
    name: str
    kind: str                 # incumbent | reference | design
    chip: Chip
    facts: dict
    roles: tuple = ()
    params: dict = dataclasses.field(default_factory=dict)
    point_id: str = ""


@dataclass(frozen=True)
class StudyResult:
    space: Space
    sweep: SweepResult
    entries: list
    analytic: dict            # (entry name, workload name) -> Served dict or {"infeasible": reason}
    simulated: dict
    out_dir: Path
    seconds: float
    files: dict
    timing: dict = dataclasses.field(default_factory=dict)   # stage -> {seconds, computed, workers} of its last computing run


class _Stages:
    """Wall time of each stage; a stage that computed something records its time in timing.json."""

    def __init__(self):
        self.t, self.runs = time.perf_counter(), {}

    def done(self, stage: str, computed: int) -> None:
        now = time.perf_counter()
        self.runs[stage] = (now - self.t, computed)
        self.t = now

    def save(self, path: Path, workers: int) -> dict:
        old = json.loads(path.read_text()) if path.exists() else {}
        for stage, (secs, n) in self.runs.items():
            if n or stage not in old:
                old[stage] = {"seconds": round(secs, 1), "computed": n, "workers": workers}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(old, indent=1))
        return old


# ----------------------------------------------------------------------------- picking designs

def pick_designs(space: Space, sweep: SweepResult, n: int) -> list[Entry]:
    """Up to n designs from the front: the best per objective, then the knee; one entry per design."""
    front = sweep.front
    if not front:
        return []
    chosen: dict[str, list[str]] = {}
    for role, metric in ROLES:
        best = max(front, key=lambda r: (r["metrics"].get(metric, -math.inf), r["id"]))
        chosen.setdefault(best["id"], []).append(role)
    k = knee(front, [(m, 1) for _, m in ROLES])
    chosen.setdefault(k["id"], []).append("balanced")
    by_id = {r["id"]: r for r in front}
    out = []
    for pid, roles in list(chosen.items())[:n]:
        r = by_id[pid]
        name = f"{space.base.name}-{roles[0]}"
        chip, facts = physicals(point_chip(space.base, r["params"], name), space.base, space.constraints)
        out.append(Entry(name, "design", chip, facts, tuple(roles), r["params"], pid))
    return out


def comparison(space: Space, picks: list[Entry]) -> list[Entry]:
    st = space.study
    inc = [Entry(n, "incumbent", load_chip(n), chip_facts(load_chip(n))) for n in st.get("incumbents", [])]
    ref = []
    if st.get("reference"):
        c = load_chip(st["reference"])
        ref = [Entry(c.name, "reference", c, chip_facts(c))]
    return picks + ref + inc


# ----------------------------------------------------------------------------- evaluation

def _served(entry: Entry, wl: Workload, evaluator: str) -> dict:
    try:
        s: Served = EVALUATORS[evaluator](entry.chip, wl)
    except Infeasible as e:
        return {"infeasible": str(e)}
    d = served_costs(s, entry.facts["cost_usd"])
    d["usd_per_mtok_price"] = _at_price(entry.chip, s.tok_s_per_chip)
    return d


def _at_price(chip, tok_s_per_chip: float) -> float | None:
    """$/Mtok on the serving simulator's basis: rental, else list price, else manufacturing cost (+ energy at TDP)."""
    usd_h, _ = chip_usd_per_hour(chip)
    return usd_per_mtok(usd_h, tok_s_per_chip) if usd_h else None


def _task_key(entry: Entry, wl: Workload, evaluator: str) -> str:
    blob = {"chip": entry.chip.flat(), "wl": dataclasses.asdict(wl), "ev": evaluator, "models": model_fingerprint(),
            "version": RESULT_VERSION}
    return hashlib.sha256(canonical(blob).encode()).hexdigest()[:16]


def _run_task(task) -> tuple[str, str, str, dict]:
    key, entry, wl, evaluator = task
    return key, entry.name, wl.name, _served(entry, wl, evaluator)


def evaluate_pairs(pairs: list[tuple[Entry, Workload]], evaluator: str, cache: Path, workers: int,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict, int]:
    """({(entry name, workload name): result} for every pair, how many were computed now), reusing and
    appending to the JSONL `cache`."""

    have = read_records(cache)
    tasks, out = [], {}
    for e, wl in pairs:
        key = _task_key(e, wl, evaluator)
        if key in have:
            out[(e.name, wl.name)] = have[key]["result"]
        else:
            tasks.append((key, e, wl, evaluator))
    tasks.sort(key=lambda t: (-len(t[2].layouts), t[2].name != "deepseek-v3"))   # the slow ones first
    app = Appender(cache)
    try:
        for key, name, wname, res in _map(tasks, workers):
            app.write({"id": key, "entry": name, "workload": wname, "result": res})
            out[(name, wname)] = res
            if progress:
                progress(len(out), len(pairs))
    finally:
        app.close()
    return out, len(tasks)


def _map(tasks, workers: int):
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_run_task, tasks)
        return

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(min(workers, len(tasks)), initializer=_quiet) as pool:
        yield from pool.imap_unordered(_run_task, tasks)


def _quiet() -> None:
    """Workers ignore Ctrl-C: the parent stops the pool, finished results are already in the cache."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def simulation_pairs(space: Space, entries: list[Entry], analytic: dict, full: bool,
                     requests: int | None) -> list[tuple[Entry, Workload]]:
    """(entry, workload) for the serving simulator: each workload restricted to the layout the analytic
    model found best for that entry (every layout with `full`), with `requests` requests per run."""
    pairs = []
    for e in entries:
        for wl in space.workloads:
            a = analytic.get((e.name, wl.name), {})
            lay = wl.layouts if full or "tp" not in a else ((a["tp"], a["ep"]),)
            pairs.append((e, dataclasses.replace(wl, layouts=lay, requests=requests or wl.requests)))
    return pairs


# ----------------------------------------------------------------------------- the study

def default_out(name: str) -> Path:
    return Path("out") / f"study-{name}"


def run_study(name: str = "inference-7nm", out: Path | str | None = None, *, full: bool = False,
              workers: int | None = None, ray: str | None = None, requests: int | None = None,
              progress: Callable[[str, int, int], None] | None = None, plots: bool = True) -> StudyResult:
    """Run the whole study (each stage resumes from what out/ already holds) and write its report."""

    from .report import write_report

    t0 = time.perf_counter()
    clock = _Stages()
    space = load_space(name, "full" if full else None)
    if space.evaluator != "analytic":
        space = space.with_evaluator("analytic")
    out = Path(out) if out is not None else default_out(space.name)
    workers = workers or os.cpu_count() or 1
    prog = (lambda stage: (lambda d, t: progress(stage, d, t))) if progress else (lambda stage: None)
    sweep = run_sweep(space, out / "sweep", workers=workers, ray=ray, progress=prog("sweep"))
    clock.done("sweep", sweep.new)
    picks = pick_designs(space, sweep, int(space.study.get("picks", 4)))
    entries = comparison(space, picks)
    analytic, n = evaluate_pairs([(e, wl) for e in entries for wl in space.workloads], "analytic",
                                 out / "analytic.jsonl", 1)
    clock.done("analytic", n)
    simulated, n = evaluate_pairs(simulation_pairs(space, entries, analytic, full, requests), "simulated",
                                  out / "simulated.jsonl", workers, prog("serving simulator"))
    clock.done("serving simulator", n)
    timing = clock.save(out / "timing.json", workers)
    res = StudyResult(space, sweep, entries, analytic, simulated, out, time.perf_counter() - t0, {}, timing)
    files = write_report(res, plots=plots)
    return dataclasses.replace(res, files=files, seconds=time.perf_counter() - t0)


def export_designs(res: StudyResult) -> dict[str, Path]:
    """designs/<name>.toml for each picked design: chip files `tapeout chips show` loads."""
    d = res.out_dir / "designs"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for e in res.entries:
        if e.kind == "design":
            p = d / f"{e.name}.toml"
            p.write_text(chip_toml(e.chip, source_note(res.space.base, e.params) + f" (point {e.point_id})",
                                   ref="docs/study.md"))
            out[e.name] = p
    return out


__all__ = ["run_study", "StudyResult", "Entry", "pick_designs", "default_out"]
