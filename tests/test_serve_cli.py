"""`tapeout serve` on the command line: JSON/CSV/trace output, sweeps with a plot, one-line errors."""
import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tapeout.cli import app

runner = CliRunner()
BASE = ["serve", "-m", "llama-3.1-8b", "-c", "h100-sxm"]


def test_json_csv_and_perfetto_trace(tmp_path):
    out = runner.invoke(app, BASE + ["--rate", "5", "--requests", "120", "--json", "--csv", str(tmp_path / "r.csv"),
                                     "--trace", str(tmp_path / "t.json")])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout[out.stdout.index("{"):])
    assert data["metrics"]["requests"] == 120 and data["settings"]["rate"] == 5
    row = next(csv.DictReader(open(tmp_path / "r.csv")))
    assert float(row["ttft_p99_s"]) == pytest.approx(data["metrics"]["ttft_s"]["p99"])
    trace = json.loads((tmp_path / "t.json").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["name"] for e in slices} <= {"prefill", "decode", "mixed"} and len(slices) == trace["otherData"]["steps"]
    ends = sorted((e["ts"], e["ts"] + e["dur"]) for e in slices)
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(ends, ends[1:]))   # one replica: steps never overlap


def test_offline_summary_table():
    out = runner.invoke(app, BASE + ["--offline", "--requests", "60", "--scheduler", "chunked"])
    assert out.exit_code == 0, out.output
    for word in ("TTFT", "TPOT", "goodput", "J/token", "per million output tokens", "KV cache"):
        assert word in out.output


def test_power_limit_caps_the_power_and_costs_throughput():
    """--power-limit (nvidia-smi -pl): a compute-heavy offline run draws less and serves less."""
    def run(*extra):
        out = runner.invoke(app, BASE + ["--offline", "--requests", "200", "--weights", "fp8", "--json", *extra])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout[out.stdout.index("{"):])

    full, capped = run(), run("--power-limit", "450")
    assert capped["settings"]["chip"] == "h100-sxm@450W"
    assert capped["metrics"]["power_w_per_chip"] <= 450 < full["metrics"]["power_w_per_chip"]
    assert capped["metrics"]["throughput_tok_s"] < full["metrics"]["throughput_tok_s"]


def test_sweep_writes_the_plot(tmp_path):
    png = tmp_path / "sweep.png"
    out = runner.invoke(app, BASE + ["--sweep", "rate", "--rates", "2,8", "--requests", "80", "-o", str(png)])
    assert out.exit_code == 0, out.output
    assert png.stat().st_size > 10_000


def test_user_errors_are_one_line():
    for args, msg in ((BASE, "give --rate"), (BASE + ["--rate", "1", "--scheduler", "x"], "scheduler='x'"),
                      (BASE + ["--rate", "1", "--disaggregate", "3"], "--disaggregate"),
                      (BASE + ["--sweep", "rate", "--rates", "a"], "--rates"),
                      (BASE + ["--offline", "--power-limit", "50"], "above h100-sxm's idle power")):
        p = subprocess.run([sys.executable, "-c", f"from tapeout.cli import main; main({args!r})"],
                           capture_output=True, text=True)
        assert p.returncode == 2, p.stderr
        assert msg in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) <= 2


def test_reasoning_and_agentic_workloads_serve():
    """The 2026 workloads run end to end: reasoning's long outputs, agentic's shared session prefixes."""
    out = runner.invoke(app, BASE + ["-w", "reasoning", "--rate", "1", "--requests", "50", "--json"])
    assert out.exit_code == 0, out.output
    m = json.loads(out.stdout[out.stdout.index("{"):])["metrics"]
    assert m["requests"] == 50 and m["throughput_tok_s"] > 0
    out = runner.invoke(app, BASE + ["-w", "agentic", "--rate", "2", "--requests", "60", "--prefix-caching", "--json"])
    assert out.exit_code == 0, out.output
    m = json.loads(out.stdout[out.stdout.index("{"):])["metrics"]
    assert m["prefix_hit_rate"] > 0.5


def test_kv_offload_flag():
    out = runner.invoke(app, ["serve", "-m", "llama-3.1-70b", "-c", "h100-sxm", "--tp", "2", "--offline", "--requests", "8",
                              "-w", "fixed:16384:64", "--kv-offload", "host"])
    assert out.exit_code == 0, out.output
    assert "offloaded to host" in out.output
    out = runner.invoke(app, BASE + ["--rate", "1", "--requests", "5", "--kv-offload", "disk"])
    assert out.exit_code != 0 and "use one of host, pool" in str(out.exception)


def test_estimate_power_limit_lowers_the_compute_bound_clock_only():
    """`tapeout estimate --power-limit`: the prefill (compute-bound) clock falls, a memory-bound decode
    step keeps its time."""
    args = ["estimate", "-m", "llama-3.1-70b", "-c", "h100-sxm", "--batch", "64", "--weights", "fp8", "--tp", "2", "--json"]
    full, capped = (json.loads(runner.invoke(app, args + extra).stdout) for extra in ([], ["--power-limit", "450"]))
    assert capped["chip"] == "h100-sxm@450W"
    assert capped["clock_hz"]["prefill"] < full["clock_hz"]["prefill"]
    assert capped["ttft_s"] > full["ttft_s"]
