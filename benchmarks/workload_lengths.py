"""The MLPerf workloads' length statistics, recomputed from the benchmark sets' per-sample token counts.

    python benchmarks/workload_lengths.py          # one table per set, beside data/serve/workloads.toml

benchmarks/data/mlperf-lengths/*.csv hold one row per sample (input_length, output_length), as
extracted from MLCommons' preprocessed sets (source in that folder's README). The serving
simulator draws log-normal lengths with the mean, CV and bounds printed here
(src/tapeout/data/serve/workloads.toml); tests/test_serve_workload.py checks that they agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks/data/mlperf-lengths"
# workload name in data/serve/workloads.toml -> per-sample file
SETS = {"mlperf-llama2": "llama2-70b.csv", "mlperf-mixtral": "mixtral-8x7b.csv",
        "mlperf-llama3.1-405b": "llama3.1-405b.csv"}


def stats(path: Path) -> dict:
    """Mean, CV, min, median, p90 and max of the input and output lengths of one per-sample file."""
    d = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    out = {"samples": len(d)}
    for col, name in ((0, "prompt"), (1, "output")):
        x = d[:, col]
        out[name] = {"mean": float(x.mean()), "cv": float(x.std() / x.mean()), "min": int(x.min()),
                     "p50": float(np.median(x)), "p90": float(np.percentile(x, 90)), "max": int(x.max())}
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from tapeout.serve.data import table

    w = table("workloads")
    print("| workload | samples | | mean | cv | min | p50 | p90 | max | workloads.toml mean / cv / min / max |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for name, fn in SETS.items():
        s = stats(DATA / fn)
        for part in ("prompt", "output"):
            x = s[part]
            shipped = " / ".join(f"{w[name][f'{part}_{k}']:g}" for k in ("mean", "cv", "min", "max"))
            print(f"| {name} | {s['samples']:,} | {part} | {x['mean']:.2f} | {x['cv']:.3f} | {x['min']} | "
                  f"{x['p50']:.0f} | {x['p90']:.0f} | {x['max']} | {shipped} |")


if __name__ == "__main__":
    main()
