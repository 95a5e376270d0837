"""Hugging Face causal LMs built from configs (random weights, no download) through the
frontend and the reference interpreter, against transformers in fp32; load() dispatch."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapeout.errors import TapeoutError  # noqa: E402
from tapeout.frontends import load  # noqa: E402
from tapeout.frontends.hf import build_hf_model, example_ids  # noqa: E402
from tapeout.ir import check, evaluate  # noqa: E402

TINY = {
    "llama": {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 160,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "qwen2": {"model_type": "qwen2", "vocab_size": 256, "hidden_size": 128, "intermediate_size": 256,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1},
    "gpt2": {"model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0},
}


def reference_logits(cfg, ids, dtype="f32"):
    with torch.no_grad():
        return build_hf_model(cfg, dtype=dtype)(ids).logits.float().numpy()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_tiny_causal_lm_matches_transformers_fp32(arch):
    cfg = TINY[arch]
    ids = example_ids(cfg, batch=2, seq=12)
    prog = load(cfg, ids)
    check(prog)
    ours = evaluate(prog, ids.numpy())[0]
    ref = reference_logits(cfg, ids)
    assert ours.shape == ref.shape == (2, 12, 256)
    err = np.abs(ours - ref).max()
    assert err <= 1e-5 * max(1.0, np.abs(ref).max()), err
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
    counts = prog.op_counts()
    assert counts["attention"] == 2  # SDPA kept whole, one per layer
    if arch in ("llama", "qwen2"):  # GQA: k/v reach attention with their own head count
        kv_heads = {e.inputs[1].shape[1] for e in prog.eqns if e.op == "attention"}
        assert kv_heads == {cfg["num_key_value_heads"]}
        assert all(e.params["causal"] and len(e.inputs) == 3 for e in prog.eqns if e.op == "attention")


def test_bf16_llama_stays_close_to_fp32():
    cfg = TINY["llama"]
    ids = example_ids(cfg, seq=12)
    prog = load(cfg, ids, dtype="bf16")
    assert {v.dtype for v in prog.constvars if v.dtype != "i64"} == {"bf16"}
    ours = evaluate(prog, ids.numpy())[0].astype(np.float32)
    torch_bf16 = reference_logits(cfg, ids, dtype="bf16")
    fp32 = reference_logits(cfg, ids)
    scale = np.abs(fp32).max()
    err_ours, err_torch = np.abs(ours - fp32).max() / scale, np.abs(torch_bf16 - fp32).max() / scale
    assert err_ours < 0.05 and err_ours <= 2 * err_torch + 0.01, (err_ours, err_torch)


def test_load_dispatches_json_and_rejects_bad_input(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY["llama"]))
    ids = example_ids(TINY["llama"], seq=4)
    prog = load(p, ids)
    assert prog.inputs[0].shape == (1, 4) and prog.outputs[0].shape == (1, 4, 256)
    with pytest.raises(TapeoutError, match="model_type 'bert' not supported"):
        load({"model_type": "bert"})
    with pytest.raises(TapeoutError, match="needs example_inputs"):
        load(torch.nn.Linear(2, 2))
    with pytest.raises(TapeoutError, match="unknown model file type"):
        load(tmp_path / "model.bin")
    with pytest.raises(TapeoutError, match="cannot read HF config"):
        load(tmp_path / "missing.json")


def test_llama_512_hidden_128_tokens_frontend_and_interpreter_run():
    """The npu_speed benchmark's model imports and runs (its speed is benchmarks/npu_speed.py's to
    print: tests check correctness, not wall-clock time on a shared machine)."""
    cfg = {"model_type": "llama", "vocab_size": 1024, "hidden_size": 512, "intermediate_size": 1408,
           "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4}
    ids = example_ids(cfg, seq=128)
    prog = load(cfg, ids)
    out = evaluate(prog, ids.numpy())[0]
    assert out.shape == (1, 128, 1024) and np.isfinite(out).all()
