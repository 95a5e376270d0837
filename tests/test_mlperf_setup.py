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


# ---- the same round's results with one thing changed (validation.py --siblings)

def test_a_power_limit_keeps_the_idle_draw_and_moves_the_capped_clock_with_it():
    from tapeout import energy
    from tapeout.board import as_installed

    base = load_chip("h200-sxm")
    step = Batch(decode=(370,) * 806)
    clocks = {}
    for w in (500, 700, 1000):
        c = as_installed("h200-sxm", power_limit_w=w)
        assert c.chip.tdp_w == w and energy.idle_w(c) == pytest.approx(energy.idle_w(base))
        clocks[w] = run_batch("llama-2-70b", c, step, weights="fp8", kv="fp8").clock_hz
    assert clocks[500] < clocks[700] < clocks[1000] <= base.max_clock_hz
    assert clocks[700] == run_batch("llama-2-70b", base, step, weights="fp8", kv="fp8").clock_hz


def test_a_four_gpu_board_gives_each_pair_a_third_of_the_links():
    from tapeout.board import as_installed
    from tapeout.parallel import domain_size, link_fabric

    h100 = load_chip("h100-sxm")
    board = as_installed(h100, link_peers=3)
    assert board.name == "h100-sxm-4way" and domain_size(board) == 4
    assert link_fabric(board, 2).ring_bw == pytest.approx(h100.links.chip_to_chip.bandwidth_bytes_per_s / 3)
    # a TP2 decode step spends longer in its all-reduces on the board than through the NVSwitch
    step = Batch(decode=(370,) * 896)
    comm = {c.name: run_batch("llama-2-70b", c, step, tp=2, weights="fp8", kv="fp8").by_kind()["comm"] for c in (h100, board)}
    assert comm[board.name] > 2.5 * comm[h100.name]


@pytest.mark.parametrize("bad,match", [(dict(power_limit_w=100), "idle power"), (dict(link_peers=19), "1 to")])
def test_deployed_rejects_what_the_board_cannot_be(bad, match):
    from tapeout.board import as_installed
    from tapeout.errors import TapeoutError

    with pytest.raises(TapeoutError, match=match):
        as_installed("h100-sxm", **bad)


def test_sibling_rows_are_the_same_rounds_configs():
    """Each sibling names its source and differs from a headline row in the power limit or the board."""
    s = table("validation")["mlperf"]["siblings"]
    assert set(s) == {"h200-maxq", "h200-cts", "h100-hgx4"}
    assert (s["h200-maxq"]["power_limit_w"], s["h200-cts"]["power_limit_w"], s["h100-hgx4"]["link_peers"]) == (500, 1000, 3)
    # samples_per_query = target_qps x 2400 s x 1.1 (their logs: 96, 120 and 38 qps)
    assert [s[k]["offline_samples"] for k in ("h200-maxq", "h200-cts", "h100-hgx4")] == [round(q * 2400 * 1.1) for q in (96, 120, 38)]
    v = _validation()
    assert {f"sibling-{k}" for k in s} <= set(v.ROWS)


def test_collectives_at_cap_whatif_lowers_a_tp2_clock_and_leaves_tp1_alone(monkeypatch):
    import tapeout.perf.step as step_mod

    monkeypatch.setattr(step_mod, "_sustained_clock", step_mod._sustained_clock)   # restored after the test
    tp2 = dict(tp=2, weights="fp8", kv="fp8")
    b = Batch(decode=(370,) * 896)
    before = (run_batch("llama-2-70b", "h100-sxm", b, **tp2).clock_hz,
              run_batch("llama-2-70b", "h200-sxm", b, weights="fp8", kv="fp8").clock_hz)
    _validation().collectives_at_cap()
    after = (run_batch("llama-2-70b", "h100-sxm", b, **tp2).clock_hz,
             run_batch("llama-2-70b", "h200-sxm", b, weights="fp8", kv="fp8").clock_hz)
    assert after[0] < before[0] and after[1] == before[1]
