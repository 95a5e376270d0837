"""Engine settings from the one sourced table (data/serve/engines.toml) and the two memory plans."""
import pytest

from tapeout import load_chip
from tapeout.dse.objective import Workload
from tapeout.errors import TapeoutError
from tapeout.llm.spec import load_model
from tapeout.perf.api import dtypes_for
from tapeout.serve.api import serve
from tapeout.serve.data import table
from tapeout.serve.engine import Limits
from tapeout.serve.engines import default_slo, engine_names, engine_settings
from tapeout.serve.kvcache import plan_memory
from tapeout.serve.steptime import Parallel


def test_every_default_comes_from_the_table():
    t = table("engines")
    e = engine_settings()
    assert e.name == t["default"]["engine"] and set(engine_names()) >= {"vllm", "trtllm"}
    assert Limits() == Limits(e.max_seqs, e.max_batched_tokens)
    wl = Workload("llama-3.1-8b")
    assert (wl.slo_ttft_s, wl.slo_tpot_s) == default_slo()
    assert (wl.max_seqs, wl.max_batched_tokens) == (e.max_seqs, e.max_batched_tokens)
    r = serve("llama-3.1-8b", "h100-sxm", requests=8, offline=True)
    s = r.settings
    assert (s["max_seqs"], s["max_batched_tokens"], s["block_size"], s["memory_fraction"]) == (
        e.max_seqs, e.max_batched_tokens, e.block_size, e.memory_fraction)
    assert (r.metrics["slo"]["ttft_s"], r.metrics["slo"]["tpot_s"]) == default_slo()


def test_memory_plans_total_vs_free():
    """vLLM: a fraction of all memory holds weights + activations + KV; TensorRT-LLM: a fraction of what
    weights and activations leave goes to KV."""
    spec, chip = load_model("llama-2-70b"), load_chip("h200-sxm")
    dt = dtypes_for("fp8", "fp8", None, chip)
    v = plan_memory(spec, chip, dt, Parallel(), engine="vllm")
    t = plan_memory(spec, chip, dt, Parallel(), engine="trtllm")
    assert v.weights_bytes == t.weights_bytes
    kv_v = chip.memory_bytes * 0.9 - v.weights_bytes - v.activation_bytes
    kv_t = (chip.memory_bytes - t.weights_bytes - t.activation_bytes) * 0.9
    assert v.blocks == int(kv_v // (v.kv_bytes_per_token * v.block_size))
    assert t.blocks == int(kv_t // (t.kv_bytes_per_token * t.block_size))
    assert t.kv_tokens > v.kv_tokens          # 70 GB of fp8 weights: 10 % of the rest < 10 % of all


def test_unknown_engine_is_a_user_error():
    with pytest.raises(TapeoutError, match="engines.toml"):
        serve("llama-3.1-8b", "h100-sxm", requests=4, offline=True, engine="sglang-nightly")
