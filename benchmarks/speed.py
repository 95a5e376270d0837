"""Speed of the performance model through the Python API.

    python benchmarks/speed.py

Goals: one decode-step estimate of an 80-layer model in <= 5 ms, and >= 1,000
full-model step estimates per second. Each timed call uses a context length not seen
before, so per-shape memoization cannot hide the work of the step.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tapeout  # noqa: E402


def main() -> None:
    tapeout.step_time("qwen2.5-72b", chip="h100-sxm", phase="decode", batch=64, context=4096)  # warm imports
    n = 300
    t = time.perf_counter()
    for i in range(n):
        tapeout.step_time("qwen2.5-72b", chip="h100-sxm", phase="decode", batch=64, context=4096 + i)
    one = (time.perf_counter() - t) / n
    print(f"decode step of qwen2.5-72b (80 layers), batch 64: {one * 1e3:.3f} ms per estimate (goal <= 5 ms)")

    models = ["llama-3.1-8b", "qwen2.5-72b", "qwen3-30b-a3b", "deepseek-v3"]
    calls, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3.0:
        for m in models:
            for phase, b, L in (("decode", 1 + calls % 256, 1000 + calls), ("prefill", 1, 128 + calls % 4096)):
                tapeout.step_time(m, chip="h100-sxm", phase=phase, batch=b, context=L, prompt=L, tp=8 if m == "deepseek-v3" else 1)
                calls += 1
    rate = calls / (time.perf_counter() - t)
    print(f"full-model step estimates (dense, MoE, MLA; prefill and decode; varying shapes): {rate:,.0f} per second (goal >= 1,000)")


if __name__ == "__main__":
    main()
