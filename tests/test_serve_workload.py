"""Request generation: length distributions, arrival processes, trace files."""
import numpy as np
import pytest

from bench_helpers import load_benchmark
from tapeout.errors import TapeoutError
from tapeout.serve.data import table
from tapeout.serve.workload import (arrival_times, generate, lengths, load_trace, save_trace, workload_names,
                                    workload_prefix)


LLM_WORKLOADS = ["chat", "rag", "mlperf-llama2", "sharegpt", "sharegpt-1024", "mlperf-mixtral", "mlperf-llama3.1-405b",
                 "reasoning", "long-context", "agentic"]


@pytest.mark.parametrize("name", LLM_WORKLOADS)
def test_lengths_match_the_data_table(name):
    w = table("workloads")[name]
    p, o = lengths(name, 20000, np.random.default_rng(0))
    assert p.min() >= w["prompt_min"] and p.max() <= w["prompt_max"]
    assert o.min() >= w["output_min"] and o.max() <= w["output_max"]
    assert (p + o).max() <= w.get("total_max", np.inf)
    assert p.mean() == pytest.approx(w["prompt_mean"], rel=0.02)
    assert o.mean() == pytest.approx(w["output_mean"], rel=0.02)


def test_published_workload_figures():
    """The sourced statistics the new workloads are built from (a wrong transcription fails here)."""
    t = table("workloads")
    assert (t["sharegpt"]["prompt_max"], t["sharegpt"]["total_max"], t["sharegpt"]["prompt_min"]) == (1024, 2048, 4)
    assert t["sharegpt"]["prompt_mean"] == pytest.approx(229711 / 1000, abs=0.05)
    assert t["sharegpt-1024"]["output_max"] == t["sharegpt-1024"]["prompt_max"] == 1024
    assert (t["mlperf-mixtral"]["samples"], t["mlperf-mixtral"]["output_mean"]) == (15000, 145.9)
    assert (t["mlperf-llama3.1-405b"]["samples"], t["mlperf-llama3.1-405b"]["output_max"]) == (8313, 2000)


def test_total_max_caps_prompt_plus_output():
    """sharegpt drops requests with prompt + output > 2048: long prompts get shorter outputs."""
    p, o = lengths("sharegpt", 50000, np.random.default_rng(3))
    assert (p + o).max() <= 2048 and o.max() > 1024   # outputs may exceed 1024 only next to short prompts
    assert o[p > 900].max() <= 2048 - 900


def test_vision_workload_is_listed_apart_and_refused_for_llm_serving():
    w = table("workloads")["imagenet-224"]
    assert w["kind"] == "vision" and (w["image_height"], w["image_width"], w["channels"], w["samples"]) == (224, 224, 3, 50000)
    assert "imagenet-224" in workload_names("vision") and "imagenet-224" not in workload_names()
    assert set(LLM_WORKLOADS) == set(workload_names())
    with pytest.raises(TapeoutError, match="imagenet-224' is a vision data set"):
        lengths("imagenet-224", 10, np.random.default_rng(0))
    with pytest.raises(TapeoutError, match="vision"):
        generate(10, workload="imagenet-224", arrival="offline")


def test_fixed_lengths_and_errors():
    p, o = lengths("fixed:100:7", 5, np.random.default_rng(0))
    assert list(p) == [100] * 5 and list(o) == [7] * 5
    with pytest.raises(TapeoutError, match="fixed:PROMPT:OUTPUT"):
        lengths("fixed:x", 1, np.random.default_rng(0))
    with pytest.raises(TapeoutError, match="use one of"):
        lengths("nope", 1, np.random.default_rng(0))


@pytest.mark.parametrize("process,cv", [("poisson", 1.0), ("gamma", 3.0), ("gamma", 0.5)])
def test_arrival_rate_and_burstiness(process, cv):
    t = arrival_times(40000, 10.0, np.random.default_rng(1), process, cv)
    gaps = np.diff(t)
    assert t[0] == 0 and np.all(gaps >= 0)
    assert 1 / gaps.mean() == pytest.approx(10.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_offline_and_seeding():
    a = generate(50, workload="chat", arrival="offline", seed=3)
    assert all(r.arrival_s == 0 for r in a)
    assert generate(50, rate=2, seed=3) == generate(50, rate=2, seed=3)
    assert generate(50, rate=2, seed=3) != generate(50, rate=2, seed=4)
    with pytest.raises(TapeoutError, match="rate"):
        generate(5, workload="chat", arrival="poisson")


def test_shared_prefixes():
    reqs = generate(200, rate=5, prefix_groups=3, prefix_len=64, seed=0)
    assert {r.prefix_id for r in reqs} == {0, 1, 2}
    assert all(r.prefix_len == 64 and r.prompt > 64 for r in reqs)


def test_workloads_of_2026():
    """reasoning: thousands of output tokens up to R1's 32k cap; long-context: 32k-128k prompts;
    agentic: sessions sharing their accumulated context as a prefix (the table's own prefix groups)."""
    t = table("workloads")
    assert t["reasoning"]["output_mean"] == 4717.5 and t["reasoning"]["output_max"] == 32768
    assert (t["long-context"]["prompt_min"], t["long-context"]["prompt_max"]) == (32768, 131072)
    p, o = lengths("reasoning", 20000, np.random.default_rng(1))
    assert o.mean() > 10 * p.mean() and (o > 16384).any() and o.max() <= 32768
    p, _ = lengths("long-context", 20000, np.random.default_rng(1))
    assert (p >= 32768).all() and (p <= 131072).all() and (p > 100_000).any()
    assert workload_prefix("agentic") == (16, 6144) and workload_prefix("chat") == (0, 0)
    reqs = generate(4000, rate=5, workload="agentic", seed=0)
    assert {r.prefix_id for r in reqs} == set(range(16)) and all(r.prefix_len == 6144 for r in reqs)
    total = np.array([r.prompt for r in reqs])
    assert total.min() >= 6144 + 16 and total.mean() == pytest.approx(6144 + 1446, rel=0.05)
    own = generate(50, rate=5, workload="agentic", prefix_groups=2, prefix_len=100, seed=0)
    assert {r.prefix_len for r in own} == {100} and {r.prefix_id for r in own} == {0, 1}


def test_trace_round_trip_csv_and_jsonl(tmp_path):
    reqs = generate(30, rate=3, prefix_groups=2, prefix_len=32, seed=2)
    save_trace(reqs, tmp_path / "t.csv")
    assert load_trace(tmp_path / "t.csv") == [r.__class__(r.id, round(r.arrival_s, 6), r.prompt, r.output,
                                                           r.prefix_id, r.prefix_len) for r in reqs]
    (tmp_path / "t.jsonl").write_text('{"arrival": 1.5, "prompt_tokens": 10, "output_tokens": 3}\n'
                                       '{"arrival": 0.5, "input_len": 20, "output_len": 4}\n')
    got = load_trace(tmp_path / "t.jsonl")
    assert [(r.arrival_s, r.prompt, r.output) for r in got] == [(0.5, 20, 4), (1.5, 10, 3)]


def test_bad_traces(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("arrival_s,prompt\n0,10\n")
    with pytest.raises(TapeoutError, match="bad.csv:2: missing column 'output'"):
        load_trace(f)
    f.write_text("arrival_s,prompt,output\n0,ten,3\n")
    with pytest.raises(TapeoutError, match="not a number"):
        load_trace(f)
    with pytest.raises(TapeoutError, match="no such trace"):
        load_trace(tmp_path / "missing.csv")


def test_design_objective_counts_the_agentic_shared_context():
    from tapeout.dse.objective import Workload

    assert Workload("llama-3.1-8b", "agentic").lengths() == (6144 + 1446, 182)
    assert Workload("llama-3.1-8b", "chat").lengths() == (161.31, 337.99)


def test_mlperf_prompt_lengths_are_the_benchmark_sets_own():
    """mlperf-* prompt statistics are those of the sets' per-sample token counts
    (benchmarks/data/mlperf-lengths; benchmarks/workload_lengths.py prints them)."""
    wl = load_benchmark("workload_lengths")
    t = table("workloads")
    for name, fn in wl.SETS.items():
        s = wl.stats(wl.DATA / fn)
        w = t[name]
        assert w["prompt_mean"] == pytest.approx(s["prompt"]["mean"], abs=0.01), name
        assert w["prompt_cv"] == pytest.approx(s["prompt"]["cv"], abs=0.001), name
        assert (w["prompt_min"], w["prompt_max"]) == (s["prompt"]["min"], s["prompt"]["max"]), name
        assert w["output_cv"] == pytest.approx(s["output"]["cv"], abs=0.001), name
        assert w["output_mean"] >= s["output"]["mean"] * 0.99, name   # the models' own outputs are no shorter
    assert t["mlperf-llama2"]["prompt_mean"] < 250      # not the few-hundred-token guess it replaced
