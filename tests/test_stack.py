"""Software stacks: files, loader, and what each part of a stack does to a step."""
import dataclasses

import pytest
from typer.testing import CliRunner

from tapeout.chip import load_chip, preset_names
from tapeout.errors import TapeoutError
from tapeout.llm.kernels import Batch, build_step
from tapeout.llm.spec import load_model
from tapeout.perf.api import dtypes_for, estimate, run_batch
from tapeout.perf.params import load_params
from tapeout.stack import KERNELS, load_stack, lower, stack_for, stack_names


def test_every_preset_names_a_loadable_stack():
    for n in preset_names():
        s = stack_for(n)
        assert s.name == load_chip(n).chip.stack
    for n in stack_names():
        s = load_stack(n)
        assert set(s.kernels) <= set(KERNELS)
        for k, q in s.quantities.items():
            assert s.cite(k), (n, k)


def test_unknown_stack_is_one_clear_error():
    with pytest.raises(TapeoutError, match="no such software stack.*known: .*ideal"):
        load_stack("nvidia-trt")


def test_nvidia_stack_is_the_fitted_library_so_ideal_equals_deployed_on_h100():
    a = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt=512, output=64)
    b = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt=512, output=64, stack="ideal")
    assert a.settings["stack"] == "nvidia-trtllm" and b.settings["stack"] == "ideal"
    assert a.tpot_s == pytest.approx(b.tpot_s) and a.ttft_s == pytest.approx(b.ttft_s)


def _with(stack: str, **overrides):
    s = load_stack(stack)
    return dataclasses.replace(s, name=f"{stack}+test", overrides={**s.overrides, **overrides})


def test_step_overhead_adds_once_per_step():
    batch = Batch.of("decode", 16, 1024)
    base = run_batch("llama-3.1-8b", "h100-sxm", batch, stack="ideal", clock_hz=1.5e9)
    slow = run_batch("llama-3.1-8b", "h100-sxm", batch, stack=_with("ideal", step_overhead_s=2e-3), clock_hz=1.5e9)
    assert slow.seconds - base.seconds == pytest.approx(2e-3, rel=1e-9)
    assert slow.by_kind()["host"] == pytest.approx(2e-3)


def test_matrix_efficiency_slows_compute_bound_prefill_in_proportion():
    batch = Batch.of("prefill", 4, 4096)
    kw = dict(clock_hz=1.5e9)
    base = run_batch("llama-3.1-8b", "h100-sxm", batch, stack="ideal", **kw).by_kind()["gemm"]
    fitted = load_params("hopper").mma_efficiency
    half = run_batch("llama-3.1-8b", "h100-sxm", batch, stack=_with("ideal", mma_efficiency=fitted / 2),
                     **kw).by_kind()["gemm"]
    assert 1.6 < half / base < 2.05   # compute-bound GEMMs at half the fitted tile efficiency


def test_collective_efficiency_and_latency_scale_comm_kernels():
    batch = Batch.of("decode", 32, 1024)
    base = run_batch("llama-3.1-70b", "h100-sxm", batch, tp=8, stack="ideal", clock_hz=1.5e9).by_kind()["comm"]
    slow = run_batch("llama-3.1-70b", "h100-sxm", batch, tp=8, clock_hz=1.5e9,
                     stack=_with("ideal", comm_efficiency=0.5, comm_latency_s=0.0)).by_kind()["comm"]
    assert slow > 1.5 * base


def test_without_flash_attention_the_scores_go_through_memory():
    ks = build_step(load_model("llama-3.1-8b"), Batch.of("prefill", 1, 2048))
    flash = [k for k in ks if k.kind == "attention"]
    plain = [k for k in lower(_no("flash_attention"), ks) if k.kind == "attention"]
    extra = (plain[0].bytes_read + plain[0].bytes_written) - (flash[0].bytes_read + flash[0].bytes_written)
    assert extra == pytest.approx(8 * 32 * 2048 * 2049 / 2)   # 8 bytes per causal (query, key) pair per head
    assert plain[0].flops == flash[0].flops


def _no(kernel):
    s = load_stack("ideal")
    return dataclasses.replace(s, name=f"no-{kernel}", kernels=s.kernels - {kernel})


def test_without_grouped_moe_each_expert_is_its_own_launch_with_the_same_work():
    ks = build_step(load_model("mixtral-8x7b"), Batch.of("decode", 64, 512))
    grouped = [k for k in ks if k.name.startswith("expert") and k.kind == "gemm"]
    ungrouped = [k for k in lower(_no("grouped_moe"), ks) if k.name.startswith("expert") and k.kind == "gemm"]
    for g, u in zip(grouped, ungrouped):
        assert u.shape[3] == 1 and u.count == g.count * round(g.shape[3])
        assert u.flops * u.count == pytest.approx(g.flops * g.count)
    t_g = run_batch("mixtral-8x7b", "h100-sxm", Batch.of("decode", 64, 512), stack="ideal", clock_hz=1.5e9)
    t_u = run_batch("mixtral-8x7b", "h100-sxm", Batch.of("decode", 64, 512), stack=_no("grouped_moe"), clock_hz=1.5e9)
    assert t_u.by_kind()["gemm"] > t_g.by_kind()["gemm"]


def test_formats_the_stack_lacks_run_weight_only():
    c = load_chip("h100-sxm")
    assert dtypes_for("int8", None, None, c, load_stack("ideal")).mma == "int8"
    dt = dtypes_for("int8", None, None, c, load_stack("neuron"))   # Neuron: int8 weights, bf16 matmul
    assert dt.weights == "int8" and dt.mma == "bf16"
    assert dtypes_for("fp8", None, None, c, load_stack("cann")).kv == "bf16"


def test_cli_stacks_list_and_show():
    from tapeout.cli import app

    r = CliRunner().invoke(app, ["stacks", "--json"])
    assert r.exit_code == 0 and '"neuron"' in r.output
    r = CliRunner().invoke(app, ["stacks", "show", "nvidia-trtllm"])
    assert r.exit_code == 0 and "TensorRT-LLM" in r.output


def test_cli_compare_shows_deployed_and_ideal():
    import json

    from tapeout.cli import app

    r = CliRunner().invoke(app, ["compare", "-m", "llama-3.1-8b", "--chips", "h100-sxm,tapeout-n7", "--json",
                                 "-b", "4", "-p", "256", "-n", "16", "--weights", "fp8"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [(x["chip"], x["settings"]["stack"]) for x in d["results"]] == [
        ("h100-sxm", "nvidia-trtllm"), ("h100-sxm", "ideal"), ("tapeout-n7", "cann"), ("tapeout-n7", "ideal")]
    assert d["moat"]["h100-sxm"]["moat"] == pytest.approx(1.0)
    assert d["moat"]["tapeout-n7"]["moat"] >= 1.0


def test_a_stack_that_shards_over_cores_replicates_kv_heads_per_core():
    spec = load_model("llama-3.1-8b")   # 32 heads, 8 KV heads
    batch = Batch.of("decode", 8, 4096)
    per_chip = [k for k in build_step(spec, batch, tp=12) if k.kind == "attention"][0]
    per_core = [k for k in build_step(spec, batch, tp=12, rank_cores=2) if k.kind == "attention"][0]
    assert per_chip.shape[3:5] == (3, 1)      # ceil(32/12) heads, ceil(8/12) KV heads per chip
    assert per_core.shape[3:5] == (4, 2)      # 2 cores x ceil(32/24), 2 x ceil(8/24)
    assert per_core.bytes_read > 1.9 * per_chip.bytes_read - 1e6
    assert load_stack("neuron").rank_cores(load_chip("inferentia2")) == 2
    assert load_stack("ideal").rank_cores(load_chip("inferentia2")) == 1


def test_all_to_all_pays_one_message_per_peer_its_tokens_reach():
    """MoE dispatch/combine send one message to each distinct peer: few at a small batch (each
    token-expert pair lands on a random one of ep chips), all ep - 1 once the batch is large, so the
    stack's per-message cost adds a concave, saturating term per all-to-all (and none elsewhere)."""
    from tapeout.llm.kernels import _peers

    assert _peers(0, 160) == 0 and _peers(10, 1) == 0
    assert _peers(64, 160) == pytest.approx(159 * (1 - (159 / 160) ** 64))
    assert 50 < _peers(64, 160) < 60 and _peers(8 * 96, 160) > 157 and _peers(1e6, 160) == pytest.approx(159)
    cost = 1e-6
    for b in (8, 96):
        batch = Batch.of("decode", b, 2048)
        kw = dict(weights="int8", kv="int8", ep=16, clock_hz=1.5e9)
        base = run_batch("deepseek-v3", "ascend-910c", batch, stack="ideal", **kw)
        slow = run_batch("deepseek-v3", "ascend-910c", batch, stack=_with("ideal", comm_message_s=cost), **kw)
        a2a = [k for k in build_step(load_model("deepseek-v3"), batch, dtypes_for("int8", "int8", None, load_chip("ascend-910c")),
                                     ep=16) if k.kind == "comm"]
        assert a2a and all(k.shape[2] == "alltoall" for k in a2a)
        expect = sum(k.count * k.shape[3] for k in a2a) * cost
        assert slow.by_kind()["comm"] - base.by_kind()["comm"] == pytest.approx(expect, rel=1e-6)
        assert expect == pytest.approx(2 * 58 * _peers(b * 8, 16) * cost, rel=1e-6)
    dense = Batch.of("decode", 16, 1024)      # tensor-parallel all-reduces send no per-peer messages
    assert run_batch("llama-3.1-8b", "h100-sxm", dense, tp=8, stack=_with("ideal", comm_message_s=cost), clock_hz=1.5e9).seconds == \
        pytest.approx(run_batch("llama-3.1-8b", "h100-sxm", dense, tp=8, stack="ideal", clock_hz=1.5e9).seconds)


def test_dense_moe_runs_every_token_through_every_expert():
    spec, batch = load_model("mixtral-8x7b"), Batch.of("decode", 64, 512)
    sparse = {k.name: k for k in build_step(spec, batch) if k.name.startswith(("expert", "moe_combine"))}
    dense = {k.name: k for k in build_step(spec, batch, dense_moe=True) if k.name.startswith(("expert", "moe_combine"))}
    E, k_top, T = spec.moe.experts, spec.moe.top_k, 64
    for name in ("expert_gate_up", "expert_down"):
        s, d = sparse[name], dense[name]
        assert d.flops == pytest.approx(s.flops * E / k_top)                  # 8 experts per token, not 2
        assert d.shape[0] == T and d.shape[3] == E                           # every expert runs all 64 tokens
        assert d.weight_bytes == pytest.approx(E * s.weight_bytes / s.shape[3])  # all experts' weights read
    # the combine still writes one output per token
    c_s, c_d = sparse["moe_combine"], dense["moe_combine"]
    assert c_d.bytes_written == pytest.approx(c_s.bytes_written)
    # the stack flag reaches the step: gaudi-synapse-1.18 is gaudi-synapse with dense MoE
    old, new = load_stack("gaudi-synapse-1.18"), load_stack("gaudi-synapse")
    assert old.moe == "dense" and new.moe == "sparse" and old.overrides == new.overrides
    # batch 1 reads all 8 experts' weights instead of 2; a 4k-token prefill does 4x the expert math
    for bt in (Batch.of("decode", 1, 512), Batch.of("prefill", 1, 4096)):
        t_old = run_batch("mixtral-8x7b", "gaudi2", bt, stack=old, clock_hz=1.6e9, weights="fp8")
        t_new = run_batch("mixtral-8x7b", "gaudi2", bt, stack=new, clock_hz=1.6e9, weights="fp8")
        assert t_old.seconds > 2 * t_new.seconds
    dense_model = run_batch("llama-2-7b", "gaudi2", batch, stack=old, clock_hz=1.6e9, weights="fp8")
    assert dense_model.seconds == pytest.approx(run_batch("llama-2-7b", "gaudi2", batch, stack=new, clock_hz=1.6e9,
                                                          weights="fp8").seconds)


def test_bad_moe_mode_is_one_clear_error():
    from tapeout.perf.stack import _check_meta
    from tapeout.sourced import DataFileError
    with pytest.raises(DataFileError, match="meta.moe: must be one of sparse, dense"):
        _check_meta("x.toml", {"name": "x", "moe": "routed"})


def test_tensor_parallel_moe_all_reduces_its_partial_outputs():
    """TP shards every expert's intermediate dim: the routed experts' output is a partial sum per chip."""
    batch = Batch.of("decode", 64, 512)
    mix = load_model("mixtral-8x7b")
    L = mix.layers
    ar = lambda ks: [k for k in ks if k.name == "allreduce_moe"]  # noqa: E731
    assert ar(build_step(mix, batch, tp=1)) == []
    (one,) = ar(build_step(mix, batch, tp=2))
    assert one.count == L and one.shape[:3] == (64 * mix.hidden * 2.0, 2, "allreduce")
    (dense,) = ar(build_step(mix, batch, tp=2, dense_moe=True))                 # AutoTP: one per expert
    assert dense.count == L * mix.moe.experts
    # with shared experts, the shared MLP's all-reduce carries the routed experts' sum as well
    ds = load_model("deepseek-v3")
    ks = build_step(ds, batch, tp=2)
    assert ar(ks) == [] and any(k.name == "allreduce_mlp" for k in ks)
