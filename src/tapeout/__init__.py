"""tapeout: build an AI inference chip in software and measure it against NVIDIA.

The core imports only numpy and ml_dtypes. The heavier parts of the API are loaded on first
use, so `import tapeout` stays fast and works without torch, onnx, transformers or ray:

    >>> import tapeout
    >>> tapeout.load_chip("h100-sxm").peak_flops("bf16") > 9e14
    True
"""
from __future__ import annotations

from importlib import import_module

from .chip import Chip, load_chip, preset_names
from .errors import TapeoutError

__version__ = "0.1.0"

# public name -> (module, name there), imported lazily on first access
_LAZY = {
    "estimate": ("tapeout.perf.api", "estimate"),
    "step_time": ("tapeout.perf.api", "step_time"),
    "compile": ("tapeout.npu.api", "compile"),
    "simulate_serving": ("tapeout.serve.api", "serve"),
}

__all__ = ["Chip", "TapeoutError", "load_chip", "preset_names", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tapeout' has no attribute {name!r}")
    mod, attr = _LAZY[name]
    value = getattr(import_module(mod), attr)
    globals()[name] = value
    return value
