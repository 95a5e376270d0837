"""Pipeline parallelism: m micro-batches over pp stages, the fill/drain bubble (pp - 1) / (m + pp - 1),
and the rolling schedule of vLLM / TensorRT-LLM (micro-batches return to stage 0 as they leave the last)."""
import pytest

from tapeout.errors import TapeoutError
from tapeout.serve.api import serve
from tapeout.serve.steptime import Parallel, StepTimer, attention_pairs, bubble_fraction, pipeline_span

M, C, PP, TOKENS = "llama-3.1-8b", "h100-sxm", 4, 8192


def _one_wave(m: int):
    """TOKENS prompt tokens split over m micro-batches (one prompt each, output 1: prefill only), all
    issued at once: each of the m engines runs one micro-batch through the PP stages."""
    n = TOKENS // m
    r = serve(M, C, pp=PP, chips=PP, micro_batches=m, requests=m, offline=True, workload=f"fixed:{n}:1")
    t = StepTimer(M, C, Parallel(pp=PP))
    stage, _ = t.step((1, n, attention_pairs(n, 0)), 0, 0)
    return r.metrics, stage, t.stage_send_s(n)


@pytest.mark.parametrize("m", [1, 2, 4, 8, 16])
def test_one_wave_takes_m_plus_pp_minus_1_stage_times(m):
    met, stage, send = _one_wave(m)
    assert met["makespan_s"] == pytest.approx(pipeline_span(stage, send, PP, m), rel=1e-9)
    bubble = 1.0 - met["utilization"]                 # each chip computes m stage times in the makespan
    assert bubble == pytest.approx(((PP - 1) * stage + (PP - 1) * send) / pipeline_span(stage, send, PP, m), rel=1e-9)
    assert bubble == pytest.approx(bubble_fraction(PP, m), abs=0.02)   # the sends add < 2 points


def test_bubble_shrinks_with_micro_batches_as_gpipe_predicts():
    bubbles = [1.0 - _one_wave(m)[0]["utilization"] for m in (1, 2, 4, 8, 16)]
    assert bubbles == sorted(bubbles, reverse=True)
    assert bubbles[0] == pytest.approx(0.75, abs=0.02) and bubbles[-1] == pytest.approx(3 / 19, abs=0.02)


def test_rolling_schedule_fills_the_pipeline_at_load():
    """Decode at load: with one micro-batch in flight each step crosses the stages alone (a chip is busy
    at most 1/pp of the time); with pp in flight (the engines' default) the stages overlap."""
    kw = dict(pp=PP, chips=PP, requests=400, offline=True, seed=3, max_seqs=64, workload="fixed:256:64")
    one = serve(M, C, micro_batches=1, **kw).metrics
    full = serve(M, C, **kw)
    assert full.settings["micro_batches"] == PP
    assert one["utilization"] <= 1.0 / PP + 1e-9
    assert full.metrics["utilization"] > 0.8
    assert full.metrics["throughput_tok_s"] > 2.5 * one["throughput_tok_s"]


def test_uneven_layers_time_the_slowest_stage():
    """llama-3.1-8b has 32 layers: 3 stages hold 11, 11 and 10; the step is paced by 11/32 of it."""
    n = 2048
    whole, _ = StepTimer(M, C).step((1, n, attention_pairs(n, 0)), 0, 0)
    stage, _ = StepTimer(M, C, Parallel(pp=3)).step((1, n, attention_pairs(n, 0)), 0, 0)
    assert stage == pytest.approx(whole * 11 / 32, rel=1e-9)


def test_micro_batches_must_be_positive():
    with pytest.raises(TapeoutError, match="micro_batches=-1: must be >= 1"):
        serve(M, C, pp=2, chips=2, micro_batches=-1, requests=4, offline=True)
