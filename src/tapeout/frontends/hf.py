"""Hugging Face causal LMs built locally from a config (random weights, never downloaded).

    prog = from_hf_config({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, ...})

The model is built with a fixed seed, in eval mode, use_cache=False, and exported through
`from_torch`; the program's single input is token ids [batch, seq] (i64) and its single
output the logits [batch, seq, vocab].
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import TapeoutError

# model_type -> (config class, causal-LM class) in transformers
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
}
_IR_TO_TORCH = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def read_config(config) -> dict:
    """A config dict, or the path of a HF config.json."""
    if isinstance(config, dict):
        return dict(config)
    try:
        return json.loads(Path(config).read_text())
    except (OSError, ValueError) as e:
        raise TapeoutError(f"{config}: cannot read HF config: {e}") from None


def build_hf_model(config, seed: int = 0, dtype: str = "f32", attn_implementation: str = "sdpa"):
    """An nn.Module (eval mode) for the config with seeded random weights."""
    import torch
    import transformers
    cfg = read_config(config)
    mtype = cfg.pop("model_type", None)
    if mtype not in ARCHS:
        raise TapeoutError(f"HF config: model_type {mtype!r} not supported (have {', '.join(ARCHS)})")
    if dtype not in _IR_TO_TORCH:
        raise TapeoutError(f"HF config: dtype {dtype!r} not supported (have {', '.join(_IR_TO_TORCH)})")
    cfg_cls, model_cls = (getattr(transformers, n) for n in ARCHS[mtype])
    cfg.pop("architectures", None)
    cfg.pop("torch_dtype", None)
    cfg.update(use_cache=False)
    try:
        hf_cfg = cfg_cls(**cfg)
    except (TypeError, ValueError) as e:
        raise TapeoutError(f"HF config ({mtype}): {e}") from None
    hf_cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_cls(hf_cfg).eval()
    return model.to(getattr(torch, _IR_TO_TORCH[dtype]))


def logits_only(model):
    """Wrap a causal LM so that export sees `input_ids -> logits` (no cache, no dict output)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits
    return LogitsOnly(model)


def example_ids(config, batch: int = 1, seq: int = 8, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    vocab = read_config(config).get("vocab_size", 32000)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def from_hf_config(config, example_inputs=None, seed: int = 0, dtype: str = "f32", seq: int = 8):
    """Program for a HF causal LM config; example_inputs = token ids [B, L] (default [1, seq])."""
    from .torch_export import from_torch
    model = build_hf_model(config, seed=seed, dtype=dtype)
    ids = example_ids(config, seq=seq, seed=seed) if example_inputs is None else example_inputs
    ids = ids[0] if isinstance(ids, tuple) else ids
    name = read_config(config).get("model_type", "hf")
    return from_torch(logits_only(model), (ids,), name=name)
