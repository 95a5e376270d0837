"""`tapeout validate`: every scenario against the API it stands on, layout search, reasons for bad rows,
the statistics, the shipped published-results file and the command line."""
import json
import math
import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

from tapeout.cli import app
from tapeout.llm.kernels import Batch
from tapeout.perf.api import estimate, run_batch
from tapeout.validate import (METRICS, SCENARIOS, clear_memo, gini, layouts, load_rows, predict_row, routing_skew,
                              stats, summarize, validate_rows)

BASE = {"chip": "h100-sxm", "chips": 1, "tp": 1, "pp": 1, "ep": 1, "model": "llama-3.2-1b", "weights": "bf16",
        "kv": "bf16", "metric": "output_tok_s"}
MOE = dict(BASE, model="qwen3-30b-a3b", chips=4, tp=1, ep=4)


def row(**kw):
    return dict(BASE, **kw)


@pytest.fixture(autouse=True)
def fresh_memo():
    clear_memo()


def test_static_is_estimate():
    r = predict_row(row(scenario="static", batch=8, workload="fixed:512:128"))
    e = estimate("llama-3.2-1b", "h100-sxm", batch=8, prompt=512, output=128, weights="bf16", kv="bf16")
    assert r["predicted"] == pytest.approx(8 * 128 / e.e2e_s, rel=1e-12)
    assert r["details"]["total_tok_s"] == pytest.approx(8 * 640 / e.e2e_s, rel=1e-12)
    assert r["details"]["tpot_ms"] == pytest.approx(e.tpot_s * 1e3) and r["layout"]["replicas"] == 1


def test_static_splits_the_batch_over_replicas_and_latency_is_batch_one():
    two = predict_row(row(scenario="static", chips=2, batch=8, workload="fixed:512:128"))
    e4 = estimate("llama-3.2-1b", "h100-sxm", batch=4, prompt=512, output=128, weights="bf16", kv="bf16")
    assert two["layout"]["replicas"] == 2 and two["predicted"] == pytest.approx(8 * 128 / e4.e2e_s, rel=1e-12)
    lat = predict_row(row(scenario="latency", metric="tpot_ms", workload="fixed:512:128"))
    e1 = estimate("llama-3.2-1b", "h100-sxm", batch=1, prompt=512, output=128, weights="bf16", kv="bf16")
    assert lat["predicted"] == pytest.approx(e1.tpot_s * 1e3)


def test_decode_is_batch_over_step_time():
    r = predict_row(dict(MOE, scenario="decode", batch_per_chip=16, context=2048, metric="output_tok_s_per_chip",
                         slo_tpot_s=1e-6))
    sec = run_batch("qwen3-30b-a3b", "h100-sxm", Batch.of("decode", 16, 2048), weights="bf16", kv="bf16", ep=4).seconds
    assert r["predicted"] == pytest.approx(16 / sec) and r["details"]["tpot_ms"] == pytest.approx(sec * 1e3)
    assert r["details"]["output_tok_s"] == pytest.approx(4 * 16 / sec) and r["details"]["meets_slo_tpot"] is False
    # the serving simulator's seam gives the same step (within its interpolation)
    from tapeout.serve.steptime import Parallel, StepTimer

    st = StepTimer("qwen3-30b-a3b", "h100-sxm", Parallel(ep=4), weights="bf16", kv="bf16").step((0, 0, 0), 64, 64 * 2048)[0]
    assert st == pytest.approx(sec, rel=0.03)


def test_prefill_tokens_per_chip_and_routing():
    kw = dict(MOE, scenario="prefill", prompt=2048, tokens_per_step=4096, metric="input_tok_s_per_chip")
    bal = predict_row(dict(kw, routing="balanced"))
    sec = run_batch("qwen3-30b-a3b", "h100-sxm", Batch.of("prefill", 2, 2048), weights="bf16", kv="bf16", ep=4).seconds
    assert bal["predicted"] == pytest.approx(4096 / sec) and bal["details"]["prompts_per_step"] == 2
    skewed = predict_row(dict(kw, routing="default"))
    assert skewed["moe_skew"] > 0 and skewed["predicted"] < bal["predicted"]   # the busiest chip's experts set the pace
    assert "routing" in predict_row(dict(kw, routing="zipf"))["reason"]


def test_routing_skew_meets_the_gini_in_the_data_file():
    from tapeout.llm.spec import load_model
    from tapeout.serve.data import table

    spec = load_model("deepseek-r1")
    s = routing_skew(spec, "default")
    assert gini([(i + 1) ** -s for i in range(spec.moe.experts)]) == pytest.approx(table("routing")["gini"]["mla"], abs=1e-6)
    assert routing_skew(load_model("llama-3.2-1b"), "default") == 0.0 and routing_skew(spec, "balanced") == 0.0


def test_offline_throughput_rises_with_max_seqs():
    kw = row(scenario="offline", workload="chat", requests=200)
    few, many = predict_row(dict(kw, max_seqs=4)), predict_row(dict(kw, max_seqs=32))
    assert few["details"]["max_seqs"] == 4 and many["predicted"] > 2 * few["predicted"]
    assert many["details"]["total_tok_s"] > many["predicted"]


def test_concurrency_is_offline_with_that_many_in_flight():
    kw = row(workload="chat", requests=150)
    closed = predict_row(dict(kw, scenario="concurrency", concurrency=8))
    assert closed["predicted"] == pytest.approx(predict_row(dict(kw, scenario="offline", max_seqs=8))["predicted"])


def test_server_meets_its_slo():
    r = predict_row(row(scenario="server", workload="chat", requests=300, slo_ttft_s=0.5, slo_tpot_s=0.02,
                        slo_percentile=90))
    d = r["details"]
    assert r["predicted"] > 0 and d["rate_req_s"] > 0
    assert d["ttft_p90_ms"] <= 500 and d["tpot_p90_ms"] <= 20


def test_layout_search_takes_the_best_that_fits():
    kw = row(model="llama-3.1-8b", chips=4, tp=None, scenario="static", batch=64, workload="fixed:1024:256")
    best = predict_row(kw)
    each = {t: predict_row(dict(kw, tp=t))["predicted"] for t in (1, 2, 4)}
    assert best["predicted"] == pytest.approx(max(each.values())) and each[best["layout"]["tp"]] == best["predicted"]
    lat = predict_row(dict(kw, metric="tpot_ms"))                 # lower is better for latencies
    assert lat["layout"]["tp"] == 4
    big = predict_row(row(model="llama-3.1-70b", chips=4, tp=None, scenario="static", batch=1, workload="fixed:128:128"))
    assert big["layout"]["tp"] >= 2                               # 140 GB of bf16 weights need 2+ chips
    none = predict_row(row(model="llama-3.1-405b", chips=2, tp=None, scenario="static", batch=1, workload="fixed:8:8"))
    assert none["predicted"] is None and "no layout of 2 chips" in none["reason"]
    ls = layouts(types.SimpleNamespace(row={"tp": None, "pp": None, "ep": None}, chips=8, moe=False), "offline")
    assert len(ls) == 10 and all(8 % (x.tp * x.pp) == 0 and x.ep == 1 for x in ls)


def test_bad_rows_give_one_line_reasons_and_the_rest_runs():
    rows = [row(chip="no-such-chip", scenario="static", batch=1, workload="fixed:8:8"),
            row(model="no-such-model", scenario="static", batch=1, workload="fixed:8:8"),
            row(scenario="warp", workload="fixed:8:8"),
            row(scenario="static", workload="fixed:8:8"),                       # no batch
            row(scenario="static", batch=1, workload="chat"),                   # static needs fixed lengths
            row(scenario="static", batch=1, workload="fixed:8:8", metric="joules"),
            row(scenario="decode", batch_per_chip=1, context=8, metric="input_tok_s_per_chip"),
            row(scenario="static", batch=1, workload="fixed:8:8", chips=2, pp=2, tp=1),
            row(scenario="static", batch=1, workload="fixed:8:8", stack="no-such-stack"),
            row(scenario="offline", workload="fixed:64:64", model="llama-3.1-70b", requests=10),   # 140 GB on 80
            "not a row",
            row(scenario="static", batch=1, workload="fixed:8:8", published=10.0)]
    out = validate_rows(rows)
    for r, word in zip(out, ("no-such-chip", "no-such-model", "scenario", "batch", "fixed:PROMPT:OUTPUT", "metric",
                             "input_tok_s_per_chip", "pp", "no-such-stack", "no room", "object")):
        assert r["predicted"] is None and word in r["reason"] and "\n" not in r["reason"], (word, r["reason"])
        assert not r["reason"].startswith("bug"), r["reason"]
    assert out[-1]["predicted"] > 0 and out[-1]["ratio"] == pytest.approx(out[-1]["predicted"] / 10)


def test_undefined_metric_is_a_reason_and_json_gets_no_nan():
    r = predict_row(row(scenario="offline", workload="fixed:64:1", requests=20, metric="tpot_ms"))
    assert r["predicted"] is None and "not defined" in r["reason"]
    ok = predict_row(row(scenario="offline", workload="fixed:64:1", requests=20))
    assert ok["predicted"] > 0 and ok["details"]["tpot_ms"] is None
    json.dumps(ok, allow_nan=False)


def test_stated_layout_that_the_memory_model_rejects_is_still_predicted():
    r = predict_row(row(model="llama-3.1-8b", scenario="static", batch=512, workload="fixed:4096:4096"))
    assert r["predicted"] > 0 and "does not fit" in r["warning"]


def test_vision_rows_use_the_npu_predictor(monkeypatch):
    kw = dict(chip="hanguang-800", chips=2, model="resnet-50", weights="int8", scenario="offline", workload="imagenet-224",
              metric="samples_s", published=100.0)
    monkeypatch.setitem(sys.modules, "tapeout.npu.vision", None)     # not installed: a reason, no crash
    assert "vision" in predict_row(kw)["reason"]
    clear_memo()
    calls = []
    fake = types.ModuleType("tapeout.npu.vision")
    fake.predict_throughput = lambda model, chip, dtype, batch: calls.append((model, chip, dtype, batch)) or {"samples_s": 60.0}
    monkeypatch.setitem(sys.modules, "tapeout.npu.vision", fake)
    r = predict_row(kw)
    assert r["predicted"] == 120.0 and r["ratio"] == 1.2 and calls == [("resnet-50", "hanguang-800", "int8", None)]


def test_static_rows_are_memoized(monkeypatch):
    import functools

    import tapeout.perf.api as api

    n = []
    real = api.estimate
    monkeypatch.setattr(api, "estimate", functools.wraps(real)(lambda *a, **k: n.append(1) or real(*a, **k)))
    r = row(scenario="static", batch=4, workload="fixed:64:64")
    a, b = predict_row(dict(r, id="x", published=1.0)), predict_row(dict(r, id="y", published=2.0))
    assert len(n) == 1 and a["predicted"] == b["predicted"] and b["ratio"] == pytest.approx(a["ratio"] / 2)


def test_stats_on_a_toy_list():
    rows = [{"id": "a", "chip": "x", "stack": "s", "predicted": 2.0, "ratio": 2.0},
            {"id": "b", "chip": "x", "stack": "t", "predicted": 0.8, "ratio": 0.8},
            {"id": "c", "chip": "y", "stack": "s", "ratio": None, "predicted": None}]
    s = stats(rows)
    assert s["n"] == 2 and s["geomean"] == pytest.approx(math.sqrt(1.6)) and s["mape_pct"] == pytest.approx(60.0)
    assert s["worst"] == {"id": "a", "ratio": 2.0}
    summ = summarize(rows)
    assert summ["by_chip"]["x"]["n"] == 2 and "y" not in summ["by_chip"] and summ["unpredicted"] == 1
    assert summ["by_stack"]["t"]["geomean"] == pytest.approx(0.8) and stats([])["geomean"] is None
    assert gini([1, 1, 1, 1]) == 0 and gini([0, 0, 0, 1]) == pytest.approx(0.75)


def test_published_file_is_well_formed():
    from importlib import resources

    meta, rows = load_rows(resources.files("tapeout") / "data" / "calibration" / "published.json")
    assert len(rows) == 50 and meta["description"]
    assert len({r["id"] for r in rows}) == 50
    for r in rows:
        assert r["scenario"] in SCENARIOS and r["metric"] in METRICS and r["published"] > 0, r["id"]
        assert r["source"] and r["quote"] and r["trust"] in ("high", "medium"), r["id"]


def _cli(args):
    return subprocess.run([sys.executable, "-c", f"from tapeout.cli import main; main({args!r})"],
                          capture_output=True, text=True)


def test_cli_corrupt_file_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": [1,')
    for args, msg in ((["validate", str(bad)], "not valid JSON"), (["validate", str(tmp_path / "none.json")], "no such file")):
        p = _cli(args)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_cli_writes_the_whole_file(tmp_path):
    src = tmp_path / "rows.json"
    rows = [dict(row(scenario="static", batch=2, workload="fixed:64:64"), id="A", published=100.0),
            dict(row(chip="no-such-chip", scenario="static", batch=2, workload="fixed:64:64"), id="B", published=1.0),
            dict(row(scenario="latency", workload="fixed:64:64", metric="ttft_ms"), id="C", published=5.0)]
    src.write_text(json.dumps(rows))                                   # a bare list is accepted
    out = tmp_path / "out.json"
    res = CliRunner().invoke(app, ["validate", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["id"] for r in data["results"]] == ["A", "B", "C"] and data["summary"]["all"]["n"] == 2
    assert data["results"][1]["reason"] and data["results"][0]["layout"]["tp"] == 1
    assert "by chip" in res.output and "h100-sxm" in res.output and "not predicted" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "rows.json"]   # no temporary left behind
    only = CliRunner().invoke(app, ["validate", str(src), "--out", str(out), "--rows", "C"])
    assert only.exit_code == 0 and [r["id"] for r in json.loads(out.read_text())["results"]] == ["C"]
    assert _cli(["validate", str(src), "--rows", "Z"]).returncode == 2


def test_decode_with_a_fixed_workload_runs_at_the_mean_cache_length():
    kw = dict(MOE, scenario="decode", batch_per_chip=16, metric="output_tok_s_per_chip")
    by_workload = predict_row(dict(kw, workload="fixed:1024:1024"))
    assert by_workload["details"]["context"] == 1536
    assert by_workload["predicted"] == pytest.approx(predict_row(dict(kw, context=1536))["predicted"], rel=1e-12)
    assert by_workload["predicted"] < predict_row(dict(kw, context=1024))["predicted"]   # longer caches, slower step
    assert "context" in predict_row(kw)["reason"]


def test_cloudmatrix_decode_rows_take_the_quoted_prompt_and_output():
    from importlib import resources

    _, rows = load_rows(resources.files("tapeout") / "data" / "calibration" / "published.json")
    decode = [r for r in rows if r["chip"] == "ascend-910c" and r["scenario"] == "decode"]
    assert len(decode) == 5
    for r in decode:        # quote columns: TPOT SLO, prompt, output, batch per NPU, TPOT, tokens/s per NPU
        cols = [c.strip().replace(",", "") for c in r["quote"].strip("|").split("|")]
        assert r["workload"] == f"fixed:{cols[1]}:{cols[2]}" and r["batch_per_chip"] == int(cols[3])
        assert r["published"] == float(cols[5]) and "context" not in r


def test_rocm_stack_grows_the_405b_tp8_step_with_the_batch_as_published():
    """The Oracle vLLM table's latency grows ~5x from batch 1 to 256 at 128 + 128 tokens, linearly from batch 1
    (where the GEMMs are weight-bound): the TP8 all-reduce payload grows with the batch. The fitted rocm-vllm
    stack's collective bandwidth must carry that; with the links at peak (ideal comm) batch 256 is ~1.5x fast."""
    import dataclasses

    from tapeout.stack import load_stack

    r = dict(chip="mi300x", chips=8, tp=8, pp=1, ep=1, model="llama-3.1-405b", weights="fp8", kv="fp8",
             scenario="static", workload="fixed:128:128", metric="output_tok_s")
    rocm = load_stack("rocm-vllm")
    b1, b256 = (predict_row(dict(r, batch=b), stack=rocm)["predicted"] for b in (1, 256))
    assert 0.8 < (b256 / b1) / (1846 / 36) < 1.25                  # published: 36 and 1,846 tok/s
    peak = dataclasses.replace(rocm, name="rocm-peak-links", overrides={**rocm.overrides, "comm_efficiency": 1.0})
    assert predict_row(dict(r, batch=256), stack=peak)["predicted"] > 1.4 * b256


def test_gaudi2_optimum_habana_ci_rows_quote_the_ci_table():
    """Every fp8 row of optimum-habana's Gaudi 2 CI table (v1.14.0): the fields are the quoted tuple's."""
    from importlib import resources

    meta, rows = load_rows(resources.files("tapeout") / "data" / "calibration" / "gaudi2-optimum-habana-ci.json")
    assert len(rows) == 19 and meta["description"] and len({r["id"] for r in rows}) == 19
    for r in rows:      # quote: (model, world_size, batch, reuse_cache, input, output, baseline),
        cols = [c.strip().strip('"') for c in r["quote"].strip("(),").split(",")]
        assert r["chips"] == r["tp"] == int(cols[1]) and r["batch"] == int(cols[2]), r["id"]
        assert r["workload"] == f"fixed:{cols[4]}:{cols[5]}" and r["published"] == float(cols[6]), r["id"]
        assert r["scenario"] in SCENARIOS and r["metric"] in METRICS and r["source"] and r["trust"] == "medium"


def test_jetstream_table_rows_quote_the_table():
    """The rest of jetstream-pytorch's TPU v5e table (never fitted): each row's fields are its quoted line's
    (date | device | dtype | batch | cache length | max input | max output | throughput), with the
    data-parallel Gemma 2B rows split into one-chip replicas of batch / chips sequences."""
    from importlib import resources

    cal = resources.files("tapeout") / "data" / "calibration"
    meta, rows = load_rows(cal / "tpu-v5e-jetstream.json")
    fitted = {r["quote"] for r in load_rows(cal / "published.json")[1] if r["chip"] == "tpu-v5e"}
    assert len(rows) == 10 and meta["description"] and not fitted & {r["quote"] for r in rows}
    for r in rows:
        cols = [c.strip() for c in r["quote"].split("|")]
        assert r["chips"] == int(cols[1].split("-")[-1]) and r["published"] == float(cols[7]), r["id"]
        assert r["weights"] == r["kv"] == {"bfloat16": "bf16", "int8": "int8"}[cols[2]], r["id"]
        assert r["max_seqs"] * r["chips"] // r["tp"] == int(cols[3]) and (cols[5], cols[6]) == ("1024", "1024")
        assert r["workload"] == "sharegpt-1024" and r["requests"] == 2000 and r["metric"] in METRICS


def test_gaudi2_pa053_is_not_a_four_card_collective_effect():
    """PA-053 (Intel's Gaudi 2 table: 4 cards TP4, 128 + 2,048 tokens, batch 327, 3,211 tok/s) is predicted
    ~1.9x fast. optimum-habana's CI for the same software release runs the same 4 cards and lengths at batch
    750: 7,422 tok/s, the same ~101 ms per step at 2.3x the batch. The shipped gaudi-synapse stack (never
    fitted on the CI rows) predicts that row and the CI's other 4-card TP4 rows within 0.85-1.18, so what
    separates PA-053 is not the 4-card collective: slowing 4-card collectives to fit PA-053 fails here."""
    from importlib import resources

    cal = resources.files("tapeout") / "data" / "calibration"
    pa053 = next(r for r in load_rows(cal / "published.json")[1] if r["id"] == "PA-053")
    ci = load_rows(cal / "gaudi2-optimum-habana-ci.json")[1]
    same = next(r for r in ci if all(r[k] == pa053[k] for k in ("chip", "chips", "tp", "model", "workload")))
    assert same["batch"] > 2 * pa053["batch"]
    step = [r["batch"] / r["published"] for r in (pa053, same)]    # seconds per decode step, prefill included
    assert abs(step[0] / step[1] - 1) < 0.03
    four = [r for r in ci if r["tp"] == 4 and r["model"] == "llama-2-70b"]
    assert len(four) == 3
    for r in four:
        assert 0.85 < predict_row(r)["ratio"] < 1.18, r["id"]


def test_gaudi_static_rows_decode_over_the_filled_buckets():
    """optimum-habana's fp8 recipe (--bucket_size 128 --bucket_internal) decodes over the filled 128-token
    buckets, not the whole preallocated cache: gaudi-synapse has dynamic_shapes, so a static batch's decode
    step is timed at prompt + output / 2. Intel's single-card 128 + 2,048 rows (attention over the cache is
    most of their step) need it: within 0.85-1.18 with the shipped stack, below 0.8 at the compiled length."""
    import dataclasses
    from importlib import resources

    from tapeout.stack import load_stack

    s = load_stack("gaudi-synapse")
    assert s.has("dynamic_shapes")
    e = estimate("llama-2-7b", "gaudi2", batch=16, prompt=128, output=2048, weights="fp8", kv="fp8", stack=s)
    at = estimate("llama-2-7b", "gaudi2", batch=16, prompt=128 + 1024, output=1, weights="fp8", kv="fp8", stack=s)
    assert e.tpot_s == pytest.approx(at.decode.seconds, rel=1e-9)
    static = dataclasses.replace(s, name="gaudi-compiled-length", kernels=tuple(k for k in s.kernels if k != "dynamic_shapes"))
    _, rows = load_rows(resources.files("tapeout") / "data" / "calibration" / "published.json")
    long_out = [r for r in rows if r["chip"] == "gaudi2" and r["chips"] == 1 and r["workload"] == "fixed:128:2048"]
    assert len(long_out) == 3
    for r in long_out:
        assert 0.85 < predict_row(r, stack=s)["ratio"] < 1.18, r["id"]
        assert predict_row(r, stack=static)["ratio"] < 0.8, r["id"]


def test_mistral_on_gaudi2_fits_each_publications_recipe():
    """Intel's table and optimum-habana's CI give Mistral-7B fp8 on one Gaudi 2 at the same batches; at
    128 + 2,048 tokens, batch 120, the table says 11,294 tok/s and the CI 6,979. The CI's Mistral command
    passes no bucket flags (decode over the whole preallocated cache); the table's recipe buckets. The
    shipped stack (bucketed, fitted on the table) and the same stack at the compiled length each predict
    their own publication's row, not the other's; the CI rows were never fitted on."""
    import dataclasses
    from importlib import resources

    from tapeout.stack import load_stack

    s = load_stack("gaudi-synapse")
    static = dataclasses.replace(s, name="gaudi-compiled-length", kernels=tuple(k for k in s.kernels if k != "dynamic_shapes"))
    cal = resources.files("tapeout") / "data" / "calibration"
    key = dict(chip="gaudi2", chips=1, model="mistral-7b", workload="fixed:128:2048", batch=120)
    table = next(r for r in load_rows(cal / "published.json")[1] if all(r.get(k) == v for k, v in key.items()))
    ci = next(r for r in load_rows(cal / "gaudi2-optimum-habana-ci.json")[1] if all(r.get(k) == v for k, v in key.items()))
    assert ci.pop("stack") == "gaudi-synapse-1.18"      # = gaudi-synapse for a dense model; the test passes its own
    assert table["published"] > 1.5 * ci["published"]
    assert 0.85 < predict_row(table, stack=s)["ratio"] < 1.18 and predict_row(table, stack=static)["ratio"] < 0.8
    assert 0.85 < predict_row(ci, stack=static)["ratio"] < 1.18 and predict_row(ci, stack=s)["ratio"] > 1.4
