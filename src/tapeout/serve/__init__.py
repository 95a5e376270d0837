"""Serving simulator: requests, schedulers, paged KV cache and multi-chip replicas over one seam.

The simulator's only view of performance is the step time of a batch (`tapeout.perf.api.batch_time`,
wrapped with memoization in `steptime.py`); everything else is bookkeeping of requests, memory and
time. The public entry point is `tapeout.serve(...)` (serve/api.py).

`tapeout.serve` is both this package and the function: once any `tapeout.serve.*` module is
imported, Python binds the package to `tapeout.serve`, so the package itself is made callable
(it forwards to `tapeout.serve.api.serve`) and `tapeout.serve(...)` works in every import order.
"""
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import serve

        return serve(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
