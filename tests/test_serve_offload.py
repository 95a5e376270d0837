"""KV offload: a second KV tier (host DRAM over PCIe, or a pooled memory) grows the KV cache, and the
steps that need its blocks pay their transfer over the tier's link."""
import pytest

from tapeout.chip import load_chip
from tapeout.errors import TapeoutError
from tapeout.serve.api import serve
from tapeout.serve.data import table
from tapeout.serve.kvcache import offload_tier

LONG = dict(tp=2, requests=48, offline=True, workload="fixed:16384:256")


def test_tiers_from_the_chip_file_and_the_data_table():
    t = table("kv_offload")
    h100 = load_chip("h100-sxm")
    host = offload_tier(h100, "host")
    assert host.bandwidth_bytes_per_s == pytest.approx(16 * 3.938e9)           # PCIe gen 5 x16 from the chip file
    assert host.bytes_per_chip == t["host"]["memory_bytes_per_chip"] == 256e9
    pool = offload_tier(load_chip("ascend-910c"), "pool")
    assert pool.bandwidth_bytes_per_s == pytest.approx(80e9)                   # the CPUs' share, below the NPU's 392 GB/s
    assert offload_tier(h100, None) is None
    with pytest.raises(TapeoutError, match="kv_offload 'disk': use one of host, pool"):
        offload_tier(h100, "disk")


def test_70b_on_two_h100_serves_more_sequences_with_host_offload_bounded_by_pcie():
    """Llama-3.1-70B bf16 on 2x H100 (TP2) leaves ~35k KV tokens in HBM: two 16k-token sequences at
    a time. With --kv-offload host all 48 decode together, and every decode step streams the spilled
    KV over PCIe, so the output rate cannot beat tokens / (bytes streamed / host bandwidth)."""
    base = serve("llama-3.1-70b", "h100-sxm", **LONG)
    off = serve("llama-3.1-70b", "h100-sxm", kv_offload="host", **LONG)
    conc = lambda r: max(s[6] for s in r.records.steps)
    assert base.memory["all"]["kv_tokens"] < 3 * 16640 and conc(base) <= 2
    mem = off.memory["all"]
    assert mem["kv_tokens_in_hbm"] == base.memory["all"]["kv_tokens"] and mem["kv_tokens"] > 48 * 16640
    assert conc(off) == 48 and off.metrics["preemptions"] == 0
    m = off.metrics
    bw = mem["kv_offload_bandwidth_bytes_per_s"]
    assert m["kv_offload_s"] == pytest.approx(m["kv_offload_bytes_per_chip"] / bw)
    bound = off.records.tokens_generated / m["kv_offload_s"]        # tokens per second of link time
    assert m["throughput_tok_s"] <= bound
    assert m["throughput_tok_s"] > 0.5 * bound                     # the link, not compute, paces the run
    # each decode step streams at most the spilled tokens' share of the KV: 48 x ~16.4k tokens x 160 KiB
    per_step = m["kv_offload_bytes_per_chip"] / sum(1 for s in off.records.steps if s[6])
    assert per_step <= 48 * (16384 + 256) * mem["kv_bytes_per_token_per_chip"]
    assert "kv_offload" not in base.memory["all"] and base.metrics["kv_offload_s"] == 0


def test_no_transfer_while_the_kv_fits_in_hbm():
    a = serve("llama-3.1-8b", "h100-sxm", rate=4, requests=100, seed=1)
    b = serve("llama-3.1-8b", "h100-sxm", rate=4, requests=100, seed=1, kv_offload="pool")
    assert b.metrics["kv_offload_bytes_per_chip"] == 0
    assert b.metrics["ttft_s"] == a.metrics["ttft_s"] and b.metrics["tpot_s"] == a.metrics["tpot_s"]
    assert b.memory["all"]["kv_tokens"] > a.memory["all"]["kv_tokens"]
