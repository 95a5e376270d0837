"""Speculative decoding: the text forms, the acceptance model, the step cost at acceptance 0 and 1,
the draft model's cost and memory, validate rows and the --speculative flag."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.llm.kernels import Batch
from tapeout.llm.spec import load_model
from tapeout.perf.api import estimate, run_batch
from tapeout.perf.speculative import Speculation, data, parse, tokens_per_step, verify_batch
from tapeout.validate import clear_memo, predict_row

TARGET = dict(chip="h100-sxm", batch=4, prompt=512, output=64, weights="fp8")
MODEL, DRAFT = "llama-3.1-8b", "llama-3.2-1b"


@pytest.mark.parametrize("text,kind,k,draft,acc", [
    ("mtp:1", "mtp", 1, None, ()), ("mtp:3:0.8", "mtp", 3, None, (0.8,)),
    ("draft:llama-3.2-1b:4", "draft", 4, "llama-3.2-1b", ()),
    ("draft:llama-3.2-1b:2:0.9,0.6", "draft", 2, "llama-3.2-1b", (0.9, 0.6))])
def test_parse_and_text_round_trip(text, kind, k, draft, acc):
    s = parse(text)
    assert (s.kind, s.k, s.draft, s.acceptance) == (kind, k, draft, acc)
    assert parse(s.text) == s


@pytest.mark.parametrize("text", ["", "mtp", "mtp:0", "mtp:x", "mtp:1:2:3", "mtp:2:1.5", "mtp:2:a", "draft:2",
                                  "draft::2", "eagle:2", "draft:llama-3.2-1b:-1", "mtp:1.5"])
def test_bad_text_is_a_one_line_error(text):
    with pytest.raises(TapeoutError) as e:
        parse(text)
    assert len(str(e.value).splitlines()) == 1 and "speculative" in str(e.value)


def test_tokens_per_step_is_one_plus_the_chained_acceptance():
    assert tokens_per_step((0.5, 0.5)) == pytest.approx(1.75)
    assert tokens_per_step((0.9, 0.5, 0.0, 1.0)) == pytest.approx(1 + 0.9 + 0.45)
    assert parse("mtp:3:0.9,0.5").rates() == (0.9, 0.5, 0.5)       # the last rate repeats
    a = data()["acceptance"]["mtp"]
    assert 0.85 <= a <= 0.90 and parse("mtp:2").tokens_per_step == pytest.approx(1 + a + a * a)
    assert parse("draft:llama-3.2-1b:1").rates() == (data()["acceptance"]["draft"],)


def _draft_s(sp: str, batch: int, ctx: int) -> float:
    s = parse(sp)
    if s.kind == "mtp":
        return s.k * run_batch(MODEL, "h100-sxm", Batch.of("decode", batch, ctx), weights="fp8").seconds / \
            load_model(MODEL).layers
    return s.k * run_batch(s.draft, "h100-sxm", Batch.of("decode", batch, ctx), weights="fp8").seconds


@pytest.mark.parametrize("sp", ["mtp:2:0", "draft:llama-3.2-1b:3:0"])
def test_acceptance_zero_costs_the_verification_step_plus_drafting(sp):
    e = estimate(MODEL, speculative=sp, **TARGET)
    ctx = 512 + 64 // 2
    verify = run_batch(MODEL, "h100-sxm", verify_batch(parse(sp), 4, ctx), weights="fp8").seconds
    assert e.settings["tokens_per_step"] == 1.0
    assert e.settings["verify_s"] == pytest.approx(verify, rel=1e-9)
    assert e.settings["draft_s"] == pytest.approx(_draft_s(sp, 4, ctx), rel=1e-9)
    assert e.tpot_s == pytest.approx(verify + e.settings["draft_s"], rel=1e-9)
    assert e.tpot_s > estimate(MODEL, **TARGET).tpot_s          # verifying more tokens than it yields: a loss


@pytest.mark.parametrize("k", [1, 3])
def test_acceptance_one_yields_k_plus_one_tokens_per_step(k):
    e = estimate(MODEL, speculative=f"mtp:{k}:1", **TARGET)
    assert e.settings["tokens_per_step"] == k + 1
    step = e.settings["verify_s"] + e.settings["draft_s"]
    assert e.tpot_s == pytest.approx(step / (k + 1), rel=1e-12)
    # the MTP drafting is k/layers of a decode step, and a decode step is no longer than the verification
    assert e.settings["draft_s"] <= k / load_model(MODEL).layers * e.settings["verify_s"]
    plain = estimate(MODEL, **TARGET)
    assert plain.tpot_s / e.tpot_s == pytest.approx(k + 1, rel=0.35)     # memory-bound: nearly k+1 times faster
    assert plain.tpot_s / e.tpot_s < k + 1
    assert e.decode_tokens_per_s == pytest.approx(4 / e.tpot_s)


def test_draft_cost_vanishes_the_speedup_approaches_k_plus_one():
    """The draft model's share shrinks from a 1B draft to one MTP layer; the speedup rises towards K+1."""
    plain = estimate(MODEL, **TARGET).tpot_s
    by_draft = plain / estimate(MODEL, speculative=f"draft:{DRAFT}:3:1", **TARGET).tpot_s
    by_mtp = plain / estimate(MODEL, speculative="mtp:3:1", **TARGET).tpot_s
    assert by_draft < by_mtp < 4


def test_draft_model_adds_its_weights_and_cache_to_memory():
    plain = estimate(MODEL, **TARGET).memory
    sp = estimate(MODEL, speculative=f"draft:{DRAFT}:2", **TARGET).memory
    d = load_model(DRAFT)
    assert sp.weights_bytes - plain.weights_bytes == pytest.approx(d.n_params * 1.0, rel=1e-9)   # fp8 weights
    assert sp.kv_cache_bytes > plain.kv_cache_bytes


def test_speculation_checks_its_fields():
    with pytest.raises(TapeoutError, match="name the draft model"):
        Speculation("draft", 2)
    with pytest.raises(TapeoutError, match="within 0..1"):
        Speculation("mtp", 1, acceptance=(-0.1,))


ROW = {"chip": "h100-sxm", "chips": 1, "tp": 1, "pp": 1, "ep": 1, "model": MODEL, "weights": "fp8", "kv": "fp8"}


def test_validate_rows_use_the_speculative_field():
    clear_memo()
    r = predict_row(dict(ROW, scenario="latency", workload="fixed:512:64", metric="tpot_ms", speculative="mtp:2"))
    e = estimate(MODEL, "h100-sxm", batch=1, prompt=512, output=64, weights="fp8", kv="fp8", speculative="mtp:2")
    assert r["predicted"] == pytest.approx(e.tpot_s * 1e3, rel=1e-12)
    plain = predict_row(dict(ROW, scenario="decode", batch_per_chip=8, context=1024, metric="tpot_ms"))
    dec = predict_row(dict(ROW, scenario="decode", batch_per_chip=8, context=1024, metric="tpot_ms", speculative="mtp:2"))
    assert dec["predicted"] < plain["predicted"]                  # the memoization keys on the field
    pre = predict_row(dict(ROW, scenario="prefill", prompt=512, metric="input_tok_s_per_chip", speculative="mtp:1"))
    assert pre["predicted"] is None and "decodes nothing" in pre["reason"]       # serving rows: test_serve_speculative


def test_cli_flag():
    out = CliRunner().invoke(app, ["estimate", "-m", MODEL, "--weights", "fp8", "-b", "2", "--speculative", "mtp:1:1",
                                   "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)["settings"]
    assert s["speculative"] == "mtp:1:1" and s["tokens_per_step"] == 2.0
    text = CliRunner().invoke(app, ["estimate", "-m", MODEL, "--speculative", f"draft:{DRAFT}:2"])
    assert text.exit_code == 0 and "tokens per step" in text.output
    p = subprocess.run([sys.executable, "-c", "from tapeout.cli import main; "
                        "main(['estimate', '-m', 'llama-3.1-8b', '--speculative', 'mtp:0'])"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_decode_pool_counts_the_draft_models_memory():
    clear_memo()
    base = dict(ROW, scenario="decode", batch_per_chip=8, context=1024, metric="tpot_ms", weights="bf16", kv="bf16")
    assert "warning" not in predict_row(base)
    r = predict_row(dict(base, speculative="draft:llama-3.1-70b:2"))     # 141 GB of bf16 draft weights on top
    assert r["predicted"] and "does not fit" in r["warning"]
