"""The analytic objective with speculative decoding and KV offload (dse.objective.Workload.speculative,
.kv_offload), and their one-line errors in a space file."""
import dataclasses

import pytest

from tapeout.chip import load_chip
from tapeout.dse.objective import Workload, analytic
from tapeout.dse.space import SpaceError, parse_space
from tapeout.perf.speculative import data
from tapeout.serve.kvcache import offload_tier

# DeepSeek-V3 as the study serves it: one 16-chip replica (tp 2 x ep 8), fp8, chat traffic, TPOT 100 ms
DSV3 = Workload("deepseek-v3", layouts=((2, 8),), weights=("fp8",), slo_ttft_s=2.0, slo_tpot_s=0.1, max_seqs=1024)
# Llama-3.1-8B on one L20 (48 GB) with 16k-token prompts: the KV cache, not the SLO, bounds the batch
LONG = Workload("llama-3.1-8b", "fixed:16000:1000", weights=("fp8",), slo_ttft_s=60.0, slo_tpot_s=0.5, max_seqs=256)


def test_mtp_with_acceptance_zero_gains_nothing():
    chip = load_chip("h100-sxm")
    plain, zero = analytic(chip, DSV3), analytic(chip, dataclasses.replace(DSV3, speculative="mtp:1:0"))
    assert zero.extra["tokens_per_step"] == 1.0
    assert zero.tok_s_per_chip < plain.tok_s_per_chip          # the verification and drafting cost, nothing gained


def test_mtp_with_the_sourced_acceptance_raises_tokens_per_s_at_the_slo():
    chip = load_chip("h100-sxm")
    plain, mtp = analytic(chip, DSV3), analytic(chip, dataclasses.replace(DSV3, speculative="mtp:1"))
    a = data()["acceptance"]["mtp"]
    assert mtp.extra["tokens_per_step"] == pytest.approx(1 + a)
    assert mtp.tpot_s <= DSV3.slo_tpot_s and mtp.ttft_s <= DSV3.slo_ttft_s
    assert plain.tok_s_per_chip * 1.1 < mtp.tok_s_per_chip < plain.tok_s_per_chip * (1 + a)
    assert "speculative" not in plain.extra


def test_kv_offload_raises_the_batch_where_kv_binds_and_never_lowers_throughput():
    chip = load_chip("l20")
    hbm, host = analytic(chip, LONG), analytic(chip, dataclasses.replace(LONG, kv_offload="host"))
    assert host.extra["kv_tokens"] > host.extra["kv_tokens_in_hbm"]
    assert host.batch > hbm.batch and host.tok_s_per_chip >= hbm.tok_s_per_chip
    assert host.extra["kv_offload_bytes_per_step"] > 0


def test_kv_offload_is_bounded_by_the_tier_bandwidth():
    """The spilled KV a step reads takes bytes / bandwidth; a slower tier (PCIe x4 instead of x16) holds a
    smaller batch, and the transfer never exceeds the step."""
    fast = load_chip("l20")
    slow = dataclasses.replace(fast, links=dataclasses.replace(fast.links, host=dataclasses.replace(fast.links.host, pcie_lanes=4)))
    wl = dataclasses.replace(LONG, kv_offload="host")
    f, s = analytic(fast, wl), analytic(slow, wl)
    for chip, r in ((fast, f), (slow, s)):
        assert r.extra["kv_offload_bytes_per_step"] / offload_tier(chip, "host").bandwidth_bytes_per_s <= r.tpot_s
    assert analytic(fast, LONG).batch <= s.batch < f.batch


@pytest.mark.parametrize("key, value, msg", [
    ("speculative", "mtp:x", "workloads[0].speculative: speculative 'mtp:x'"),
    ("speculative", 1, "workloads[0].speculative: speculative 1: write a string"),
    ("kv_offload", "disk", "workloads[0].kv_offload: kv_offload 'disk': use one of host, pool"),
    ("kv", "fp5", "workloads[0].kv: kv dtype 'fp5'"),
])
def test_bad_speculative_or_offload_in_a_space_file_is_a_one_line_error(key, value, msg):
    with pytest.raises(SpaceError) as e:
        parse_space({"name": "s", "base": "tapeout-n7", "knobs": {"cores": [8]},
                     "workloads": [{"model": "qwen2.5-7b", key: value}]})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_a_space_file_takes_speculative_and_kv_offload():
    sp = parse_space({"name": "s", "base": "tapeout-n7", "knobs": {"cores": [8]},
                      "workloads": [{"model": "deepseek-v3", "speculative": "mtp:1", "kv_offload": "pool"}]})
    assert (sp.workloads[0].speculative, sp.workloads[0].kv_offload) == ("mtp:1", "pool")
