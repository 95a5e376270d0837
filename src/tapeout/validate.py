"""Predict published inference results row by row (`tapeout validate`, docs/validation.md).

A row names a deployment (chip, chips, tp/pp/ep, model, weights/kv dtypes, software stack), a
scenario, a workload and the metric that was published; `predict_row` answers with the predicted
value of that metric in the same unit (or None and a one-line reason), the stack and layout used.

    >>> r = predict_row({"chip": "h100-sxm", "chips": 1, "model": "llama-3.1-8b", "weights": "bf16",
    ...                  "scenario": "static", "batch": 8, "workload": "fixed:512:128", "metric": "output_tok_s"})
    >>> r["predicted"] > 0, r["layout"]["tp"]
    (True, 1)

Scenarios (SCENARIOS: name -> function of a Case and a Layout, returning every metric it can):
- offline      every request at t = 0 (MLPerf Offline): the serving simulator, `serve(offline=True)`
- server       the highest Poisson rate whose p-th percentile TTFT and TPOT meet the SLOs (`max_rate`)
- static       one fixed batch, prefill then decode together (HF generate, Neuron/Gaudi tables): `estimate`
- concurrency  a closed loop of `concurrency` clients with no think time: a client sends its next request
               the moment the last one finishes, so the engine always holds min(concurrency, left)
               requests; that is the offline run with at most `concurrency` sequences in flight
- latency      static at batch 1
- decode       a decode pool at `batch_per_chip` sequences per chip with `context`-token caches (or, given a
               fixed:PROMPT:OUTPUT workload instead, at the mean cache length of its decode, PROMPT + OUTPUT / 2)
- prefill      a prefill pool running `tokens_per_step` tokens per chip per step in `prompt`-token prompts

`batch`, `concurrency`, `max_seqs` (per replica) and `requests` count the deployment; `batch_per_chip` and
`tokens_per_step` are per chip; chips beyond one tp x pp x ep replica are data-parallel replicas. A null tp/pp/ep is searched:
every split of the chips that fits in memory, the best value of the metric wins (server rows pick the
layout by offline throughput, then search the rate on it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .errors import DoesNotFitError, TapeoutError
from .perf.stack import stack_for

METRICS = ("output_tok_s", "total_tok_s", "output_tok_s_per_chip", "input_tok_s_per_chip", "tpot_ms", "ttft_ms",
           "samples_s")
LOWER_IS_BETTER = frozenset({"tpot_ms", "ttft_ms"})
SETUP_FIELDS = ("chip", "chips", "tp", "pp", "ep", "model", "weights", "kv", "stack", "scenario", "workload", "metric",
                "batch", "batch_per_chip", "context", "prompt", "tokens_per_step", "concurrency", "max_seqs",
                "requests", "prefix_caching", "routing", "slo_ttft_s", "slo_tpot_s", "slo_latency_s",
                "slo_percentile", "speculative")
SPECULATIVE_SCENARIOS = ("static", "latency", "decode", "offline", "server", "concurrency")   # all that decode
# Simulation sizes (method settings, not measured quantities). Offline/concurrency runs without a stated
# request count simulate OFFLINE_WAVES x max_seqs requests per replica and report the steady state (10-90 %
# of finish times), the rate a long run such as MLPerf's >= 10-minute one reports: on 8x H200 Llama-2-70B
# it moves < 1 % from 16k to 64k requests. Server searches use SERVER_REQUESTS_PER_REPLICA requests per
# replica and SERVER_ITERATIONS bisections (~3 % resolution); the found rate still rises a few % with more.
OFFLINE_WAVES = 8
OFFLINE_MIN_REQUESTS = 2000
SERVER_REQUESTS_PER_REPLICA = 2000
SERVER_ITERATIONS = 5
SCHEDULER = "chunked"       # chunked prefill mixed with decodes: vLLM, TensorRT-LLM, TGI's default today
MAX_SEQS = 256              # serve()'s default when a row states none (vLLM's max_num_seqs default)


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def chips(self) -> int:
        return self.tp * self.pp * self.ep


@dataclass(frozen=True)
class Case:
    """One row's setup, parsed: what the scenario functions read."""
    row: dict
    model: str
    chip: str
    chips: int
    weights: str
    kv: str | None
    stack: object          # what the perf/serve APIs get: a stack name or Stack, or None (no stack support)
    stack_name: str | None
    moe: bool
    skew: float

    def get(self, key: str, default=None):
        v = self.row.get(key)
        return default if v is None else v

    def need(self, key: str):
        v = self.row.get(key)
        if v is None:
            raise TapeoutError(f"{key}: missing (the {self.row.get('scenario')} scenario needs it)")
        return v

    def replicas(self, lay: Layout) -> int:
        return self.chips // lay.chips


# ---------------------------------------------------------------- stacks and routing
def resolve_stack(chip, stack):
    """(what to pass as stack=, its name): the given stack (a name or a Stack), else the name of the
    chip's default (`[chip] stack`); unknown names raise here, once per row."""
    s = stack_for(chip, stack)
    return (s.name if stack is None else stack), s.name


def routing_skew(spec, routing: str | None) -> float:
    """Zipf exponent of expert popularity for `routing`: balanced (uniform) or default (data/serve/routing.toml:
    the exponent whose per-expert load over the model's experts has the measured Gini coefficient)."""
    if routing not in (None, "balanced", "default"):
        raise TapeoutError(f"routing {routing!r}: use balanced or default")
    if spec.moe is None or routing != "default":
        return 0.0
    from .serve.data import table

    kind = "mla" if spec.mla else ("mha" if spec.kv_heads == spec.heads else "gqa")
    return _zipf_for_gini(spec.moe.experts, table("routing")["gini"][kind])


def gini(x: list[float]) -> float:
    """Gini coefficient: mean absolute difference over twice the mean (0: all equal)."""
    xs, n = sorted(x), len(x)
    total = sum(xs)
    return sum((2 * i - n + 1) * v for i, v in enumerate(xs)) / (n * total) if total else 0.0


@lru_cache(maxsize=None)
def _zipf_for_gini(experts: int, target: float) -> float:
    lo, hi = 0.0, 8.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gini([(i + 1) ** -mid for i in range(experts)]) < target else (lo, mid)
    return (lo + hi) / 2


# ---------------------------------------------------------------- scenarios
def _fixed(case: Case) -> tuple[int, int]:
    w = str(case.need("workload"))
    if not w.startswith("fixed:"):
        raise TapeoutError(f"workload {w!r}: the {case.row['scenario']} scenario needs fixed:PROMPT:OUTPUT")
    from .serve.workload import lengths

    p, o = lengths(w, 1, None)
    return int(p[0]), int(o[0])


def _one_stage(lay: Layout, scenario: str) -> None:
    if lay.pp != 1:
        raise TapeoutError(f"pp {lay.pp}: the {scenario} scenario models one pipeline stage (pp = 1)")


def _static(case: Case, lay: Layout, batch: int | None = None, check_memory: bool = True) -> dict:
    from .perf.api import estimate

    _one_stage(lay, "static")
    p, o = _fixed(case)
    batch = int(batch or case.need("batch"))
    per = -(-batch // case.replicas(lay))              # the busiest replica's share
    e = estimate(case.model, case.chip, batch=per, prompt=p, output=o, weights=case.weights, kv=case.kv,
                 tp=lay.tp, ep=lay.ep, moe_skew=case.skew, check_memory=check_memory, speculative=case.row.get("speculative"),
                 stack=case.stack)
    return {"output_tok_s": batch * o / e.e2e_s, "total_tok_s": batch * (p + o) / e.e2e_s, "samples_s": batch / e.e2e_s,
            "tpot_ms": e.tpot_s * 1e3, "ttft_ms": e.ttft_s * 1e3, "e2e_s": e.e2e_s, "batch_per_replica": per,
            "memory_gib_per_chip": e.memory.total_bytes / 2**30}


def _latency(case: Case, lay: Layout, check_memory: bool = True) -> dict:
    return _static(case, lay, batch=1, check_memory=check_memory)


def _pool_step(case: Case, lay: Layout, batch) -> float:
    """Seconds of one step of one attention group (tp chips; ep groups run in parallel), the call
    serve.steptime.StepTimer makes for a pool with expert parallelism, without its interpolation."""
    from .perf.api import run_batch

    return run_batch(case.model, case.chip, batch, weights=case.weights, kv=case.kv, tp=lay.tp, ep=lay.ep,
                     moe_skew=case.skew, stack=case.stack).seconds


def _spec_pool_tpot(case: Case, lay: Layout, group: int, ctx: int) -> float:
    """Seconds per token of a speculative decode pool: (verification + drafting) / expected tokens per step."""
    from .chip import load_chip
    from .llm.spec import load_model
    from .perf.api import dtypes_for
    from .perf.speculative import spec_step, speculation

    c, spec = load_chip(case.chip), load_model(case.model)
    s = stack_for(c, case.stack)
    return spec_step(speculation(case.row["speculative"]), c, spec, group, ctx, dtypes_for(case.weights, case.kv, None, c, s),
                     s, None, lay.tp, lay.ep, case.skew).tpot_s


def _check_pool_memory(case: Case, lay: Layout, seqs: int, tokens: int, prompt: int) -> None:
    from .chip import load_chip
    from .llm.spec import load_model
    from .perf.api import check_fit, dtypes_for, memory_use

    from .perf.speculative import add_memory, speculation

    c, spec = load_chip(case.chip), load_model(case.model)
    dt = dtypes_for(case.weights, case.kv, None, c)
    m = memory_use(spec, c, dt, seqs, tokens, prompt, lay.tp, lay.ep)
    check_fit(add_memory(m, speculation(case.row.get("speculative")), c, spec, dt, seqs, tokens, lay.tp, lay.ep), c, spec)


def _decode_context(case: Case) -> int:
    """Cache length of a decode pool's step: `context` as stated, else the mean over a fixed:PROMPT:OUTPUT
    workload's decode, PROMPT + OUTPUT / 2 (a pool in steady state holds sequences spread evenly over their
    outputs, and a batch started together averages the same; attention time is linear in the length)."""
    if case.row.get("context") is not None or case.row.get("workload") is None:
        return int(case.need("context"))
    p, o = _fixed(case)
    return p + o // 2


def _decode(case: Case, lay: Layout, check_memory: bool = True) -> dict:
    from .llm.kernels import Batch

    _one_stage(lay, "decode")
    b, ctx = int(case.need("batch_per_chip")), _decode_context(case)
    group = b * lay.tp
    if check_memory:
        _check_pool_memory(case, lay, group, ctx, 1)
    sec = _pool_step(case, lay, Batch.of("decode", group, ctx)) if not case.row.get("speculative") else \
        _spec_pool_tpot(case, lay, group, ctx)
    out = {"output_tok_s_per_chip": b / sec, "output_tok_s": b * case.chips / sec, "tpot_ms": sec * 1e3, "context": ctx}
    if case.row.get("slo_tpot_s") is not None:
        out["meets_slo_tpot"] = sec <= case.row["slo_tpot_s"]
    return out


def _prefill(case: Case, lay: Layout, check_memory: bool = True) -> dict:
    from .llm.kernels import Batch

    _one_stage(lay, "prefill")
    p = int(case.need("prompt"))
    per_chip = int(case.get("tokens_per_step", p))
    k = max(1, round(per_chip * lay.tp / p))            # prompts per attention group and step
    if check_memory:
        _check_pool_memory(case, lay, k, p, p)
    sec = _pool_step(case, lay, Batch.of("prefill", k, p))
    return {"input_tok_s_per_chip": k * p / lay.tp / sec, "input_tok_s": k * p / lay.tp * case.chips / sec,
            "ttft_ms": sec * 1e3, "prompts_per_step": k}


def _serve_kw(case: Case, lay: Layout, max_seqs: int) -> dict:
    from .serve.api import serve

    return dict(chips=case.chips, tp=lay.tp, pp=lay.pp, ep=lay.ep, workload=str(case.need("workload")),
                scheduler=SCHEDULER, max_seqs=max_seqs, prefix_caching=bool(case.get("prefix_caching", False)),
                weights=case.weights, kv=case.kv, seed=0, stack=case.stack, speculative=case.row.get("speculative") or None)


def _offline(case: Case, lay: Layout, max_seqs: int | None = None, check_memory: bool = True) -> dict:
    from .serve.api import serve

    seqs = int(max_seqs or case.get("max_seqs", MAX_SEQS))
    stated = case.row.get("requests")
    n = int(stated or max(OFFLINE_MIN_REQUESTS, OFFLINE_WAVES * seqs * case.replicas(lay)))
    r = serve(case.model, case.chip, requests=n, offline=True, record_steps=False, **_serve_kw(case, lay, seqs))
    m = r.metrics
    # a stated request count is a finite benchmark run (tokens / its whole time); else a long run's steady state
    out = m["throughput_tok_s"] if stated else m["steady_tok_s"]
    per_out = m["input_tokens"] / m["output_tokens"]
    return {"output_tok_s": out, "total_tok_s": out * (1 + per_out), "samples_s": out * m["requests"] / m["output_tokens"],
            "output_tok_s_per_chip": out / m["chips"], "tpot_ms": m["tpot_s"]["mean"] * 1e3,
            "ttft_ms": m["ttft_s"]["mean"] * 1e3, "requests": n, "max_seqs": seqs, "preemptions": m["preemptions"]}


def _concurrency(case: Case, lay: Layout, check_memory: bool = True) -> dict:
    c = int(case.need("concurrency"))
    seqs = -(-c // case.replicas(lay))
    if case.row.get("max_seqs"):
        seqs = min(seqs, int(case.row["max_seqs"]))
    return _offline(case, lay, max_seqs=seqs)


def _server(case: Case, lay: Layout, check_memory: bool = True) -> dict:
    from .serve.api import max_rate

    q = int(case.get("slo_percentile", 99))
    if q not in (50, 90, 99):
        raise TapeoutError(f"slo_percentile {q}: use 50, 90 or 99")
    seqs = int(case.get("max_seqs", MAX_SEQS))
    n = int(case.get("requests", SERVER_REQUESTS_PER_REPLICA * case.replicas(lay)))
    rate, r = max_rate(case.model, case.chip, requests=n, percentile=q, iterations=SERVER_ITERATIONS,
                       slo_ttft=float(case.need("slo_ttft_s")), slo_tpot=float(case.need("slo_tpot_s")),
                       **_serve_kw(case, lay, seqs))
    m = r.metrics
    out = m["steady_tok_s"]             # completed tokens/s at that rate (MLPerf Server's figure)
    res = {"output_tok_s": out, "total_tok_s": out * (1 + m["input_tokens"] / m["output_tokens"]),
           "samples_s": rate, "output_tok_s_per_chip": out / m["chips"], "rate_req_s": rate,
           f"tpot_p{q}_ms": m["tpot_s"][f"p{q}"] * 1e3, f"ttft_p{q}_ms": m["ttft_s"][f"p{q}"] * 1e3,
           "tpot_ms": m["tpot_s"]["mean"] * 1e3, "ttft_ms": m["ttft_s"]["mean"] * 1e3, "requests": n, "max_seqs": seqs}
    if case.row.get("slo_latency_s") is not None:    # checked at the rate found, not searched on
        res["meets_slo_latency"] = m["e2e_s"][f"p{q}"] <= case.row["slo_latency_s"]
    return res


SCENARIOS = {"offline": _offline, "server": _server, "static": _static, "concurrency": _concurrency,
             "latency": _latency, "decode": _decode, "prefill": _prefill}
PIPELINED = frozenset({"offline", "server", "concurrency"})     # scenarios whose simulator runs pp stages
SIMULATED = PIPELINED                                            # memory is checked by the simulator itself


# ---------------------------------------------------------------- layouts
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts(case: Case, scenario: str) -> list[Layout]:
    """The tp x pp x ep splits to try: the row's where it states them, else every divisor of the chips
    (pp only where the scenario runs pipeline stages, ep only for MoE models)."""
    given = {k: case.row.get(k) for k in ("tp", "pp", "ep")}
    for k, v in given.items():
        if v is not None and (not isinstance(v, int) or v < 1):
            raise TapeoutError(f"{k} {v!r}: must be an integer >= 1 (or null to search)")
    free = {"tp": True, "pp": scenario in PIPELINED, "ep": case.moe}
    opts = {k: [v] if v is not None else (_divisors(case.chips) if free[k] else [1]) for k, v in given.items()}
    out = [Layout(t, p, e) for t in opts["tp"] for p in opts["pp"] for e in opts["ep"]
           if case.chips % (t * p * e) == 0]
    if not out:
        raise TapeoutError(f"chips {case.chips}: not a multiple of tp x pp x ep ({given})")
    return out


def _better(metric: str, a: float, b: float | None) -> bool:
    return b is None or (a < b if metric in LOWER_IS_BETTER else a > b)


def _best(case: Case, fn, metric: str, scenario: str) -> tuple[Layout, dict, str | None]:
    """(layout, its metrics, a warning) of the best layout; a single stated layout that the memory model
    says does not fit is still predicted, with the warning (the published run did fit)."""
    cands = layouts(case, scenario)
    if len(cands) == 1:
        try:
            return cands[0], fn(case, cands[0]), None
        except DoesNotFitError as e:
            if scenario in SIMULATED:
                raise
            return cands[0], fn(case, cands[0], check_memory=False), f"memory model: {e}"
    if scenario == "server":           # pick the layout by offline throughput, then search the rate on it
        lay, _, _ = _best(case, _offline, "output_tok_s", "offline")
        return lay, fn(case, lay), None
    best, why = None, []
    for lay in cands:
        try:
            res = fn(case, lay)
        except TapeoutError as e:
            why.append(f"tp{lay.tp} pp{lay.pp} ep{lay.ep}: {e}")
            continue
        if metric in res and (best is None or _better(metric, res[metric], best[1][metric])):
            best = (lay, res, None)
    if best is None:
        raise TapeoutError(f"no layout of {case.chips} chips works: " + (why[0] if why else "none tried"))
    return best


# ---------------------------------------------------------------- rows
def _vision(row: dict) -> dict:
    """A CNN row (ImageNet workloads): the virtual NPU's vision predictor, data-parallel over the chips."""
    try:
        from .npu.vision import predict_throughput
    except ImportError as e:
        raise TapeoutError(f"vision model {row.get('model')!r}: tapeout.npu.vision.predict_throughput is not "
                           f"available in this build ({e})") from None
    chips = int(row.get("chips") or 1)
    batch = 1 if row.get("scenario") == "latency" else row.get("batch")
    r = predict_throughput(row["model"], row["chip"], dtype=row.get("weights") or "int8", batch=batch)
    return {"samples_s": r["samples_s"] * chips, "samples_s_per_chip": r["samples_s"]}


def _is_vision(row: dict) -> bool:
    return str(row.get("workload") or "").startswith("imagenet")


def _case(row: dict, stack) -> Case:
    from .chip import load_chip
    from .llm.spec import load_model

    for k in ("chip", "model", "weights"):
        if not row.get(k):
            raise TapeoutError(f"{k}: missing")
    chips = row.get("chips", 1)
    if not isinstance(chips, int) or chips < 1:
        raise TapeoutError(f"chips {chips!r}: must be an integer >= 1")
    c, spec = load_chip(row["chip"]), load_model(row["model"])
    s, name = resolve_stack(c.name, row.get("stack") or stack)
    return Case(row, spec.name, c.name, chips, str(row["weights"]), row.get("kv"), s, name, spec.moe is not None,
                routing_skew(spec, row.get("routing")))


def _stack_key(stack) -> str | None:
    return stack if stack is None or isinstance(stack, str) else repr(stack)


_MEMO: dict = {}


def clear_memo() -> None:
    """Forget memoized rows (after changing a stack or chip file in place)."""
    _MEMO.clear()


def _predict(row: dict, stack) -> tuple[dict, dict]:
    """(settings, metrics) of one row, memoized on its setup fields and the stack."""
    key = (tuple((k, repr(row.get(k))) for k in SETUP_FIELDS), _stack_key(stack))
    if key in _MEMO:
        return _MEMO[key]
    scenario, metric = row.get("scenario"), row.get("metric")
    if metric not in METRICS:
        raise TapeoutError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    if _is_vision(row):
        res, settings = _vision(row), {"stack": None, "layout": {"tp": 1, "pp": 1, "ep": 1, "replicas": row.get("chips") or 1}}
    else:
        if scenario not in SCENARIOS:
            raise TapeoutError(f"scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
        if row.get("speculative") and scenario not in SPECULATIVE_SCENARIOS:
            raise TapeoutError(f"speculative {row['speculative']!r}: the {scenario} scenario decodes nothing "
                               f"(use {', '.join(SPECULATIVE_SCENARIOS)})")
        case = _case(row, stack)
        lay, res, warn = _best(case, SCENARIOS[scenario], metric, scenario)
        settings = {"stack": case.stack_name,
                    "layout": {"tp": lay.tp, "pp": lay.pp, "ep": lay.ep, "replicas": case.replicas(lay)}}
        if case.skew:
            settings["moe_skew"] = case.skew
        if warn:
            settings["warning"] = warn.splitlines()[0]
    if metric not in res:
        raise TapeoutError(f"metric {metric!r}: the {scenario} scenario gives {', '.join(k for k in res if k in METRICS)}")
    if len(_MEMO) > 20000:
        _MEMO.clear()
    _MEMO[key] = settings, res
    return settings, res


def predict_row(row: dict, stack=None) -> dict:
    """The row with `predicted` (in the unit of `published`) or None and a one-line `reason`, `ratio`
    (predicted / published), the `stack` and `layout` used, and `details` (every metric the scenario gives).
    `stack`: used where the row names none (a name or a tapeout.stack.Stack); None: the chip's default."""
    if not isinstance(row, dict):
        return {"row": row, "predicted": None, "ratio": None, "reason": "not a JSON object"}
    out = dict(row)
    try:
        settings, res = _predict(row, stack)
    except Exception as e:  # noqa: BLE001 - one bad row must not stop the file; a bug is named as one
        msg = str(e).splitlines()[0] if str(e) else ""
        out.update(predicted=None, ratio=None, reason=msg if isinstance(e, TapeoutError) else f"bug: {type(e).__name__}: {msg}")
        return out
    pred = float(res[row["metric"]])
    details = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in res.items()
               if k != row["metric"]}          # JSON has no NaN (a TPOT of one-token outputs)
    out.update(settings, details=details)
    if not math.isfinite(pred) or pred <= 0:
        out.update(predicted=None, ratio=None, reason=f"metric {row['metric']!r}: not defined for this row ({pred})")
        return out
    pub = row.get("published")
    out.update(predicted=pred, ratio=pred / pub if isinstance(pub, (int, float)) and pub > 0 else None)
    return out


def validate_rows(rows: list, stack=None, progress=None) -> list[dict]:
    """predict_row over `rows`; progress(done, total, result_row) after each."""
    out = []
    for i, row in enumerate(rows):
        out.append(predict_row(row, stack))
        if progress:
            progress(i + 1, len(rows), out[-1])
    return out


# ---------------------------------------------------------------- statistics and files
def stats(rows: list[dict]) -> dict:
    """n, geometric mean of predicted/published, MAPE (%), the worst row (largest |log ratio|)."""
    ok = [r for r in rows if r.get("ratio")]
    if not ok:
        return {"n": 0, "geomean": None, "mape_pct": None, "worst": None}
    logs = [math.log(r["ratio"]) for r in ok]
    worst = max(ok, key=lambda r: abs(math.log(r["ratio"])))
    return {"n": len(ok), "geomean": math.exp(sum(logs) / len(ok)),
            "mape_pct": 100 * sum(abs(r["ratio"] - 1) for r in ok) / len(ok),
            "worst": {"id": worst.get("id"), "ratio": worst["ratio"]}}


def summarize(rows: list[dict]) -> dict:
    """Statistics over all rows, per chip and per stack; `unpredicted` counts rows without a prediction."""
    def by(key):
        groups: dict = {}
        for r in rows:
            if r.get("ratio"):
                groups.setdefault(str(r.get(key) or "-"), []).append(r)
        return {k: stats(v) for k, v in sorted(groups.items())}

    return {"all": stats(rows), "by_chip": by("chip"), "by_stack": by("stack"),
            "unpredicted": sum(1 for r in rows if r.get("predicted") is None)}


def load_rows(path) -> tuple[dict, list]:
    """(meta, rows) of a results file: {"meta": ..., "results": [...]} or a bare list."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TapeoutError(f"{p}: no such file") from None
    except OSError as e:
        raise TapeoutError(f"{p}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TapeoutError(f"{p}: not valid JSON: {e}") from None
    if isinstance(data, list):
        return {}, data
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data.get("meta", {}), data["results"]
    raise TapeoutError(f"{p}: expected a list of rows or an object with a 'results' list")


def write_results(path, meta: dict, rows: list[dict], summary: dict) -> None:
    """Write the file whole or not at all (a temporary file beside it, then renamed over it)."""
    import json
    import os
    import tempfile
    from pathlib import Path

    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "summary": summary, "results": rows}, f, indent=1)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        os.unlink(tmp)
        raise
