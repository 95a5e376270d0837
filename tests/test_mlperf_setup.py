"""The MLPerf Llama-2-70B rows (benchmarks/validation.py, docs/validation.md): the H200's decode
attention streams at the H200's bandwidth, and the rows run the setups NVIDIA published."""

import pytest

from bench_helpers import load_benchmark
from tapeout.chip import load_chip
from tapeout.llm.kernels import Batch
from tapeout.perf.api import run_batch
from tapeout.serve.data import table



def _attention(chip: str, batch: int, context: int) -> tuple[float, set]:
    """Decode attention seconds of one step (fp8 KV, TP1, max clock) and the bounds of its kernels."""
    st = run_batch("llama-2-70b", chip, Batch(decode=(context,) * batch), weights="fp8", kv="fp8",
                   clock_hz=load_chip(chip).max_clock_hz)
    att = [kt for kt in st.kernels if kt.kernel.kind == "attention"]
    return sum(kt.seconds for kt in att), {kt.bound for kt in att}


@pytest.mark.parametrize("batch,context", [(64, 16384), (256, 4096)])
def test_bandwidth_bound_decode_attention_scales_with_the_chip_files_bandwidth(batch, context):
    h100, h200 = load_chip("h100-sxm"), load_chip("h200-sxm")
    t100, b100 = _attention("h100-sxm", batch, context)
    t200, b200 = _attention("h200-sxm", batch, context)
    assert b100 == b200 == {"memory"}
    bw_ratio = h200.dram.bandwidth_bytes_per_s / h100.dram.bandwidth_bytes_per_s
    # same die, same kernel: only the DRAM differs, so the time ratio is the bandwidth ratio, less
    # the per-wave pipeline fills both GPUs pay alike
    assert 0.95 * bw_ratio < t100 / t200 <= bw_ratio * 1.001


def test_the_in_flight_bytes_do_not_cap_the_h200_below_its_bandwidth():
    """Little's law per SM (decode_inflight_bytes / dram_latency_s x 132 SMs) exceeds 4.8 TB/s, so a
    long-context decode reaches most of the H200's bandwidth rather than the H100's."""
    h200 = load_chip("h200-sxm")
    batch, context = 64, 16384
    t, _ = _attention("h200-sxm", batch, context)
    kv_bytes = batch * context * 80 * 2 * 8 * 128  # layers x (K, V) x KV heads x head dim x 1 byte
    assert kv_bytes / t > 0.8 * h200.dram.bandwidth_bytes_per_s > load_chip("h100-sxm").dram.bandwidth_bytes_per_s


def _validation():
    return load_benchmark("validation")


@pytest.mark.parametrize("gpu,tp,seqs", [("h100", 2, 896), ("h200", 1, 806)])
def test_mlperf_rows_run_nvidias_published_setup(gpu, tp, seqs):
    """NVIDIA's v4.1 configs: H100 TP2 x4 and H200 TP1 x8, gpu_batch_size, and the engine's
    max_num_tokens of 4096 tokens per step (decode tokens included)."""
    kw = _validation().mlperf_kw(gpu, "offline")
    assert (kw["tp"], kw["max_seqs"], kw["chips"], kw["max_batched_tokens"]) == (tp, seqs, 8, 4096)
    assert kw["engine"] == "trtllm" and kw["weights"] == kw["kv"] == "fp8"


def test_mlperf_h200_power_limit_is_the_chip_files():
    v = table("validation")["mlperf"]
    assert v["h200"]["tdp_w"] == load_chip("h200-sxm").chip.tdp_w
    # the Offline query sizes are target_qps x 2400 s x 1.1 (NVIDIA's logs: 76 and 104 qps)
    assert v["h100"]["offline_samples"] == round(76 * 2400 * 1.1)
    assert v["h200"]["offline_samples"] == round(104 * 2400 * 1.1)
