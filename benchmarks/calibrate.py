"""Fit the performance model's free parameters for one chip family to a measurement file.

    python benchmarks/calibrate.py                       # hopper <- data/calibration/h100-sxm.json
    python benchmarks/calibrate.py --family hopper --chip h100-sxm --data FILE [--dry-run]
    python benchmarks/calibrate.py --generations 40       # a global search first (slow, a few minutes)

Only parameters with a physical meaning are fitted (achievable fractions of peak, the bytes a
core keeps in flight, launch gaps, pipeline-fill latency, passes over the input of norms and
softmax); the structure (tiles, split-K, waves, the power-limited clock) comes from the model.
Parameters the file cannot pin are derived from the kernels' code or quoted, with their source
in the family file, and not fitted (flash-decoding's in-flight bytes, softmax blocks per core,
the stride-alignment rule and the fallback kernels' rate, the split heuristics).
The objective is the squared log error of every entry, each section weighted equally, with a
soft-L1 loss so that no single entry dominates. The result is written to the fitted block at the
end of src/tapeout/data/perf/<family>.toml (review the diff) in the sourced form every data table
uses (tapeout.sourced: each value with its ref, confidence "fitted" and a note), with the fit's
command, data digest and errors under [meta.fit].
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tapeout.chip import load_chip  # noqa: E402
from tapeout.perf import kernels as K  # noqa: E402
from tapeout.perf.params import load_params  # noqa: E402
from tapeout.perf.predict import SECTIONS, errors, predict_entries  # noqa: E402

MARK = "# ---- fitted by benchmarks/calibrate.py: do not edit by hand, rerun the script and review the diff"
# name: (lower, upper) bounds; all physically meaningful
FREE = {
    "mma_efficiency": (0.6, 1.0),
    "attention_mma_efficiency": (0.3, 1.0),
    "dram_efficiency": (0.7, 0.98),
    "tiled_dram_efficiency": (0.6, 0.98),
    "kv_dram_efficiency": (0.6, 0.98),
    "gemm_inflight_bytes": (1024.0, 262144.0),
    "l2_bytes_per_cycle_per_core": (16.0, 256.0),
    "launch_s": (1e-6, 8e-6),
    "queued_launch_s": (0.2e-6, 2e-6),
    "tile_latency_s": (0.2e-6, 5e-6),
    "dram_latency_s": (0.2e-6, 1.5e-6),
    "split_latency_s": (0.0, 8e-6),
    "row_block_bytes": (1024.0, 65536.0),
    "norm_read_passes": (1.0, 3.0),
    "softmax_row_latency_s": (0.2e-6, 5e-6),
    "softmax_vector_ops": (8.0, 120.0),
    "attention_block_latency_s": (0.1e-6, 4e-6),
    "attention_vector_ops": (0.0, 6.0),
}


def residuals_by_section(x, base, chip, data) -> list[np.ndarray]:
    """log(predicted / measured) of every entry, one array per section."""
    p = dataclasses.replace(base, **dict(zip(FREE, x)))
    K._CACHES.clear()
    res = predict_entries(data, chip, params=p)
    return [np.array([np.log(e["predicted_ms"] / e["ms"]) for e in res.get(s) or []
                      if e.get("ms") and e.get("predicted_ms")]) for s in SECTIONS]


def residuals(x, base, chip, data):
    """All residuals, each section weighted equally (1 / sqrt(entries))."""
    return np.concatenate([v / np.sqrt(max(len(v), 1)) for v in residuals_by_section(x, base, chip, data)])


def write_params(path: Path, values: dict, held: dict, fit: dict) -> None:
    """Replace the fitted block of the family file (everything after MARK) with `values` in the
    sourced form (tapeout.sourced), `held` (--fix) as assumed; the hand-written part stays as it is."""
    head = path.read_text().split(MARK)[0].rstrip()
    clash = set(tomllib.loads(head).get("params", {})) & (set(values) | set(held))
    if clash:
        raise SystemExit(f"{path.name}: {', '.join(sorted(clash))} written by hand above the fitted block: move them")
    lines = [head, "", MARK, "[meta.fit]", *(f"{k} = {json.dumps(v)}" for k, v in fit.items())]
    how = f"fitted to {fit['data']} (sha256 {fit['sha256']}) by `{fit['command']}` on {fit['date']}"
    for k, v in {**values, **held}.items():
        conf, note = ("fitted", how) if k in values else ("assumed", f"held at this value (--fix) while the rest was {how}")
        lines += [f"[params.{k}]", f"value = {v:.6g}", 'ref = "benchmarks/calibrate.py"', f'confidence = "{conf}"',
                  f"note = {json.dumps(note)}"]
    path.write_text("\n".join(lines) + "\n")


def fit_record(a, after: dict) -> dict:
    """What [meta.fit] records: the command, the data file and its digest, the date, the result."""
    path = Path(a.data).resolve()
    meta = json.loads(path.read_text()).get("meta", {})
    argv = " ".join(Path(x).name if i == 0 else x for i, x in enumerate(sys.argv))
    return {"command": f"python benchmarks/{argv}",
            "data": str(path.relative_to(ROOT / "src/tapeout")) if path.is_relative_to(ROOT / "src/tapeout") else path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12], "date": datetime.date.today().isoformat(),
            "measurements": ", ".join(f"{k} {meta[k]}" for k in ("gpu_name", "torch", "driver", "measured_on") if k in meta),
            "result": "; ".join(f"{s} MAPE {v['mape']:.1f}% max {v['max']:.1f}%" for s, v in after.items())}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="hopper")
    ap.add_argument("--chip", default="h100-sxm")
    ap.add_argument("--data", default=str(ROOT / "src/tapeout/data/calibration/h100-sxm.json"))
    ap.add_argument("--dry-run", action="store_true", help="print the fit, do not write the file")
    ap.add_argument("--loss", default="soft_l1", help="scipy least_squares loss: linear, soft_l1, cauchy")
    ap.add_argument("--generations", type=int, default=0,
                    help="differential-evolution generations before the local fit (0: refine the file's values)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--popsize", type=int, default=10, help="differential-evolution population per parameter")
    ap.add_argument("--diff-step", type=float, default=0.05, help="relative finite-difference step")
    ap.add_argument("--max-nfev", type=int, default=60, help="least-squares iterations")
    ap.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="hold a parameter fixed")
    ap.add_argument("--show", type=int, default=3, help="print the N worst entries per section")
    return ap.parse_args()


def fit(a, base, chip, data) -> dict:
    """The fitted values of FREE: optional global search, then least squares on every entry."""
    from scipy.optimize import differential_evolution, least_squares

    x0 = np.array([getattr(base, k) for k in FREE], dtype=float)
    lo, hi = np.array([b[0] for b in FREE.values()]), np.array([b[1] for b in FREE.values()])
    x0 = np.clip(x0, lo * 1.0001, hi * 0.9999)

    # The model has steps (tile counts, waves, split choices): gradients see flat regions. The global
    # search scores the reported metric: each section's mean error plus a hinge on entries off by > 20 %.
    def objective(x):
        r = [np.abs(v) for v in residuals_by_section(x, base, chip, data)]
        return sum(np.mean(v) for v in r) + sum(np.sum(np.maximum(v - 0.2, 0.0)) for v in r)
    start = x0
    if a.generations > 0:
        de = differential_evolution(objective, list(zip(lo, hi)), x0=x0, seed=a.seed, maxiter=a.generations,
                                    popsize=a.popsize, tol=1e-8, polish=False, init="sobol")
        start = min((x0, de.x), key=objective)
    ls = least_squares(residuals, start, bounds=(lo, hi), args=(base, chip, data), loss=a.loss, f_scale=0.1,
                       x_scale=np.maximum(np.abs(start), 1e-9), diff_step=a.diff_step, max_nfev=a.max_nfev)
    return dict(zip(FREE, np.clip(min((start, ls.x), key=objective), lo, hi)))


def report(a, base, values, before, data, chip) -> dict:
    p = dataclasses.replace(base, **values)
    K._CACHES.clear()
    res = predict_entries(data, chip, params=p)
    after = errors(res)
    print(f"{'section':10s} {'MAPE before':>12s} {'MAPE after':>11s} {'max after':>10s}")
    for s in after:
        print(f"{s:10s} {before[s]['mape']:11.1f}% {after[s]['mape']:10.1f}% {after[s]['max']:9.1f}%")
    skip = ("ms", "predicted_ms", "TFLOPs", "GBps", "params", "eager_ms")
    for s in SECTIONS:
        for e in sorted(res.get(s) or [], key=lambda e: -abs(e["predicted_ms"] / e["ms"] - 1))[: a.show]:
            desc = {k: v for k, v in e.items() if k not in skip}
            print(f"  worst {s}: {e['predicted_ms'] / e['ms'] - 1:+.1%}  {e['ms']:.4f} ms  {desc}")
    print("fitted:")
    for k, v in values.items():
        print(f"  {k:28s} {v:.4g}   (was {getattr(base, k):.4g}; bounds {FREE[k]})")
    return after


def main() -> None:
    a = parse_args()
    data = json.loads(Path(a.data).read_text())
    chip, base = load_chip(a.chip), load_params(a.family)
    held = {}
    for item in a.fix:  # hold a parameter at a value instead of fitting it
        name, _, val = item.partition("=")
        base = dataclasses.replace(base, **{name: type(getattr(base, name))(float(val))})
        held[name] = getattr(base, name)
        FREE.pop(name)
    before = errors(predict_entries(data, chip, params=base))
    values = fit(a, base, chip, data)
    after = report(a, base, values, before, data, chip)
    if a.dry_run:
        return
    path = ROOT / "src/tapeout/data/perf" / f"{a.family}.toml"
    write_params(path, values, held, fit_record(a, after))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
