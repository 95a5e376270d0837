"""The performance model: physical sanity, the prediction contract, the API and the CLI."""
import dataclasses
import json
import subprocess
import sys

import pytest

import tapeout
from tapeout.chip import load_chip
from tapeout.errors import DoesNotFitError, TapeoutError
from tapeout.llm.kernels import Batch
from tapeout.perf.api import batch_time, estimate, step_time
from tapeout.perf.predict import errors, predict_entries
from tapeout.perf.step import run_kernels
from tapeout.perf.predict import gemm_kernel

CAL = "src/tapeout/data/calibration/h100-sxm.json"


def _gemm_ms(chip, M, N, K, dtype="bfloat16"):
    k = gemm_kernel({"M": M, "N": N, "K": K, "dtype": dtype})
    return run_kernels(load_chip(chip), [k], queued=True).seconds * 1e3


def test_big_gemm_is_compute_bound_near_peak_at_the_power_limited_clock():
    h = load_chip("h100-sxm")
    st = run_kernels(h, [gemm_kernel({"M": 8192, "N": 8192, "K": 8192, "dtype": "bfloat16"})])
    assert st.kernels[0].bound == "compute"
    assert 1.1e9 < st.clock_hz < 1.6e9  # measured: ~1.38 GHz at the 700 W limit
    tflops = 2 * 8192 ** 3 / st.seconds / 1e12
    assert 0.75 * h.peak_flops("bf16", st.clock_hz) / 1e12 < tflops <= h.peak_flops("bf16", st.clock_hz) / 1e12


def test_gemv_is_memory_bound_at_most_peak_bandwidth():
    h = load_chip("h100-sxm")
    st = run_kernels(h, [gemm_kernel({"M": 1, "N": 28672, "K": 4096, "dtype": "bfloat16"})])
    assert st.kernels[0].bound == "memory"
    assert 28672 * 4096 * 2 / st.seconds <= h.dram.bandwidth_bytes_per_s


def test_gemm_time_monotone_in_size_and_fp8_faster():
    assert _gemm_ms("h100-sxm", 1024, 4096, 4096) < _gemm_ms("h100-sxm", 4096, 4096, 4096) < _gemm_ms("h100-sxm", 8192, 4096, 4096)
    assert _gemm_ms("h100-sxm", 8192, 8192, 8192, "fp8_e4m3") < _gemm_ms("h100-sxm", 8192, 8192, 8192)


def test_decode_scales_with_bandwidth_across_chips():
    # decode of a big model at batch 1 is weight streaming: H200 (4.8 TB/s) beats H100 (3.35 TB/s)
    h100 = step_time("llama-3.1-70b", chip="h100-sxm", phase="decode", batch=1, context=1024, tp=2)
    h200 = step_time("llama-3.1-70b", chip="h200-sxm", phase="decode", batch=1, context=1024, tp=2)
    assert 1.2 < h100 / h200 < 4.8 / 3.35 + 0.05


def test_prefill_compute_bound_and_batch_amortizes_decode():
    t1 = step_time("llama-3.1-8b", chip="h100-sxm", phase="decode", batch=1, context=1024)
    t64 = step_time("llama-3.1-8b", chip="h100-sxm", phase="decode", batch=64, context=1024)
    assert t1 < t64 < 4 * t1
    r = estimate("llama-3.1-8b", chip="h100-sxm", batch=1, prompt=4096, output=16)
    assert r.bounds == {"prefill": "compute", "decode": "memory"}


def test_chip_change_changes_prediction_through_the_file(tmp_path):
    """A user's chip file with twice the DRAM bandwidth decodes faster: the model reads the spec."""
    text = open("src/tapeout/chips/h100-sxm.toml").read().replace("bandwidth_bytes_per_s = 3.35e12", "bandwidth_bytes_per_s = 6.7e12")
    p = tmp_path / "fast.toml"
    p.write_text(text.replace('name = "h100-sxm"', 'name = "h100-fast"'))
    a = step_time("llama-3.1-8b", chip="h100-sxm", phase="decode", batch=1, context=128)
    b = step_time("llama-3.1-8b", chip=str(p), phase="decode", batch=1, context=128)
    assert b < 0.75 * a


def test_batch_time_mixed_batch_between_parts():
    pre = batch_time("qwen2.5-7b", "h100-sxm", Batch(prefill=((512, 0),)))
    dec = batch_time("qwen2.5-7b", "h100-sxm", Batch(decode=(1000,) * 16))
    both = batch_time("qwen2.5-7b", "h100-sxm", Batch(prefill=((512, 0),), decode=(1000,) * 16))
    assert max(pre, dec) <= both < pre + dec


def test_estimate_fields_and_consistency():
    r = tapeout.estimate("qwen2.5-7b", chip="h100-sxm", batch=8, prompt=2048, output=256)
    assert r.e2e_s == pytest.approx(r.ttft_s + 255 * r.tpot_s)
    assert r.tokens_per_s == pytest.approx(8 * 256 / r.e2e_s)
    assert r.memory_bytes > load_chip("h100-sxm").memory_bytes * 0.1
    assert set(r.breakdown) == {"prefill", "decode"} and "gemm" in r.breakdown["decode"]
    json.dumps(r.to_dict())


def test_does_not_fit_names_sizes():
    with pytest.raises(DoesNotFitError, match=r"does not fit on h100-sxm: needs \d+\.\d GiB.*chip has 80.0 GiB"):
        estimate("llama-3.1-405b", chip="h100-sxm")


def test_unsupported_dtype_falls_back_to_wider_matrix_dtype():
    # A100 has no fp8: fp8 weights run as weight-only (bf16 MMA) rather than failing
    r = estimate("llama-3.1-8b", chip="a100-sxm-80gb", weights="fp8")
    assert r.settings["activations"] == "bf16"


def test_predict_contract_fills_every_entry_and_reports_unknowns():
    data = json.load(open(CAL))
    data["llm"].append({"model": "no-such-model", "phase": "decode", "batch": 1, "context": 10})
    data["memory"].append({"op": "cumsum", "elements": 10, "dtype": "bfloat16"})
    for e in data["gemm"][:3]:
        e.pop("ms")
    out = predict_entries(data, "h100-sxm")
    for s in ("gemm", "attention", "memory", "llm"):
        for e in out[s]:
            assert "predicted_ms" in e
    assert out["llm"][-1]["predicted_ms"] is None and "no-such-model" in out["llm"][-1]["reason"]
    assert out["memory"][-1]["predicted_ms"] is None and "cumsum" in out["memory"][-1]["reason"]
    stats = errors(out)
    assert stats["llm"]["unpredicted"] == 1 and stats["gemm"]["measured"] == len(data["gemm"]) - 3


def test_predict_cli_writes_json(tmp_path):
    out = tmp_path / "o.json"
    r = subprocess.run([sys.executable, "-m", "tapeout.cli", "predict", CAL, "--chip", "h100-sxm", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "MAPE" in r.stdout
    res = json.loads(out.read_text())
    assert all(isinstance(e["predicted_ms"], float) for e in res["gemm"])


def test_cli_user_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{")
    for args in (["predict", str(bad), "--chip", "h100-sxm"], ["estimate", "-m", "nope", "-c", "h100-sxm"],
                 ["estimate", "-m", "llama-3.1-405b", "-c", "h100-sxm"]):
        r = subprocess.run([sys.executable, "-m", "tapeout.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error:")


def test_estimate_and_compare_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tapeout.cli", "compare", "-m", "qwen2.5-7b", "--chips",
                        "h100-sxm,h20,tapeout-n7", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert [x["chip"] for x in res] == ["h100-sxm", "h100-sxm", "h20", "h20", "tapeout-n7", "tapeout-n7"]
    assert [x["settings"]["stack"] for x in res[::2]] == ["nvidia-trtllm", "nvidia-trtllm", "cann"]
    assert all(x["settings"]["stack"] == "ideal" for x in res[1::2])
    assert all(x["ttft_s"] > 0 and x["tpot_s"] > 0 for x in res)


def test_roofline_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.png"
    r = subprocess.run([sys.executable, "-m", "tapeout.cli", "roofline", "-m", "llama-3.1-8b", "-c", "h100-sxm", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 10_000


def test_measure_skips_cleanly_without_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = subprocess.run([sys.executable, "-m", "tapeout.cli", "measure", "-o", str(tmp_path / "m.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_measure_pipeline_on_cpu_writes_the_calibration_format(tmp_path):
    pytest.importorskip("torch")
    from tapeout.perf.measure import measure

    out = tmp_path / "m.json"
    n = measure(out, budget_s=60, quick=True, allow_cpu=True)
    data = json.loads(out.read_text())
    assert n == sum(len(data[s]) for s in ("gemm", "attention", "memory", "llm")) > 5
    assert all(e["ms"] > 0 for e in data["gemm"])
    predict_entries(data, "h100-sxm")  # the format is what `tapeout predict` reads
    step = data["in_step"][0]          # the prefill profiled op by op, next to its layer GEMMs alone
    assert step["by_class_ms"]["gemm"] > 0 and step["layer_gemms_alone_ms"] > 0
    assert sum(step["by_class_ms"].values()) == pytest.approx(step["kernels_ms"], rel=1e-3)
    assert data["power"] == {"skipped": "needs an NVIDIA GPU and nvidia-smi"}


def test_power_entry_reads_nvidia_smi_rows_and_the_clock_event_reasons():
    from tapeout.perf.measure import power_entry

    ramp = "300.1, 1980, 40, Not Active, Not Active, Not Active, Not Active\n" * 2
    rows = ["699.0, 1380, 60, Active, Not Active, Not Active, Not Active",
            "701.5, 1365, 61, Active, Not Active, Active, Not Active",
            "698.2, 1395, 61, Active, Not Active, Not Active, Not Active",
            "700.3, 1380, 61, Not Active, Not Active, Not Active, Not Active",
            "697.9, 1380, 62, Active, Not Active, Not Active, Not Active",
            "700.0, 1395, 62, Active, Not Active, Not Active, Not Active"]
    e = power_entry(ramp + "\n".join(rows), calls=100, seconds=0.8)
    assert e["samples"] == 6 and e["watts_max"] == 701.5 and e["watts_median"] == 700.0 and e["sm_clock_median"] == 1380
    assert e["ms_per_call"] == pytest.approx(8.0)
    assert e["event_reasons_active"] == {"sw_power_cap": pytest.approx(5 / 6), "hw_slowdown": 0.0,
                                         "hw_power_brake_slowdown": pytest.approx(1 / 6), "sw_thermal_slowdown": 0.0}
    with pytest.raises(Exception, match="no power samples"):
        power_entry("", 1, 1.0)


def test_on_chip_memory_size_sets_gemm_reuse():
    """A chip with little on-chip SRAM re-reads operands from DRAM (Hong-Kung bound)."""
    from tapeout.perf.kernels import _gemm_dram_bytes

    big = load_chip("tapeout-n7")
    small = dataclasses.replace(big, shared_buffer=dataclasses.replace(big.shared_buffer, bytes=1 << 20),
                                cores=dataclasses.replace(big.cores, sram=dataclasses.replace(big.cores.sram, bytes=1 << 16)))
    M = N = K = 4096
    compulsory = (M * K + N * K + M * N) * 2
    assert _gemm_dram_bytes(big, M, N, K, 1, 2, 2, 2) == compulsory
    assert _gemm_dram_bytes(small, M, N, K, 1, 2, 2, 2) > 2 * compulsory


def test_design_clock_above_nominal_costs_energy():
    from tapeout import energy

    n7 = load_chip("tapeout-n7")
    fast = dataclasses.replace(n7, cores=dataclasses.replace(n7.cores, clock_hz=1.6e9), peaks=dataclasses.replace(n7.peaks))
    e1, e2 = energy.action_energies(n7), energy.action_energies(fast)
    assert e2.mac_pj["bf16"] > 1.3 * e1.mac_pj["bf16"]
    assert e2.sram_pj_per_byte > e1.sram_pj_per_byte
