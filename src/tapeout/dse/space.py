"""A design space file (SPACE.toml): a base chip, knobs with their values, constraints, workloads
and objectives. See docs/sweep.md and examples/sweep-space.toml.

    name = "small"
    base = "tapeout-n7"                  # preset or chip file (relative to the space file)
    [knobs]                              # the sweep is the product of these lists (or a sample of it)
    cores = [8, 16]
    clock_hz = [0.8e9, 1.0e9]
    [constraints]
    max_tdp_w = 400
    memory_types = ["HBM2e"]
    [objectives]
    evaluator = "analytic"               # or "simulated" (the serving simulator)
    maximize = ["tok_s_per_chip", "tok_per_j", "tok_s_per_kusd"]
    [[workloads]]
    model = "qwen2.5-72b"
    layouts = [[4, 1], [8, 1]]           # (tp, ep) of one replica
    weights = ["fp8", "int8"]

Each point is identified by a stable hash of its knob values and of everything that decides its
result (base chip, constraints, workloads, evaluator, and the source and data files of the models),
so results on disk are reused exactly when they still apply.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import random
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..chip import Chip, load_chip
from ..errors import TapeoutError
from ..llm.spec import load_model
from .design import Constraints, check_knob, constraints_from
from .objective import EVALUATORS, MEASURES, Workload

METRICS = ("tok_s_per_chip", "tok_per_j", "tok_s_per_kusd", "usd_per_mtok", "power_w", "batch", "ttft_s", "tpot_s")
LOWER_IS_BETTER = ("usd_per_mtok", "cost_usd", "area_mm2", "die_mm2", "power_w", "ttft_s", "tpot_s")
TOP_KEYS = ("name", "base", "description", "knobs", "constraints", "objectives", "workloads", "full", "study")


class SpaceError(TapeoutError):
    """A space file that cannot be read: `FILE: KEY: REASON`."""

    def __init__(self, path, key: str, reason: str):
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


@dataclass(frozen=True)
class Space:
    name: str
    base: Chip
    knobs: tuple[tuple[str, tuple], ...]          # (knob, values) in file order
    constraints: Constraints
    workloads: tuple[Workload, ...]
    evaluator: str = "analytic"
    maximize: tuple[str, ...] = ("tok_s_per_chip", "tok_per_j", "tok_s_per_kusd")
    minimize: tuple[str, ...] = ()
    rank_by: str = "tok_s_per_chip"
    path: str = ""
    study: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        n = 1
        for _, vals in self.knobs:
            n *= len(vals)
        return n

    def point(self, i: int) -> dict:
        """The i-th point of the product (mixed radix, last knob fastest)."""
        out = {}
        for k, vals in reversed(self.knobs):
            i, r = divmod(i, len(vals))
            out[k] = vals[r]
        return {k: out[k] for k, _ in self.knobs}

    def points(self, sample: int | None = None, seed: int = 0) -> list[dict]:
        """Every point, or `sample` of them drawn without replacement (deterministic in `seed`)."""
        if sample is None or sample >= self.size:
            return [dict(zip((k for k, _ in self.knobs), vals)) for vals in itertools.product(*(v for _, v in self.knobs))]
        idx = sorted(random.Random(seed).sample(range(self.size), sample))
        return [self.point(i) for i in idx]

    @property
    def objectives(self) -> tuple[tuple[str, int], ...]:
        """(metric, +1 to maximize / -1 to minimize)."""
        return tuple((m, 1) for m in self.maximize) + tuple((m, -1) for m in self.minimize)

    def with_evaluator(self, evaluator: str) -> "Space":
        if evaluator not in EVALUATORS:
            raise TapeoutError(f"evaluator {evaluator!r}: use one of {', '.join(EVALUATORS)}")
        return dataclasses.replace(self, evaluator=evaluator)


# ----------------------------------------------------------------------------- identity

_FINGERPRINT_DIRS = ("perf", "llm", "serve", "data", "models", "chips")
_FINGERPRINT_FILES = ("chip.py", "energy.py", "area.py", "cost.py", "parallel.py", "sourced.py", "stack.py",
                      "dse/design.py", "dse/objective.py", "dse/evaluate.py")   # not the report, plots or runner


@lru_cache(maxsize=1)
def model_fingerprint() -> str:
    """A hash of the source and data files a point's result depends on: results computed by another
    version of the models are not reused."""
    root = resources.files("tapeout")
    h = hashlib.sha256()
    files = [root / f for f in _FINGERPRINT_FILES]
    for d in _FINGERPRINT_DIRS:
        files += sorted(_walk(root / d), key=lambda p: str(p))
    for f in files:
        if f.is_file() and f.name.endswith((".py", ".toml", ".json")):
            h.update(str(f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _walk(d):
    for p in d.iterdir():
        if p.is_dir() and not p.name.startswith(("__", ".")):
            yield from _walk(p)
        elif p.is_file():
            yield p


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def context_hash(space: Space) -> str:
    """Hash of everything besides the knob values that decides a point's result."""
    ctx = {"base": {k: v for k, v in space.base.flat().items()}, "constraints": dataclasses.asdict(space.constraints),
           "workloads": [dataclasses.asdict(w) for w in space.workloads], "evaluator": space.evaluator,
           "models": model_fingerprint()}
    return hashlib.sha256(canonical(ctx).encode()).hexdigest()[:16]


def point_id(ctx: str, params: dict) -> str:
    """Stable id of a point: its knob values under an evaluation context (`context_hash`)."""
    return hashlib.sha256(canonical({"ctx": ctx, "params": params}).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- loading

def _unknown(path, key: str, names) -> SpaceError:
    m = difflib.get_close_matches(key.split(".")[-1], names, n=1)
    return SpaceError(path, key, "unknown key" + (f" (did you mean {m[0]!r}?)" if m else "") + f"; known: {', '.join(names)}")


def _workload(path, i: int, d: dict) -> Workload:
    names = [f.name for f in dataclasses.fields(Workload)]
    for k in d:
        if k not in names:
            raise _unknown(path, f"workloads[{i}].{k}", names)
    if "model" not in d:
        raise SpaceError(path, f"workloads[{i}]", "needs a model (e.g. model = \"qwen2.5-72b\")")
    kw = dict(d)
    try:
        if "layouts" in kw:
            kw["layouts"] = tuple((int(tp), int(ep)) for tp, ep in kw["layouts"])
        if "weights" in kw:
            kw["weights"] = tuple([kw["weights"]] if isinstance(kw["weights"], str) else kw["weights"])
    except (TypeError, ValueError):
        raise SpaceError(path, f"workloads[{i}].layouts", "write a list of [tp, ep] pairs, e.g. [[4, 1], [8, 1]]") from None

    load_model(kw["model"])   # an unknown model is an error now, not at every point
    if kw.get("measure", "rate") not in MEASURES:
        raise SpaceError(path, f"workloads[{i}].measure", f"{kw['measure']!r}: use one of {', '.join(MEASURES)}")
    for k in ("speculative", "kv_offload", "kv"):   # e.g. speculative = "mtp:1", kv_offload = "pool"
        try:
            Workload(kw["model"], **{k: kw.get(k)})
        except TapeoutError as e:
            raise SpaceError(path, f"workloads[{i}].{k}", str(e)) from None
    kw = {**traffic_slo(kw.get("traffic", "chat")), **kw}
    w = Workload(**kw)
    w.lengths()
    return w


def traffic_slo(traffic: str) -> dict:
    """{slo_ttft_s, slo_tpot_s} a shipped workload states for its traffic (data/serve/workloads.toml;
    e.g. reasoning's), else {}: a [[workloads]] table's own SLO overrides it, the engines' default fills in."""
    from ..serve.workload import llm_workload

    if traffic.startswith("fixed:"):
        return {}
    w = llm_workload(traffic)
    return {k: float(w[k]) for k in ("slo_ttft_s", "slo_tpot_s") if k in w}


def _knobs(path, d: dict) -> tuple[tuple[str, tuple], ...]:
    if not isinstance(d, dict) or not d:
        raise SpaceError(path, "knobs", "needs at least one knob with a list of values, e.g. cores = [8, 16]")
    out = []
    for k, v in d.items():
        check_knob(k, f"{path}: knobs")
        vals = tuple(v) if isinstance(v, list) else (v,)
        if not vals:
            raise SpaceError(path, f"knobs.{k}", "has no values")
        out.append((k, vals))
    return tuple(out)


def _base(rel_dir: Path | None, spec: str) -> Chip:
    p = rel_dir / spec if rel_dir is not None and not Path(spec).is_absolute() else Path(spec)
    if spec.endswith(".toml") and p.exists():
        return load_chip(p)
    return load_chip(spec)


def parse_space(data: dict, path: str = "<space>", variant: str | None = None, rel_dir: Path | None = None) -> Space:
    """A Space from parsed TOML; `variant` (e.g. "full") overrides knobs with [variant.knobs];
    `rel_dir`: where a relative base chip path is found."""
    for k in data:
        if k not in TOP_KEYS:
            raise _unknown(path, k, TOP_KEYS)
    for need in ("base", "knobs", "workloads"):
        if need not in data:
            raise SpaceError(path, need, "missing (see examples/sweep-space.toml)")
    knobs = dict(data["knobs"])
    if variant:
        if not isinstance(data.get(variant), dict) or "knobs" not in data[variant]:
            raise SpaceError(path, variant, f"no [{variant}.knobs] table for this variant")
        knobs.update(data[variant]["knobs"])
    obj = dict(data.get("objectives", {}))
    for k in obj:
        if k not in ("evaluator", "maximize", "minimize", "rank_by"):
            raise _unknown(path, f"objectives.{k}", ("evaluator", "maximize", "minimize", "rank_by"))
    wls = data["workloads"]
    if not isinstance(wls, list) or not wls:
        raise SpaceError(path, "workloads", "needs at least one [[workloads]] table")
    if not any(w.get("ranked", True) for w in wls if isinstance(w, dict)):
        raise SpaceError(path, "workloads", "needs at least one ranked workload (ranked = false on every one)")
    space = Space(name=str(data.get("name", Path(path).stem)), base=_base(rel_dir, str(data["base"])),
                  knobs=_knobs(path, knobs), constraints=constraints_from(data.get("constraints", {}), f"{path}: constraints"),
                  workloads=tuple(_workload(path, i, w) for i, w in enumerate(wls)), path=str(path),
                  study=dict(data.get("study", {})),
                  **{k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items()})
    _check_objectives(space, path)
    return space.with_evaluator(space.evaluator)


def metric_names(space: Space) -> list[str]:
    from .evaluate import DESIGN_FACTS

    per = [f"{w.name}.{m}" for w in space.workloads for m in METRICS]
    return list(METRICS) + per + list(DESIGN_FACTS)


def _check_objectives(space: Space, path) -> None:
    names = metric_names(space)
    for m in (*space.maximize, *space.minimize, space.rank_by):
        if m not in names:
            raise _unknown(path, f"objectives: {m}", names[:len(METRICS)] + ["<workload>.<metric>", "cost_usd", "area_mm2", "..."])
    if not space.maximize and not space.minimize:
        raise SpaceError(path, "objectives", "needs at least one metric to maximize or minimize")


def load_space(spec: str | Path, variant: str | None = None) -> Space:
    """A space from a file path, or a study name shipped in tapeout/data/studies (e.g. inference-7nm)."""
    p = Path(spec)
    if not p.exists():
        res = resources.files("tapeout") / "data" / "studies" / f"{spec}.toml"
        if not res.is_file():
            names = sorted(f.name[:-5] for f in (resources.files("tapeout") / "data" / "studies").iterdir()
                           if f.name.endswith(".toml") and f.name != "parts.toml")
            raise TapeoutError(f"{spec}: no such space file or study (studies: {', '.join(names)})")
        text, where = res.read_text(encoding="utf-8"), f"data/studies/{spec}.toml"
    else:
        try:
            text, where = p.read_text(encoding="utf-8"), str(p)
        except (OSError, UnicodeDecodeError) as e:
            raise TapeoutError(f"{p}: cannot be read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(where, "", f"not valid TOML: {e}") from None
    return parse_space(data, where, variant, p.parent if p.exists() else None)
