"""`tapeout study NAME`: a sweep, the best designs it finds, and the incumbents, served in the
serving simulator and written up as an HTML report and a Markdown summary (docs/study.md).

    1. sweep the study's space with the analytic objective (resumable, out/study-NAME/sweep/);
    2. pick designs from the Pareto front: the best in tokens/s per chip, per joule and per dollar,
       and the balanced one (the knee);
    3. evaluate the picks, the reference design (the base chip as specified) and the incumbents on
       every workload and with every stack of the study ([study] stacks: `deployed`, each chip's
       own stack, and `ideal`, the silicon with a mature stack), analytically (every layout) and in
       the serving simulator (the best layout, the highest Poisson rate whose p99 TTFT and TPOT
       meet the SLO);
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
from ..errors import TapeoutError
from .design import Infeasible, chip_toml, physicals, point_chip, source_note
from .evaluate import chip_facts, served_costs
from .objective import EVALUATORS, Served, Workload
from .pareto import knee
from .space import Space, canonical, load_space, model_fingerprint
from .sweep import Appender, SweepResult, read_records, run_sweep

ROLES = (("throughput", "tok_s_per_chip"), ("efficiency", "tok_per_j"), ("value", "tok_s_per_kusd"))
RESULT_VERSION = 3   # bump when _served's record changes, so cached results are recomputed
DEPLOYED = "deployed"  # the stack view "each chip with its own stack (chip.stack)"


@dataclass(frozen=True)
class Entry:
    """One chip of the comparison: an incumbent, the reference design or a picked design."""
    name: str
    kind: str                 # incumbent | reference | design
    chip: Chip                # its chip.stack is the stack it is deployed with
    facts: dict
    roles: tuple = ()
    params: dict = dataclasses.field(default_factory=dict)
    point_id: str = ""


@dataclass(frozen=True)
class StudyResult:
    space: Space
    sweep: SweepResult
    entries: list
    analytic: dict            # (entry name, workload name) -> Served dict or {"infeasible": reason}, headline stack
    simulated: dict
    out_dir: Path
    seconds: float
    files: dict
    timing: dict = dataclasses.field(default_factory=dict)   # stage -> {seconds, computed, workers} of its last computing run
    by_stack: dict = dataclasses.field(default_factory=dict)  # view -> {"analytic": {...}, "simulated": {...}} as above
    headline_stack: str = DEPLOYED

    @property
    def views(self) -> tuple[str, ...]:
        """The stack views evaluated: `deployed` (each chip's own stack) and stack names (e.g. `ideal`)."""
        return tuple(self.by_stack) or (self.headline_stack,)

    def results(self, source: str, view: str | None = None) -> dict:
        """{(entry, workload): result} of `source` (analytic | simulated) with the stack `view`."""
        if view is None or view == self.headline_stack:
            return getattr(self, source)
        return self.by_stack.get(view, {}).get(source, {})


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
        c = with_stack(load_chip(st["reference"]), st.get("design_stack"))
        ref = [Entry(c.name, "reference", c, chip_facts(c))]
    return picks + ref + inc


# ----------------------------------------------------------------------------- software stacks

def with_stack(chip: Chip, stack: str | None) -> Chip:
    """`chip` deployed with `stack` (its chip.stack); unchanged for None."""
    return chip if not stack else dataclasses.replace(chip, chip=dataclasses.replace(chip.chip, stack=stack))


def study_stacks(space: Space) -> tuple[tuple[str, ...], str]:
    """([study] stacks, [study] headline_stack): the stack views every chip is evaluated with
    (`deployed`: the chip's own stack; any other: a stack by name) and the one the headline uses."""
    from ..perf.stack import load_stack

    st = space.study
    views = tuple(dict.fromkeys(st.get("stacks", [DEPLOYED])))
    head = st.get("headline_stack", views[0] if views else DEPLOYED)
    for key, names in (("stacks", views), ("headline_stack", (head,)), ("design_stack", (st.get("design_stack"),))):
        for n in names:
            if n and n != DEPLOYED:
                try:
                    load_stack(n)
                except TapeoutError as e:
                    raise TapeoutError(f"{space.name}: [study] {key}: {e}") from None
    if not views or head not in views:
        raise TapeoutError(f"{space.name}: [study] headline_stack {head!r} must be one of stacks {list(views)}")
    return views, head


def stack_of(entry: Entry, view: str) -> str:
    """The stack `entry` runs in the stack view `view`."""
    return entry.chip.chip.stack if view == DEPLOYED else view


# ----------------------------------------------------------------------------- evaluation

def _served(entry: Entry, wl: Workload, evaluator: str, stack: str) -> dict:
    try:
        s: Served = EVALUATORS[evaluator](entry.chip, wl, stack)
    except Infeasible as e:
        return {"infeasible": str(e)}
    d = served_costs(s, entry.facts["cost_usd"])
    d["usd_per_mtok_price"] = _at_price(entry.chip, s.tok_s_per_chip)
    return d


def _at_price(chip, tok_s_per_chip: float) -> float | None:
    """$/Mtok on the serving simulator's basis: rental, else list price, else manufacturing cost (+ energy at TDP)."""
    usd_h, _ = chip_usd_per_hour(chip)
    return usd_per_mtok(usd_h, tok_s_per_chip) if usd_h else None


def _task_key(entry: Entry, wl: Workload, evaluator: str, stack: str) -> str:
    blob = {"chip": entry.chip.flat(), "wl": dataclasses.asdict(wl), "ev": evaluator, "stack": stack,
            "models": model_fingerprint(), "version": RESULT_VERSION}
    return hashlib.sha256(canonical(blob).encode()).hexdigest()[:16]


def _run_task(task) -> tuple[str, tuple, dict]:
    key, entry, wl, view, evaluator = task
    return key, (entry.name, wl.name, view), _served(entry, wl, evaluator, stack_of(entry, view))


def evaluate_pairs(pairs: list[tuple[Entry, Workload, str]], evaluator: str, cache: Path, workers: int,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict, int]:
    """({(entry name, workload name, stack view): result} for every (entry, workload, view), how many
    were computed now), reusing and appending to the JSONL `cache`."""

    have = read_records(cache)
    want: dict[str, list] = {}            # key -> the (entry, workload, view) it answers (views may share a stack)
    todo, out = {}, {}
    for e, wl, view in pairs:
        key = _task_key(e, wl, evaluator, stack_of(e, view))
        want.setdefault(key, []).append((e.name, wl.name, view))
        if key in have:
            out[(e.name, wl.name, view)] = have[key]["result"]
        else:
            todo.setdefault(key, (key, e, wl, view, evaluator))
    tasks = sorted(todo.values(), key=lambda t: (-len(t[2].layouts), t[2].name != "deepseek-v3"))   # slow ones first
    app = Appender(cache)
    try:
        for key, (name, wname, view), res in _map(tasks, workers):
            app.write({"id": key, "entry": name, "workload": wname, "view": view, "result": res})
            out.update({k: res for k in want[key]})
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
                     requests: int | None, views: tuple[str, ...]) -> list[tuple[Entry, Workload, str]]:
    """(entry, workload, view) for the serving simulator: each workload restricted to the layout the
    analytic model found best for that entry and stack (every layout with `full`), with `requests`
    requests per run."""
    pairs = []
    for e in entries:
        for wl in space.workloads:
            for v in views:
                a = analytic.get((e.name, wl.name, v), {})
                lay = wl.layouts if full or "tp" not in a else ((a["tp"], a["ep"]),)
                pairs.append((e, dataclasses.replace(wl, layouts=lay, requests=requests or wl.requests), v))
    return pairs


def _by_view(results: dict, views: tuple[str, ...]) -> dict:
    """{view: {(entry, workload): result}} from {(entry, workload, view): result}."""
    return {v: {k[:2]: r for k, r in results.items() if k[2] == v} for v in views}


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
    views, head = study_stacks(space)
    space = dataclasses.replace(space, base=with_stack(space.base, space.study.get("design_stack")))
    out = Path(out) if out is not None else default_out(space.name)
    workers = workers or os.cpu_count() or 1
    prog = (lambda stage: (lambda d, t: progress(stage, d, t))) if progress else (lambda stage: None)
    sweep = run_sweep(space, out / "sweep", workers=workers, ray=ray, progress=prog("sweep"))
    clock.done("sweep", sweep.new)
    picks = pick_designs(space, sweep, int(space.study.get("picks", 4)))
    entries = comparison(space, picks)
    analytic, n = evaluate_pairs([(e, wl, v) for e in entries for wl in space.workloads for v in views], "analytic",
                                 out / "analytic.jsonl", 1)
    clock.done("analytic", n)
    simulated, n = evaluate_pairs(simulation_pairs(space, entries, analytic, full, requests, views), "simulated",
                                  out / "simulated.jsonl", workers, prog("serving simulator"))
    clock.done("serving simulator", n)
    timing = clock.save(out / "timing.json", workers)
    a, s = _by_view(analytic, views), _by_view(simulated, views)
    by_stack = {v: {"analytic": a[v], "simulated": s[v]} for v in views}
    res = StudyResult(space, sweep, entries, a[head], s[head], out, time.perf_counter() - t0, {}, timing, by_stack, head)
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


__all__ = ["run_study", "StudyResult", "Entry", "pick_designs", "default_out", "study_stacks", "DEPLOYED"]
