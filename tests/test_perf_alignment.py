"""Mechanisms that carry the model to shapes and GPUs it was not fitted on: the stride alignment
fast GEMM kernels need, and DRAM streaming paced by the bytes each core keeps in flight."""
import dataclasses
import json
from importlib import resources

import pytest

from tapeout.chip import load_chip
from tapeout.perf import kernels as K
from tapeout.perf.params import load_params
from tapeout.perf.predict import attention_kernel, gemm_kernel, memory_kernel
from tapeout.perf.step import run_kernels


def _gemm_s(chip, M, N, Kd, dtype="bfloat16", clock_hz=None, params=None):
    k = gemm_kernel({"M": M, "N": N, "K": Kd, "dtype": dtype})
    return run_kernels(load_chip(chip), [k], queued=True, clock_hz=clock_hz, params=params).seconds


@pytest.mark.parametrize("M,N,Kd,dtype,ok", [
    (4096, 4096, 4096, "bfloat16", True),
    (777, 3000, 2000, "bfloat16", True),      # M is a row count, not a stride: free
    (4095, 4095, 4095, "bfloat16", False),
    (4097, 4097, 4097, "bfloat16", False),
    (2000, 5000, 700, "bfloat16", False),     # K = 700: 1400-byte rows, 8-byte aligned only
    (2000, 5000, 704, "bfloat16", True),
    (4096, 4100, 4096, "bfloat16", False),    # C's rows (N) too
    (64, 4096, 8, "fp8_e4m3", False),         # 8 fp8 elements = 8 bytes
    (64, 4096, 16, "fp8_e4m3", True),
])
def test_tma_alignment_rule_follows_row_strides_in_bytes(M, N, Kd, dtype, ok):
    p = load_params("hopper")
    k = gemm_kernel({"M": M, "N": N, "K": Kd, "dtype": dtype})
    in_b = (k.bytes_read - k.weight_bytes) / (M * Kd)
    assert K.tma_aligned(p, N, Kd, in_b, k.weight_bytes / (N * Kd), k.bytes_written / (M * N)) is ok


def test_unaligned_compute_bound_gemm_is_several_times_slower_per_flop_on_hopper():
    aligned, odd = _gemm_s("h100-sxm", 4096, 4096, 4096), _gemm_s("h100-sxm", 4095, 4095, 4095)
    assert 2.5 < odd / aligned < 6  # the fallback kernel, partly offset by a higher (less power) clock
    # a weight-streaming GEMV is bound by DRAM either way: alignment barely matters
    assert _gemm_s("h100-sxm", 1, 4095, 4095) / _gemm_s("h100-sxm", 1, 4096, 4096) < 1.2


def test_unaligned_fallback_reproduces_the_published_h100_pair():
    # one shape at 1200 MHz: K=588 on an align2 Ampere-style kernel, K=592 on the sm90 kernel
    pub = json.loads((resources.files("tapeout.data") / "calibration" / "published-h100-gemm.json").read_text())
    odd, padded = pub["gemm"]
    f = pub["meta"]["clock_hz"]
    assert _gemm_s("h100-sxm", odd["M"], odd["N"], odd["K"], clock_hz=f) * 1e3 == pytest.approx(odd["ms"], rel=0.05)
    assert _gemm_s("h100-sxm", padded["M"], padded["N"], padded["K"], clock_hz=f) * 1e3 == pytest.approx(padded["ms"], rel=0.2)


def test_alignment_costs_less_where_the_aligned_kernels_are_ampere_style_too():
    def ratio(chip):
        return _gemm_s(chip, 4095, 4095, 4095) / _gemm_s(chip, 4096, 4096, 4096)
    assert ratio("l40s") < 1.6 < 2.5 < ratio("h100-sxm")


def test_stream_in_full_waves_is_bandwidth_bound_and_the_tail_is_inflight_bound():
    h, p = load_chip("h100-sxm"), load_params("hopper")
    per_slot = p.decode_inflight_bytes / p.dram_latency_s
    bw = h.cores.count * per_slot / 2  # the memory, not the cores, limits a full wave
    t_full = K.core_stream_s(p, h.cores.count, 1e6, h.cores.count, p.decode_inflight_bytes, bw)
    assert t_full == pytest.approx(h.cores.count * 1e6 / bw)
    # one unit alone: its own in-flight bytes per round trip, however much bandwidth there is
    assert K.core_stream_s(p, 1, 1e6, h.cores.count, p.decode_inflight_bytes, 1e18) == pytest.approx(1e6 / per_slot)
    # doubling the bandwidth helps full waves until the in-flight bytes bind
    t2 = K.core_stream_s(p, h.cores.count, 1e6, h.cores.count, p.decode_inflight_bytes, 4 * bw)
    assert t2 == pytest.approx(h.cores.count * 1e6 / (h.cores.count * per_slot))


def test_decode_attention_speeds_up_with_bandwidth_per_core_on_h200():
    e = {"B": 32, "S_q": 1, "S_kv": 16384, "heads_q": 32, "heads_kv": 8, "head_dim": 128, "causal": False}
    t = {c: run_kernels(load_chip(c), [attention_kernel(e)], queued=True).seconds for c in ("h100-sxm", "h200-sxm")}
    # same 132 SMs, 4.8 vs 3.35 TB/s: each SM streams its split of the cache faster on the H200
    assert 1.3 < t["h100-sxm"] / t["h200-sxm"] <= 4.8 / 3.35 + 0.01


def test_row_kernels_with_few_rows_are_paced_by_inflight_bytes_not_bandwidth():
    # 256 rows of a 152k vocabulary: too few row blocks to load the memory system of either chip
    k = memory_kernel({"op": "rms_norm", "rows": 256, "cols": 152064, "dtype": "bfloat16"})
    t = {c: run_kernels(load_chip(c), [k], queued=True).seconds for c in ("h100-sxm", "h200-sxm")}
    assert t["h200-sxm"] == pytest.approx(t["h100-sxm"], rel=0.02)


def test_large_softmax_is_paced_by_its_row_blocks_not_by_bandwidth():
    # one 1024-thread block per SM, each holding one row and waiting on it: most of the time is the
    # rows' serial latency, which the H200's extra bandwidth does not shorten
    soft = memory_kernel({"op": "softmax", "rows": 32768, "cols": 8192, "dtype": "bfloat16"})
    add = memory_kernel({"op": "add", "elements": 32768 * 8192, "dtype": "bfloat16"})
    t = {c: [run_kernels(load_chip(c), [k], queued=True).seconds for k in (soft, add)] for c in ("h100-sxm", "h200-sxm")}
    assert 1.0 < t["h100-sxm"][0] / t["h200-sxm"][0] < 1.2
    assert t["h100-sxm"][1] / t["h200-sxm"][1] > 1.3  # a plain stream does follow the bandwidth


def _softmax_s(chip, rows, cols):
    k = memory_kernel({"op": "softmax", "rows": rows, "cols": cols, "dtype": "bfloat16"})
    K._CACHES.clear()
    return run_kernels(chip, [k], queued=True).seconds


def test_wide_softmax_rows_lower_occupancy_and_the_rate_follows():
    # PyTorch holds a row of up to 9 elements per thread in registers: more elements, more registers
    # per thread, fewer 1024-thread blocks per SM (64 K registers), less of each row's serial
    # latency hidden: an 8192-column row streams slower per byte than a 4096-column one
    h, p = load_chip("h100-sxm"), load_params("hopper")
    assert K.softmax_rows(h, p, 4096, 2) == (1024, 2, True)
    assert K.softmax_rows(h, p, 8192, 2) == (1024, 1, True)
    assert K.softmax_rows(h, p, 152064, 2)[2] is False  # too wide: streamed, read three times
    per_byte = {c: _softmax_s(h, 32768, c) / c for c in (4096, 8192)}
    assert per_byte[8192] > 1.15 * per_byte[4096]
    # the occupancy comes from the chip file: twice the register file keeps two wide rows per SM
    big = dataclasses.replace(h, cores=dataclasses.replace(h.cores, registers=2 * h.cores.registers))
    assert K.softmax_rows(big, p, 8192, 2)[1] == 2
    assert _softmax_s(big, 32768, 8192) < 0.8 * _softmax_s(h, 32768, 8192)
    # a chip file without a register file falls back to the family's blocks per core
    bare = dataclasses.replace(h, cores=dataclasses.replace(h.cores, registers=None))
    assert K.softmax_rows(bare, p, 8192, 2)[1] == p.softmax_blocks_per_core


def test_split_kv_heuristic_comes_from_the_params():
    p = load_params("hopper")
    h = load_chip("h100-sxm")
    e = {"B": 1, "S_q": 1, "S_kv": 16384, "heads_q": 32, "heads_kv": 8, "head_dim": 128, "causal": False}
    K._CACHES.clear()
    one = run_kernels(h, [attention_kernel(e)], params=dataclasses.replace(p, max_kv_splits=1)).seconds
    many = run_kernels(h, [attention_kernel(e)], params=p).seconds
    assert many < 0.9 * one  # 8 KV heads alone leave 124 of 132 SMs idle
