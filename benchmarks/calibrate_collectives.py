"""Fit the NVIDIA stack's custom all-reduce kernel on published H100 measurements.

Serving engines on NVLink GPUs (vLLM, SGLang, TensorRT-LLM) run all-reduces up to a few MB on
their own one-shot / two-shot kernels, not on NCCL; TensorRT-LLM hands tensors above its workspace
(16 MB between two GPUs, 8 MB among more: `CustomAllReduceHelper.max_workspace_size_auto`) to NCCL.
`tapeout.parallel.custom_allreduce_time` models that kernel with two physical parameters: the time
of one cross-GPU synchronisation and the fraction of the NVLink bandwidth its peer loads reach.
This script fits both on the 18 points of src/tapeout/data/calibration/h100-custom-allreduce.json
(2, 4 and 8 H100s, 2 KiB to 4 MiB; sglang pull request 2904), in log space by a grid search, and
prints every point's residual:

    python benchmarks/calibrate_collectives.py            # fit and print
    python benchmarks/calibrate_collectives.py --write    # also write the values into data/stacks/nvidia-trtllm.toml

The measured kernels ran without CUDA graphs; the model adds the queued launch gap of the Hopper
fit (`queued_launch_s`) to each, as it does for every kernel of a step, so the fitted
synchronisation time is if anything an upper bound for a graph-launched engine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tapeout.chip import load_chip  # noqa: E402
from tapeout.parallel import custom_allreduce_time  # noqa: E402
from tapeout.perf.params import load_params  # noqa: E402

DATA = ROOT / "src/tapeout/data/calibration/h100-custom-allreduce.json"
STACK = ROOT / "src/tapeout/data/stacks/nvidia-trtllm.toml"
MAX_BYTES, PAIR_MAX_BYTES = 8_000_000, 16_000_000   # TensorRT-LLM's workspace: larger all-reduces go to NCCL


def points() -> list[tuple[int, float, float]]:
    """(GPUs, bytes per GPU, measured seconds) for each row of the data file."""
    d = json.loads(DATA.read_text())
    return [(r["gpus"], 4.0 * r["elements"], r["ms"] * 1e-3) for r in d["rows"]]


def predict(chip, launch: float, pts, sync_s: float, eff: float) -> np.ndarray:
    return np.array([launch + custom_allreduce_time(chip, S, n, sync_s, eff) for n, S, _ in pts])


def fit(chip, launch: float, pts) -> tuple[float, float]:
    """Least squares of log(predicted / measured) over a grid (0.5 ns x 0.0025 steps)."""
    meas = np.array([t for *_, t in pts])

    def sse(sync: float, eff: float) -> float:
        r = np.log(predict(chip, launch, pts, sync, eff) / meas)
        return float(r @ r)

    _, sync, eff = min((sse(s, e), s, e) for e in np.arange(0.30, 1.0001, 0.0025)
                       for s in np.arange(0.0, 10e-6, 0.05e-6))
    # refine the latency at that efficiency
    _, sync = min((sse(s, eff), s) for s in np.arange(max(sync - 0.05e-6, 0.0), sync + 0.05e-6, 0.0005e-6))
    return sync, eff


def write(sync_s: float, eff: float, n: int) -> None:
    """Replace (or add) the four [params.custom_allreduce_*] blocks of data/stacks/nvidia-trtllm.toml."""
    when = datetime.date.today().isoformat()
    src = "sglang PR 2904 (src/tapeout/data/calibration/h100-custom-allreduce.json)"
    blocks = {
        "custom_allreduce_max_bytes": (MAX_BYTES, "TRTLLM_CAR", "reported",
                                       "TensorRT-LLM's custom all-reduce workspace above two GPUs: larger messages go "
                                       "to NCCL (vLLM's CustomAllreduce caps at 8 MiB, VLLM_CAR)"),
        "custom_allreduce_pair_max_bytes": (PAIR_MAX_BYTES, "TRTLLM_CAR", "reported",
                                            "TensorRT-LLM's workspace at tp_size <= 2, where every message up to it "
                                            "runs one-shot"),
        "custom_allreduce_sync_s": (sync_s, "benchmarks/calibrate_collectives.py", "fitted",
                                    f"fitted on {n} H100 custom all-reduce latencies, {src}; {when}"),
        "custom_allreduce_efficiency": (eff, "benchmarks/calibrate_collectives.py", "fitted",
                                        f"fitted on {n} H100 custom all-reduce latencies, {src}; {when}"),
    }
    text = STACK.read_text()
    for k, (v, ref, conf, note) in blocks.items():
        val = str(v) if isinstance(v, int) else f"{v:.6g}"
        block = f'[params.{k}]\nvalue = {val}\nref = "{ref}"\nconfidence = "{conf}"\nnote = "{note}"\n'
        pat = re.compile(rf"\[params\.{k}\]\n(?:(?!\[).*\n)*")
        text = pat.sub(block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block
    STACK.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the fitted values into data/stacks/nvidia-trtllm.toml")
    args = ap.parse_args(argv)
    chip = load_chip("h100-sxm")
    launch = load_params(chip.chip.family).queued_launch_s
    pts = points()
    sync, eff = fit(chip, launch, pts)
    pred = predict(chip, launch, pts, sync, eff)
    print(f"custom all-reduce on h100-sxm ({len(pts)} points, {DATA.relative_to(ROOT)}):")
    print(f"  synchronisation {sync * 1e6:.2f} us, link efficiency {eff:.3f} "
          f"({eff * chip.links.chip_to_chip.bandwidth_bytes_per_s / 1e9:.0f} of "
          f"{chip.links.chip_to_chip.bandwidth_bytes_per_s / 1e9:.0f} GB/s); + queued launch {launch * 1e6:.2f} us")
    print(f"  {'GPUs':>4} {'size':>9} {'measured us':>12} {'predicted us':>13} {'error':>7}")
    errs = []
    for (n, S, t), p in zip(pts, pred):
        errs.append(p / t - 1)
        size = f"{S / 2**20:.0f} MiB" if S >= 2**20 else f"{S / 1024:.0f} KiB"
        print(f"  {n:4d} {size:>9} {t * 1e6:12.1f} {p * 1e6:13.1f} {errs[-1]:+7.1%}")
    e = np.abs(errs)
    big = np.array([abs(x) for (n, S, _), x in zip(pts, errs) if S >= 2**20])
    print(f"  MAPE {e.mean():.1%} (max {e.max():.1%}); at 1-4 MiB MAPE {big.mean():.1%} (max {big.max():.1%})")
    if args.write:
        write(sync, eff, len(pts))
        print(f"wrote {STACK.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
