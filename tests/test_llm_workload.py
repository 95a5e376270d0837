"""LLM workloads: shipped configs, the kernel sequence's exact FLOPs and bytes, memory fit."""
import json
from importlib import resources

import pytest

from tapeout.errors import TapeoutError
from tapeout.llm.kernels import Batch, Dtypes, build_step
from tapeout.llm.spec import ModelConfigError, load_model, model_names

REQUIRED = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b",
            "qwen2.5-72b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "mixtral-8x7b",
            "llama-2-13b", "mistral-7b", "gemma-2b"]

# published parameter counts (billions) of the shipped configs
PUBLISHED = {"llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 405.9, "qwen2.5-7b": 7.62,
             "qwen2.5-72b": 72.7, "qwen3-30b-a3b": 30.5, "qwen3-235b-a22b": 235.1, "deepseek-v3": 671.0,
             "mixtral-8x7b": 46.7, "llama-2-13b": 13.0, "mistral-7b": 7.24, "gemma-2b": 2.51}


def test_required_models_ship():
    assert set(REQUIRED) <= set(model_names())


@pytest.mark.parametrize("name,billions", PUBLISHED.items())
def test_parameter_counts_match_published(name, billions):
    assert load_model(name).n_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_gemma_shapes_activation_and_default_tied_embeddings(tmp_path):
    """Gemma: MQA (1 KV head) with head_dim 256 != hidden / heads, GeGLU, and embeddings tied by its config
    class's default (the config.json has no tie_word_embeddings key)."""
    g = load_model("gemma-2b")
    assert (g.heads, g.kv_heads, g.head_dim, g.q_dim, g.vocab) == (8, 1, 256, 2048, 256000)
    assert g.tied_embeddings and g.activation == "gelu_pytorch_tanh"
    assert g.kv_bytes_per_token(2.0) == 18 * 2 * 256 * 2.0
    cfg = json.loads((resources.files("tapeout.models") / "gemma-2b.json").read_text())
    assert "tie_word_embeddings" not in cfg
    untied = {**cfg, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(untied))
    assert load_model(tmp_path).n_params - g.n_params == 256000 * 2048
    assert not load_model("llama-2-13b").tied_embeddings and load_model("mistral-7b").activation == "silu"


def test_active_parameters_of_moe():
    assert load_model("qwen3-30b-a3b").n_active_params / 1e9 == pytest.approx(3.3, rel=0.05)
    assert load_model("deepseek-v3").n_active_params / 1e9 == pytest.approx(37.5, rel=0.03)


def _gemm_flops(kernels):
    return sum(k.flops * k.count for k in kernels if k.kind == "gemm")


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "qwen3-8b", "llama-3.2-1b"])
@pytest.mark.parametrize("impl", ["fused", "pytorch-cudagraph"])
def test_dense_gemm_flops_are_two_per_weight_per_token(name, impl):
    m = load_model(name)
    T = 7
    ks = build_step(m, Batch.of("prefill", 1, T), impl=impl)
    bias = (m.q_dim + 2 * m.kv_dim) * m.layers if m.qkv_bias else 0
    body = m.n_params - m.vocab * m.hidden * (1 if m.tied_embeddings else 2) - bias
    # every layer weight once per token; lm_head once per sequence (last position only)
    assert _gemm_flops(ks) == pytest.approx(2 * body * T + 2 * m.vocab * m.hidden, rel=1e-9)


def test_weights_read_once_per_step_regardless_of_batch():
    m = load_model("llama-3.1-8b")
    w = lambda b: sum(k.weight_bytes * k.count for k in build_step(m, Batch.of("decode", b, 100)))
    assert w(1) == w(64)
    assert w(1) == pytest.approx((m.n_params - m.vocab * m.hidden) * 2, rel=1e-6)


def test_attention_flops_causal_prefill_exact():
    m = load_model("llama-3.1-8b")
    S = 100
    att = [k for k in build_step(m, Batch.of("prefill", 1, S)) if k.kind == "attention"]
    pairs = S * (S + 1) / 2
    assert sum(k.flops * k.count for k in att) == pytest.approx(m.layers * 2 * m.heads * pairs * 2 * m.head_dim)


def test_decode_reads_the_whole_kv_cache():
    m = load_model("qwen2.5-7b")
    ctx = [100, 2000, 30]
    att = [k for k in build_step(m, Batch(decode=tuple(ctx))) if k.kind == "attention"]
    kv = sum(c + 1 for c in ctx) * m.kv_bytes_per_token(2.0)
    assert sum(k.bytes_read * k.count for k in att) == pytest.approx(kv, rel=0.01)


def test_kv_cache_dtype_halves_attention_bytes():
    m = load_model("llama-3.1-8b")
    rd = lambda kv: sum(k.bytes_read * k.count for k in build_step(m, Batch.of("decode", 8, 4096), Dtypes(kv=kv))
                        if k.kind == "attention")
    assert rd("fp8") == pytest.approx(rd("bf16") / 2, rel=0.01)


def test_int4_weights_include_group_scales():
    m = load_model("llama-3.1-8b")
    w = lambda d: sum(k.weight_bytes * k.count for k in build_step(m, Batch.of("decode", 1, 10), Dtypes(weights=d)))
    assert w("int4") == pytest.approx(w("bf16") * (0.5 + 2 / 128) / 2, rel=1e-6)


def test_mla_caches_latent_only():
    m = load_model("deepseek-v3")
    assert m.kv_bytes_per_token(1.0) == m.layers * (512 + 64)


def test_moe_uniform_routing_touches_expected_experts():
    m = load_model("qwen3-30b-a3b")
    one = [k for k in build_step(m, Batch.of("decode", 1, 10)) if k.name == "expert_gate_up"][0]
    many = [k for k in build_step(m, Batch.of("decode", 512, 10)) if k.name == "expert_gate_up"][0]
    assert one.shape[3] == pytest.approx(8, rel=1e-6)  # one token: top-8 experts
    assert many.shape[3] == pytest.approx(128, rel=0.01)  # 512 tokens x 8: nearly every expert


def test_tensor_parallel_shards_weights_and_adds_allreduce():
    m = load_model("llama-3.1-70b")
    one, eight = (build_step(m, Batch.of("decode", 4, 100), tp=tp) for tp in (1, 8))
    w = lambda ks: sum(k.weight_bytes * k.count for k in ks)
    assert w(eight) == pytest.approx(w(one) / 8, rel=0.01)
    assert sum(k.count for k in eight if k.kind == "comm" and k.shape[2] == "allreduce") == 2 * m.layers


def test_unfused_has_more_kernels_than_fused():
    m = load_model("llama-3.1-8b")
    n = lambda impl: sum(k.count for k in build_step(m, Batch.of("decode", 1, 10), impl=impl))
    assert n("pytorch-cudagraph") > 3 * n("fused")


def test_user_config_path_and_folder(tmp_path):
    cfg = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 512, "vocab_size": 1000, "model_type": "llama"}
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load_model(folder).name == "my-model"
    assert load_model(folder / "config.json").layers == 2


def test_bad_configs_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelConfigError, match="not a valid config.json"):
        load_model(bad)
    bad.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ModelConfigError, match="missing 'num_attention_heads'"):
        load_model(bad)
    with pytest.raises(ModelConfigError, match="did you mean 'llama-3.1-8b'"):
        load_model("llama-3.1-8")


def test_bad_dtype_and_empty_batch():
    with pytest.raises(TapeoutError, match="unsupported dtype"):
        Dtypes(weights="fp6")
    with pytest.raises(TapeoutError, match="empty batch"):
        build_step(load_model("llama-3.1-8b"), Batch())


def test_moe_skew_concentrates_load():
    from tapeout.llm.kernels import _expert_load

    uniform = _expert_load(128, 8, 4, 1, 0.0)
    skewed = _expert_load(128, 8, 4, 1, 1.2)
    assert skewed[0] == pytest.approx(uniform[0])  # every token still picks top-k experts
    assert skewed[1] < uniform[1]  # popular experts are shared: fewer distinct experts touched
    # under expert parallelism the busiest chip gets more than its share
    assert _expert_load(256, 8, 64, 8, 1.0)[0] > _expert_load(256, 8, 64, 8, 0.0)[0]
    assert _expert_load(256, 8, 64, 8, 0.0)[0] == 64 * 8
    m = load_model("qwen3-30b-a3b")
    w = lambda s: sum(k.weight_bytes * k.count for k in build_step(m, Batch.of("decode", 4, 100), moe_skew=s))
    assert w(1.5) < w(0.0)
    with pytest.raises(TapeoutError, match="moe_skew"):
        build_step(m, Batch.of("decode", 1, 10), moe_skew=-1)
