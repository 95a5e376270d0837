"""How well the calibrated model predicts what it was not fitted on (held-out groups).

    python benchmarks/generalization.py            # a few minutes on 2 cores

Splits the H100 file into groups that a user would recognise as "new": the Qwen2.5-7B GEMM
shapes (fit on the Llama shapes and squares), the fp8 GEMMs, the GQA/head-count variants of
attention, long prefills, big-batch decodes, big-batch flash-decoding, and the largest softmax
and norm. For each group it refits the family parameters on everything else
(benchmarks/calibrate.py's least squares, starting from the shipped values) and prints the
error on the held-out group next to the in-sample error of the shipped fit. Then it predicts
published H100 GEMMs that are not in the file: a shape whose K is not 16-byte aligned (it sets
the fallback kernels' rate) and the same shape padded to alignment (held out).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tapeout.chip import load_chip  # noqa: E402
from tapeout.perf import kernels as K  # noqa: E402
from tapeout.perf.params import load_params  # noqa: E402
from tapeout.perf.predict import SECTIONS, gemm_kernel, predict_entries  # noqa: E402
from tapeout.perf.step import run_kernels  # noqa: E402

CAL = runpy.run_path(str(ROOT / "benchmarks/calibrate.py"))
HOLDOUTS = {
    "qwen2.5-7b GEMM shapes": lambda s, e: s == "gemm" and e.get("tag", "").startswith("qwen"),
    "fp8 GEMMs": lambda s, e: s == "gemm" and e.get("dtype") == "fp8_e4m3",
    "attention, other head counts and batch 8": lambda s, e: s == "attention" and (e["heads_q"] != 32 or e["B"] == 8),
    "llm prefill >= 2048 tokens": lambda s, e: s == "llm" and e.get("seq", 0) >= 2048,
    "llm decode batch >= 64": lambda s, e: s == "llm" and e["phase"] == "decode" and e["batch"] >= 64,
    "decode attention, batch >= 32": lambda s, e: s == "attention" and e["S_q"] == 1 and e["B"] >= 32,
    "softmax and rms_norm, 32768 rows": lambda s, e: s == "memory" and e.get("rows") == 32768,
}
PUBLISHED = ROOT / "src/tapeout/data/calibration/published-h100-gemm.json"


def split(data: dict, held) -> tuple[dict, dict]:
    train, test = copy.deepcopy(data), copy.deepcopy(data)
    for s in SECTIONS:
        train[s] = [e for e in data.get(s, []) if not held(s, e)]
        test[s] = [e for e in data.get(s, []) if held(s, e)]
    return train, test


def mape(data: dict, chip, params) -> tuple[float, float, int]:
    K._CACHES.clear()
    res = predict_entries(data, chip, params=params)
    errs = [abs(e["predicted_ms"] / e["ms"] - 1) * 100 for s in SECTIONS for e in res.get(s, [])]
    return float(np.mean(errs)), float(np.max(errs)), len(errs)


def refit(train: dict, chip, base):
    from scipy.optimize import least_squares

    free = CAL["FREE"]
    x0 = np.array([getattr(base, k) for k in free])
    lo, hi = np.array([b[0] for b in free.values()]), np.array([b[1] for b in free.values()])
    x0 = np.clip(x0, lo * 1.0001, hi * 0.9999)
    fit = least_squares(CAL["residuals"], x0, bounds=(lo, hi), args=(base, chip, train), loss="soft_l1",
                        f_scale=0.1, x_scale=np.maximum(np.abs(x0), 1e-9), diff_step=0.05, max_nfev=30)
    return dataclasses.replace(base, **dict(zip(free, fit.x)))


def published(chip, params) -> None:
    """Published single measurements at a locked clock (not in the calibration file)."""
    pub = json.loads(PUBLISHED.read_text())
    f = pub["meta"]["clock_hz"]
    print(f"\npublished H100 GEMMs at {f / 1e9:.1f} GHz ({pub['meta']['source'].split(' ')[0]})")
    for e in pub["gemm"]:
        K._CACHES.clear()
        ms = run_kernels(chip, [gemm_kernel(e)], queued=True, params=params, clock_hz=f).seconds * 1e3
        use = "sets unaligned_mma_efficiency" if not tma_aligned_entry(params, e) else "held out"
        print(f"  M={e['M']} N={e['N']} K={e['K']}: measured {e['ms'] * 1e3:.1f} us, predicted {ms * 1e3:.1f} us "
              f"({100 * (ms / e['ms'] - 1):+.1f}%), {use}")


def tma_aligned_entry(params, e: dict) -> bool:
    k = gemm_kernel(e)
    M, N, Kd = e["M"], e["N"], e["K"]
    return K.tma_aligned(params, N, Kd, (k.bytes_read - k.weight_bytes) / (M * Kd), k.weight_bytes / (N * Kd),
                         k.bytes_written / (M * N))


def main() -> None:
    data = json.loads((ROOT / "src/tapeout/data/calibration/h100-sxm.json").read_text())
    chip, base = load_chip("h100-sxm"), load_params("hopper")
    print(f"{'held-out group':42s} {'n':>3s} {'in-sample MAPE':>15s} {'held-out MAPE':>14s} {'held-out max':>13s}")
    for name, held in HOLDOUTS.items():
        train, test = split(data, held)
        inside, _, n = mape(test, chip, base)
        p = refit(train, chip, base)
        out, worst, _ = mape(test, chip, p)
        print(f"{name:42s} {n:3d} {inside:14.1f}% {out:13.1f}% {worst:12.1f}%", flush=True)
    published(chip, base)


if __name__ == "__main__":
    main()
