"""How fast the serving simulator runs: 10,000 requests on one 8-chip replica (goal: <= 10 s).

    .venv/bin/python benchmarks/serve_speed.py [--requests 10000] [--model llama-3.1-70b] [--chip h100-sxm]

Prints wall time, simulated time, steps and the number of distinct step-time evaluations (calls
through the performance-model seam; every other step is a memo hit).
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--model", default="llama-3.1-70b")
    ap.add_argument("--chip", default="h100-sxm")
    ap.add_argument("--scheduler", default="continuous")
    ap.add_argument("--rate", type=float, default=20.0, help="Poisson rate (req/s); 0 = offline")
    args = ap.parse_args()
    import tapeout

    t0 = time.perf_counter()
    r = tapeout.simulate_serving(args.model, args.chip, chips=8, tp=8, weights="fp8", workload="chat", requests=args.requests,
                      rate=args.rate or None, offline=not args.rate, scheduler=args.scheduler, seed=0)
    wall = time.perf_counter() - t0
    m = r.metrics
    steps = len(r.records.steps)
    print(f"{args.requests} requests, {args.model} on 8x {args.chip} (tp=8, fp8, {args.scheduler}, "
          f"{'offline' if not args.rate else f'{args.rate:g} req/s'})")
    print(f"  wall time        {wall:.2f} s   (target <= 10 s)")
    print(f"  simulated time   {m['makespan_s']:.1f} s, {steps} steps, {steps / wall:,.0f} steps/s")
    print(f"  seam calls       {m['timer_calls']} run_batch evaluations ({m['timer_calls'] / steps:.1%} of steps)")
    print(f"  throughput       {m['throughput_tok_s']:,.0f} tok/s, TTFT p99 {m['ttft_s']['p99']:.2f} s, "
          f"TPOT p99 {m['tpot_s']['p99'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
