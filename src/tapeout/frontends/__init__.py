"""Frontends: PyTorch (torch.export), ONNX, Hugging Face configs -> IR Program.

`load(model_or_path, example_inputs=None)` picks one:
- a torch.nn.Module (needs example_inputs: a tensor or tuple) -> `from_torch`
- a path ending in .onnx -> `from_onnx`
- a dict HF config with "model_type", or a path ending in .json -> `from_hf_config`
  (example_inputs: token ids [B, L], default [1, 8])
Heavy libraries are imported only by the frontend that needs them.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TapeoutError


def load(model_or_path, example_inputs=None, **kw):
    """Any supported model description -> IR Program (see module docstring)."""
    if isinstance(model_or_path, dict):
        from .hf import from_hf_config
        return from_hf_config(model_or_path, example_inputs, **kw)
    if isinstance(model_or_path, (str, Path)):
        p = Path(model_or_path)
        if p.suffix == ".onnx":
            from .onnx_import import from_onnx
            return from_onnx(p, **kw)
        if p.suffix == ".json":
            from .hf import from_hf_config
            return from_hf_config(p, example_inputs, **kw)
        raise TapeoutError(f"{p}: unknown model file type (want .onnx or a HF config .json)")
    if type(model_or_path).__module__.startswith(("torch", "transformers")) or hasattr(model_or_path, "forward"):
        if example_inputs is None:
            raise TapeoutError(f"{type(model_or_path).__name__}: a torch module needs example_inputs")
        from .torch_export import from_torch
        return from_torch(model_or_path, example_inputs, **kw)
    raise TapeoutError(f"cannot load a model from {type(model_or_path).__name__}")


def from_torch(*a, **kw):
    from .torch_export import from_torch as f
    return f(*a, **kw)


def from_onnx(*a, **kw):
    from .onnx_import import from_onnx as f
    return f(*a, **kw)


def from_hf_config(*a, **kw):
    from .hf import from_hf_config as f
    return f(*a, **kw)


__all__ = ["load", "from_torch", "from_onnx", "from_hf_config"]
