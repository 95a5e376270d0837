"""Speculative decoding in the serving simulator: a decode step verifies K drafted tokens per sequence
(perf.speculative.spec_step) and every running sequence gains the expected tokens per step, in lockstep."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.llm.spec import load_model
from tapeout.perf.api import dtypes_for, estimate
from tapeout.perf.speculative import parse, spec_step
from tapeout.serve.api import serve
from tapeout.serve.sim import KIND
from tapeout.serve.steptime import StepTimer
from tapeout.serve.workload import Request
from tapeout.validate import clear_memo, predict_row

M, C, DRAFT = "llama-3.1-8b", "h100-sxm", "llama-3.2-1b"


def _offline(workload: str, n: int = 32, **kw):
    return serve(M, C, offline=True, requests=n, workload=workload, seed=3, **kw)


def _decode_steps(r) -> int:
    return sum(1 for s in r.records.steps if s[4] == KIND["decode"])


def _conserved(r) -> None:
    rec = r.records
    assert not np.isnan(rec.finish).any() and rec.tokens_generated == rec.output.sum()


@pytest.mark.parametrize("sp", ["mtp:2:0", f"draft:{DRAFT}:2:0"])
def test_acceptance_zero_is_the_same_schedule_at_a_higher_cost(sp):
    plain, spec = _offline("fixed:256:64"), _offline("fixed:256:64", speculative=sp)
    _conserved(spec)
    assert spec.metrics["tokens_per_decode_step"] == 1.0 and spec.settings["tokens_per_step"] == 1.0
    assert _decode_steps(spec) == _decode_steps(plain)              # one token per step, as without drafts
    assert spec.metrics["throughput_tok_s"] < plain.metrics["throughput_tok_s"]   # verification costs more
    assert spec.metrics["tpot_s"]["mean"] > plain.metrics["tpot_s"]["mean"]


def test_acceptance_one_emits_k_plus_one_tokens_per_step_in_fewer_steps():
    k = 3
    plain, spec = _offline("fixed:128:257"), _offline("fixed:128:257", speculative=f"mtp:{k}:1")
    _conserved(spec)
    assert spec.metrics["tokens_per_decode_step"] == k + 1           # 256 decoded tokens = 64 steps of 4
    assert _decode_steps(plain) == 256 and _decode_steps(spec) == 256 // (k + 1)
    assert spec.metrics["makespan_s"] < plain.metrics["makespan_s"]
    assert spec.metrics["tpot_s"]["mean"] < plain.metrics["tpot_s"]["mean"] / 2


def test_a_sequence_never_emits_past_its_output():
    """99 tokens after the first at 4 per step: 24 full steps and a last one of 3."""
    r = _offline("fixed:128:100", speculative="mtp:3:1")
    _conserved(r)
    assert _decode_steps(r) == 25 and r.metrics["tokens_per_decode_step"] == pytest.approx(99 / 25, rel=1e-12)


def test_fractional_yield_averages_the_expected_tokens_per_step():
    sp = parse("mtp:1:0.875")
    r = _offline("fixed:256:1025", n=4, speculative=sp.text)
    assert _decode_steps(r) == math.ceil(1024 / sp.tokens_per_step)       # 1,024 tokens at 1.875 per step
    assert r.metrics["tokens_per_decode_step"] == pytest.approx(sp.tokens_per_step, rel=2e-3)


@pytest.mark.parametrize("kw", [
    dict(scheduler="chunked"), dict(scheduler="static"), dict(memory_utilization=0.22, block_size=2),
    dict(scheduler="chunked", memory_utilization=0.22), dict(disaggregate=(1, 1)), dict(pp=2, chips=2),
    dict(prefix_caching=True, prefix_groups=4, prefix_len=300)])
def test_every_request_finishes_once_with_its_tokens(kw):
    """The KV cache grows by the accepted tokens (blocks of 2 < K+1 = 4 tokens: several per step); preempted
    sequences recompute what they had; every block comes back (the simulator checks it)."""
    r = serve(M, C, rate=30, requests=300, seed=1, workload="fixed:1500:300", speculative="mtp:3:0.8", **kw)
    _conserved(r)
    if kw.get("memory_utilization"):
        assert r.metrics["preemptions"] > 0


def test_deepseek_v3_mtp1_cuts_tpot_at_batch_1_as_the_estimate_does():
    kw = dict(tp=8, weights="fp8")
    lone = [Request(0, 0.0, 1024, 129)]
    plain = serve("deepseek-v3", "h200-sxm", requests=lone, **kw).metrics["tpot_s"]["mean"]
    mtp = serve("deepseek-v3", "h200-sxm", requests=lone, speculative="mtp:1", **kw).metrics["tpot_s"]["mean"]
    est = estimate("deepseek-v3", "h200-sxm", batch=1, prompt=1024, output=129, speculative="mtp:1", **kw).tpot_s
    assert mtp < plain / 1.4
    assert mtp == pytest.approx(est, rel=0.03)


def test_the_step_timer_reproduces_spec_step():
    """Decode steps interpolate between grid points, as without speculation (tile every seg / (K+1) rows)."""
    sp = parse(f"draft:{DRAFT}:2")
    timer = StepTimer(M, C, weights="fp8", speculative=sp)
    spec = load_model(M)
    for n, ctx in ((1, 700), (37, 1500), (150, 3000), (250, 900)):
        st = spec_step(sp, timer.chip, spec, n, ctx, dtypes_for("fp8", None, None, timer.chip, timer.stack), timer.stack,
                       None, 1, 1, 0.0)
        assert timer.step((0, 0, 0), n, n * ctx)[0] == pytest.approx(st.seconds, rel=0.02)


def test_drafting_memory_comes_out_of_the_kv_cache():
    plain = serve(M, C, offline=True, requests=4).memory["all"]
    draft = serve(M, C, offline=True, requests=4, speculative=f"draft:{DRAFT}:2").memory["all"]
    mtp = serve(M, C, offline=True, requests=4, speculative="mtp:1").memory["all"]
    d, t = load_model(DRAFT), load_model(M)
    assert draft["weights_bytes_per_chip"] - plain["weights_bytes_per_chip"] == pytest.approx(2 * d.n_params, rel=1e-9)
    assert mtp["weights_bytes_per_chip"] - plain["weights_bytes_per_chip"] == pytest.approx(2 * t.n_params / t.layers,
                                                                                           rel=1e-9)
    assert draft["kv_tokens"] < mtp["kv_tokens"] < plain["kv_tokens"]


def test_deterministic_with_a_seed():
    run = lambda seed: serve(M, C, rate=8, requests=150, seed=seed, speculative=f"draft:{DRAFT}:3").metrics
    a, b, other = run(5), run(5), run(6)
    assert a == b and a["ttft_s"] != other["ttft_s"]


@pytest.mark.parametrize("text", ["mtp:0", "mtp", "eagle:2", "draft:no-such-model:2", "mtp:2:1.5"])
def test_a_bad_spec_is_a_one_line_error_naming_the_option(text):
    with pytest.raises(TapeoutError) as e:
        serve(M, C, rate=1, requests=2, speculative=text)
    assert len(str(e.value).splitlines()) == 1 and "speculative" in str(e.value)


def test_cli_option():
    p = subprocess.run([sys.executable, "-c", "from tapeout.cli import main; main(['serve', '-m', 'llama-3.1-8b', "
                        "'--rate', '1', '-n', '2', '--speculative', 'mtp:0'])"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "speculative mtp" in p.stderr
    out = CliRunner().invoke(app, ["serve", "-m", M, "--rate", "2", "-n", "20", "--speculative", "mtp:2:1", "--json"])
    assert out.exit_code == 0, out.output
    r = json.loads(out.output)
    assert r["settings"]["speculative"] == "mtp:2:1" and r["settings"]["tokens_per_step"] == 3.0
    assert 2.5 < r["metrics"]["tokens_per_decode_step"] <= 3.0


ROW = {"chip": C, "chips": 1, "model": M, "weights": "fp8", "kv": "fp8", "tp": 1, "pp": 1, "ep": 1,
       "scenario": "offline", "workload": "fixed:512:64", "requests": 48, "metric": "output_tok_s"}


def test_validate_runs_serving_rows_through_the_speculative_simulator():
    clear_memo()
    plain = predict_row(ROW)["predicted"]
    r = predict_row(dict(ROW, speculative="mtp:1:1"))
    direct = serve(M, C, offline=True, requests=48, workload="fixed:512:64", weights="fp8", kv="fp8", seed=0,
                   scheduler="chunked", max_seqs=r["details"]["max_seqs"], speculative="mtp:1:1")
    assert r["predicted"] == pytest.approx(direct.metrics["throughput_tok_s"], rel=1e-12)
    assert r["predicted"] != plain
    pre = predict_row(dict(ROW, scenario="prefill", prompt=1024, metric="input_tok_s_per_chip", speculative="mtp:1"))
    assert pre["predicted"] is None and "decodes nothing" in pre["reason"]
