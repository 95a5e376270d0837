"""The serving simulator: conservation, queueing sanity, scheduler ordering, memory pressure, determinism."""
import numpy as np
import pytest

import tapeout
from tapeout.errors import DoesNotFitError, TapeoutError
from tapeout.serve.api import max_rate, meets, serve, stable
from tapeout.serve.metrics import latencies, occupancy
from tapeout.serve.workload import Request, generate

M, C = "llama-3.1-8b", "h100-sxm"


def check_conservation(r):
    rec = r.records
    assert not np.isnan(rec.finish).any() and not np.isnan(rec.first_token).any()   # every request finished
    assert np.all(rec.arrival <= rec.first_token + 1e-12) and np.all(rec.first_token <= rec.finish + 1e-12)
    assert rec.tokens_generated == rec.output.sum()                                  # exactly its outputs
    assert r.metrics["requests"] == len(rec.arrival)


@pytest.mark.parametrize("kw", [
    dict(scheduler="continuous"), dict(scheduler="chunked"), dict(scheduler="static"),
    dict(scheduler="continuous", memory_utilization=0.22), dict(scheduler="chunked", memory_utilization=0.22),
    dict(prefix_caching=True, prefix_groups=8, prefix_len=300, memory_utilization=0.22),
    dict(disaggregate=(1, 1)), dict(disaggregate=(1, 1), memory_utilization=0.22),
    dict(pp=2, chips=2), dict(chips=3),
])
def test_every_request_finishes_once_with_its_tokens(kw):
    r = serve(M, C, rate=30, requests=400, seed=1, **kw)
    check_conservation(r)


def test_preemption_triggers_when_kv_memory_is_small():
    big = serve(M, C, rate=40, requests=600, seed=2)
    small = serve(M, C, rate=40, requests=600, seed=2, memory_utilization=0.22)
    assert small.memory["all"]["kv_tokens"] < big.memory["all"]["kv_tokens"] / 10
    assert big.metrics["preemptions"] == 0 < small.metrics["preemptions"]
    assert small.records.preemptions.sum() == small.metrics["preemptions"]
    assert small.metrics["throughput_tok_s"] < big.metrics["throughput_tok_s"]
    check_conservation(small)


def test_littles_law():
    r = serve(M, C, rate=25, requests=800, seed=3)
    rec = r.records
    lam = len(rec.arrival) / rec.makespan_s
    wait = np.mean(rec.finish - rec.arrival)
    # the engine's own record of how many requests it held, step by step, against lambda x W
    assert occupancy(rec) == pytest.approx(lam * wait, rel=0.03)


def test_continuous_beats_static_at_load():
    kw = dict(rate=60, requests=600, seed=4)
    static = serve(M, C, scheduler="static", **kw).metrics
    cont = serve(M, C, scheduler="continuous", **kw).metrics
    chunk = serve(M, C, scheduler="chunked", **kw).metrics
    assert cont["throughput_tok_s"] > 1.2 * static["throughput_tok_s"]
    assert chunk["throughput_tok_s"] > 1.2 * static["throughput_tok_s"]
    assert cont["ttft_s"]["p50"] < static["ttft_s"]["p50"]


def test_light_load_latency_is_the_step_times():
    """One request alone: TTFT = one prefill step, TPOT = the mean decode step over its context."""
    from tapeout.perf.api import batch_time
    from tapeout.llm.kernels import Batch

    r = serve(M, C, requests=[Request(0, 0.0, 1000, 65)])
    ttft, tpot, _ = latencies(r.records)
    assert ttft[0] == pytest.approx(batch_time(M, C, Batch(prefill=((1000, 0),))), rel=0.02)
    mid = batch_time(M, C, Batch(decode=(1000 + 32,)))
    assert tpot[0] == pytest.approx(mid, rel=0.02)


def test_deterministic_with_a_seed():
    a = serve(M, C, rate=20, requests=300, seed=7, workload="chat")
    b = serve(M, C, rate=20, requests=300, seed=7, workload="chat")
    c = serve(M, C, rate=20, requests=300, seed=8, workload="chat")
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics


def test_offline_issues_everything_at_once():
    r = serve(M, C, requests=300, offline=True, seed=1)
    assert (r.records.arrival == 0).all()
    assert r.metrics["makespan_s"] == pytest.approx(r.records.finish.max())
    check_conservation(r)


def test_prefix_caching_saves_prefill():
    kw = dict(rate=20, requests=300, seed=5, prefix_groups=2, prefix_len=1024, workload="fixed:64:32")
    off = serve(M, C, **kw).metrics
    on = serve(M, C, prefix_caching=True, **kw).metrics
    assert on["prefix_hit_rate"] > 0.9
    assert on["ttft_s"]["mean"] < 0.7 * off["ttft_s"]["mean"]


def test_data_parallel_replicas_scale_throughput():
    kw = dict(requests=1200, seed=6, offline=True, max_seqs=32)   # every replica saturated
    one = serve(M, C, chips=1, **kw).metrics
    four = serve(M, C, chips=4, **kw).metrics
    assert four["throughput_tok_s"] > 3.3 * one["throughput_tok_s"]   # less the drain at the end
    assert four["throughput_tok_s_per_chip"] == pytest.approx(four["throughput_tok_s"] / 4)


def test_pipeline_bubbles():
    """A lone request gets nothing from pipeline stages (each step crosses both, plus a send);
    at load the two stages overlap different micro-batches."""
    lone = [Request(0, 0.0, 512, 33)]
    pp1 = serve(M, C, requests=lone).metrics["e2e_s"]["mean"]
    pp2 = serve(M, C, pp=2, chips=2, requests=lone).metrics["e2e_s"]["mean"]
    assert pp2 >= pp1
    busy = dict(requests=600, offline=True, seed=1, max_seqs=64)
    t1 = serve(M, C, **busy).metrics["throughput_tok_s"]
    t2 = serve(M, C, pp=2, chips=2, **busy).metrics["throughput_tok_s"]
    assert t2 > 1.5 * t1


def test_disaggregation_separates_prefill_from_decode():
    kw = dict(rate=6, requests=300, seed=9, workload="fixed:6000:64")   # long prompts, short answers
    co = serve(M, C, chips=2, scheduler="continuous", **kw).metrics
    pd = serve(M, C, disaggregate=(1, 1), **kw).metrics
    # decodes never wait behind a long prefill on their own chip: the per-request TPOT tail is tighter
    assert pd["tpot_s"]["p99"] < 0.7 * co["tpot_s"]["p99"]


def test_slo_metrics_and_max_rate():
    r = serve(M, C, rate=10, requests=300, seed=1, slo_ttft=2.0, slo_tpot=0.1)
    assert r.metrics["slo_attainment"] == 1.0 and meets(r, check_stable=False)
    tight = serve(M, C, rate=10, requests=300, seed=1, slo_ttft=1e-4, slo_tpot=0.1)
    assert tight.metrics["slo_attainment"] == 0 and tight.metrics["goodput_req_s"] == 0
    kw = dict(requests=1500, seed=1, slo_ttft=0.5, slo_tpot=0.02)
    rate, res = max_rate(M, C, iterations=3, **kw)
    assert rate > 0 and meets(res)
    assert not meets(serve(M, C, rate=rate * 1.3, **kw))


def test_overload_is_not_stable():
    """A finite run above capacity can keep its latencies for a while; its queue still grows."""
    ok = serve(M, C, rate=20, requests=3000, seed=1, record_steps=False)
    over = serve(M, C, rate=80, requests=3000, seed=1, record_steps=False)
    assert stable(ok) and ok.metrics["completion_ratio"] == pytest.approx(1.0, abs=0.03)
    assert not stable(over) and over.metrics["completion_ratio"] < 0.6


def test_energy_and_cost():
    m = serve(M, C, rate=10, requests=200, seed=1).metrics
    chip = tapeout.load_chip(C)
    assert chip.chip.idle_w < m["power_w_per_chip"] <= chip.chip.tdp_w * 1.05
    assert m["energy_j_per_token"] == pytest.approx(m["energy_j"] / m["output_tokens"])
    assert m["cost_usd_per_mtok"] == pytest.approx(m["cost_usd_per_hour_per_chip"] * m["makespan_s"] / 3600
                                                   / m["output_tokens"] * 1e6)


def test_user_errors():
    with pytest.raises(DoesNotFitError, match="KV cache"):
        serve("llama-2-70b", C, requests=5, rate=1)
    with pytest.raises(TapeoutError, match="multiple of"):
        serve(M, C, tp=2, chips=3, requests=5, rate=1)
    with pytest.raises(TapeoutError, match="ep=2: .* is a dense model"):
        serve(M, C, ep=2, chips=2, requests=5, rate=1)
    with pytest.raises(TapeoutError, match="scheduler='fifo': use one of"):
        serve(M, C, scheduler="fifo", requests=5, rate=1)
    with pytest.raises(DoesNotFitError, match="KV blocks"):
        serve(M, C, requests=[Request(0, 0.0, 100, 4_000_000)])


def test_simulate_serving_is_the_public_entry_point():
    import tapeout.serve.metrics  # noqa: F401  (binds the package tapeout.serve; no clash with the function)

    assert tapeout.simulate_serving(M, C, requests=3, rate=1).metrics["requests"] == 3
