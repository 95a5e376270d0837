"""How fast a design-space sweep runs with the analytic estimator (goal: >= 1,000 points/min on 2 cores).

    .venv/bin/python benchmarks/sweep_speed.py [--points 3000] [--workers 2] [--space inference-7nm]

Runs a fresh sweep (a temporary results file, nothing reused) over `--points` points drawn from the
study's space: every point is derived, checked (reticle, TDP at the lowest clock, memory), and
scored on both workloads (Qwen2.5-72B on 4/8-chip TP, DeepSeek-V3 on 8/16-chip EP x TP). Prints
points per minute, the feasible share and the per-point evaluation time.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--space", default="inference-7nm")
    ap.add_argument("--goal", type=float, default=1000.0, help="the goal in points per minute")
    args = ap.parse_args()
    from tapeout.dse.space import load_space
    from tapeout.dse.sweep import run_sweep

    sp = load_space(args.space)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = run_sweep(sp, d, workers=args.workers, sample=args.points)
        wall = time.perf_counter() - t0
    n = len(res.records)
    feas = res.feasible
    rate = n / wall * 60
    per = statistics.median(r["eval_s"] for r in feas) * 1e3 if feas else float("nan")
    print(f"sweep {sp.name}: {n} points ({len(feas)} feasible, {len(res.front)} on the front), "
          f"{len(sp.workloads)} workloads, analytic estimator, {args.workers} workers")
    print(f"wall {wall:.1f} s (including process start) -> {rate:,.0f} points/min; "
          f"median {per:.1f} ms per feasible point in one worker")
    print(f"goal >= {args.goal:,.0f} points/min: {'met' if rate >= args.goal else 'NOT met'}")


if __name__ == "__main__":
    main()
