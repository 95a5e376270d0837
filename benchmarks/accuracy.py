"""Accuracy of the performance model against measured GPU timings.

    python benchmarks/accuracy.py                  # the shipped H100 file, per-section errors
    python benchmarks/accuracy.py FILE --chip C    # any file in the calibration format
    python benchmarks/accuracy.py --worst 5        # also list the worst entries per section

Prints MAPE, median and max absolute percentage error per section (gemm, attention, memory,
llm) as `tapeout predict` computes them. Goal: MAPE <= 7 % in each section and no
entry off by more than 25 % on the H100 calibration file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tapeout.perf.predict import SECTIONS, errors, predict_entries  # noqa: E402


def describe(e: dict) -> str:
    skip = {"ms", "predicted_ms", "TFLOPs", "GBps", "params", "eager_ms", "dtype"}
    return " ".join(f"{k}={v}" for k, v in e.items() if k not in skip)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", default=str(ROOT / "src/tapeout/data/calibration/h100-sxm.json"))
    ap.add_argument("--chip", default="h100-sxm")
    ap.add_argument("--worst", type=int, default=0)
    a = ap.parse_args()
    data = json.loads(Path(a.file).read_text())
    res = predict_entries(data, a.chip)
    stats = errors(res)
    print(f"accuracy of tapeout's performance model on {Path(a.file).name} (chip {a.chip})")
    print(f"{'section':10s} {'entries':>7s} {'MAPE':>7s} {'median':>7s} {'max':>7s}  goal: MAPE <= 7 %, max <= 25 %")
    ok = True
    for s, v in stats.items():
        passed = v["mape"] <= 7 and v["max"] <= 25
        ok &= passed
        missing = f" ({v['unpredicted']} unpredicted)" if v["unpredicted"] else ""
        print(f"{s:10s} {v['measured']:7d} {v['mape']:6.1f}% {v['median']:6.1f}% {v['max']:6.1f}%  "
              f"{'ok' if passed else 'MISSED'}{missing}")
    for s in SECTIONS if a.worst else ():
        es = sorted((e for e in res.get(s) or [] if e.get("ms") and e.get("predicted_ms")),
                    key=lambda e: -abs(e["predicted_ms"] / e["ms"] - 1))[: a.worst]
        for e in es:
            print(f"  {s:9s} {100 * (e['predicted_ms'] / e['ms'] - 1):+6.1f}%  measured {e['ms']:.4f} ms  {describe(e)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
