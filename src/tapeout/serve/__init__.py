"""Serving simulator: requests, schedulers, paged KV cache and multi-chip replicas over one seam.

The simulator's only view of performance is the step time of a batch (`tapeout.perf.api.batch_time`,
wrapped with memoization in `steptime.py`); everything else is bookkeeping of requests, memory and
time. The public entry point is `tapeout.simulate_serving(...)` (`serve` in serve/api.py).
"""
