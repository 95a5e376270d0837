"""Llama-style decoder steps as IR programs, for timing LLMs on the virtual NPU.

`llama_step(config, phase, batch, length, layers)` builds one prefill or decode step in the
IR (embedding, `layers` decoder layers, final norm, LM head) from a HF config as tapeout.llm.spec
reads it (a shipped name such as "llama-3.1-8b", a config.json path or folder, or a config dict). With abstract=True the weights are
shape-only placeholders (zero-stride arrays), so an 8B model compiles and times in count-only
mode without materialising 16 GB.

Decode reads a KV cache of `length` tokens per layer (program inputs `k_cache{i}`,
`v_cache{i}`, standing for the cache after this step's append) and writes the new token's
k/v as outputs; prefill runs causal attention over the prompt and writes its k/v.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..chip import load_chip
from ..errors import TapeoutError
from ..ir import Builder
from ..ir.core import Program
from ..llm.spec import ModelSpec, load_model, spec_from_config
from .compiler import compile_ir
from .sim import simulate


def load_spec(model) -> ModelSpec:
    """A dense Llama-style model (a shipped name, a config.json path or folder, a config dict, a ModelSpec)."""
    m = spec_from_config(model, "config") if isinstance(model, dict) else load_model(model)
    if m.moe or m.mla:
        raise TapeoutError(f"model {m.name}: the NPU LLM step builds dense Llama-style decoders; "
                           f"this one has {'MoE' if m.moe else 'MLA'} layers")
    return m


def _w(b, shape, name, abstract, rng, scale=None):
    if abstract:
        return b.input(shape, "bf16", name=name)          # becomes a zero-stride const below
    s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
    return b.const((rng.standard_normal(shape) * s).astype(np.float32), name=name, dtype="bf16")


def llama_step(model, phase: str = "decode", batch: int = 1, length: int = 128, layers: int | None = None,
               abstract: bool = True, head: bool = True, seed: int = 0):
    """The IR of one step. decode: 1 new token per sequence, `length` cached; prefill: `length` tokens."""
    m = load_spec(model)
    H, nh, nkv, D, inter, V, eps = m.hidden, m.heads, m.kv_heads, m.head_dim, m.intermediate, m.vocab, m.norm_eps
    nl = m.layers if layers is None else layers
    if phase not in ("decode", "prefill"):
        raise TapeoutError(f"phase {phase!r}: decode or prefill")
    for what, v, hi in (("batch", batch, None), ("length", length, None), ("layers", nl, m.layers)):
        if not 1 <= v <= (hi or v):
            raise TapeoutError(f"{what}: must be between 1 and {hi} for {m.name}, got {v}" if hi else
                               f"{what}: must be >= 1, got {v}")
    L = 1 if phase == "decode" else length
    rng = np.random.default_rng(seed)
    b = Builder(f"{m.name}-{phase}")
    ids = b.input((batch, L), "i64", name="ids")
    emb = _w(b, (V, H), "embed", abstract, rng, 1.0)
    x = b.gather(emb, ids, axis=0)                                  # [B, L, H]
    cos = b.input((L, D), "bf16", name="cos")
    sin = b.input((L, D), "bf16", name="sin")
    kv_out = []
    for i in range(nl):
        x, kv = _layer(b, x, i, (batch, L, H, nh, nkv, D, inter, eps), cos, sin, phase, length, abstract, rng)
        kv_out += kv
    outs = [x]
    if head:
        x = b.rms_norm(x, _w(b, (H,), "norm", abstract, rng, 0.0) if abstract else
                       b.const(np.ones(H, np.float32), name="norm", dtype="bf16"), axes=(-1,), eps=eps)
        outs = [b.linear(x, _w(b, (V, H), "lm_head", abstract, rng))]
    prog = b.build(*outs, *kv_out)
    return _abstract_weights(prog) if abstract else prog


def _layer(b, x, i, dims, cos, sin, phase, length, abstract, rng):
    B, L, H, nh, nkv, D, inter, eps = dims
    ones = (lambda n, nm: _w(b, (n,), nm, True, rng)) if abstract else \
        (lambda n, nm: b.const(np.ones(n, np.float32), name=nm, dtype="bf16"))
    h = b.rms_norm(x, ones(H, f"in_norm{i}"), axes=(-1,), eps=eps)
    qkv = b.linear(h, _w(b, ((nh + 2 * nkv) * D, H), f"wqkv{i}", abstract, rng))    # one fused projection
    cut = (0, nh * D, (nh + nkv) * D, (nh + 2 * nkv) * D)                         # (vLLM's QKVParallelLinear)
    q, k, v = (b.slice(qkv, starts=(0, 0, cut[j]), stops=(None, None, cut[j + 1])) for j in range(3))
    heads = lambda t, n: b.transpose(b.reshape(t, shape=(B, L, n, D)), perm=(0, 2, 1, 3))
    q, k, v = _rope(b, heads(q, nh), cos, sin, D), _rope(b, heads(k, nkv), cos, sin, D), heads(v, nkv)
    if phase == "decode":
        kc = b.input((B, nkv, length, D), "bf16", name=f"k_cache{i}")
        vc = b.input((B, nkv, length, D), "bf16", name=f"v_cache{i}")
        a = b.attention(q, kc, vc)
    else:
        a = b.attention(q, k, v, causal=True)
    a = b.reshape(b.transpose(a, perm=(0, 2, 1, 3)), shape=(B, L, nh * D))
    x = b.add(x, b.linear(a, _w(b, (H, nh * D), f"wo{i}", abstract, rng)))
    h = b.rms_norm(x, ones(H, f"post_norm{i}"), axes=(-1,), eps=eps)
    g = b.silu(b.linear(h, _w(b, (inter, H), f"wg{i}", abstract, rng)))
    u = b.mul(g, b.linear(h, _w(b, (inter, H), f"wu{i}", abstract, rng)))
    x = b.add(x, b.linear(u, _w(b, (H, inter), f"wd{i}", abstract, rng)))
    return x, [k, v]


def _rope(b, t, cos, sin, D):
    """t * cos + rotate_half(t) * sin (HF Llama); cos/sin [L, D] broadcast over batch and heads."""
    x1 = b.slice(t, starts=(0, 0, 0, 0), stops=(None, None, None, D // 2))
    x2 = b.slice(t, starts=(0, 0, 0, D // 2), stops=(None, None, None, None))
    rot = b.concat(b.neg(x2), x1, axis=3)
    return b.add(b.mul(t, cos), b.mul(rot, sin))


def rope_tables(model, L: int, start: int = 0):
    """The cos/sin inputs [L, head_dim] of a step at positions start..start+L-1 (the model's rope_theta)."""
    m = load_spec(model)
    D, theta = m.head_dim, m.rope_theta
    inv = 1.0 / theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
    ang = np.outer(np.arange(start, start + L), inv)
    emb = np.concatenate([ang, ang], axis=1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _abstract_weights(prog):
    """Turn the weight inputs (everything but ids, cos, sin and the caches) into zero-stride consts."""
    keep = tuple(v for v in prog.inputs if v.name in ("ids", "cos", "sin") or "cache" in v.name)
    consts = {v.name: np.broadcast_to(np.zeros((), ml_dtypes.bfloat16), v.shape)
              for v in prog.inputs if v not in keep}
    return Program(keep, consts, prog.eqns, prog.outputs, prog.name)


def npu_step_stats(model, chip="tapeout-n7", phase="decode", batch=1, length=128, layers=None, dtype="bf16",
                   head=True) -> dict:
    """Count-only simulation of one LLM step on the NPU: the stats dict (cycles, seconds, ...)."""
    ir = llama_step(model, phase, batch, length, layers, abstract=True, head=head)
    prog = compile_ir(ir, load_chip(chip), dtype)
    return simulate(prog, (), count_only=True).stats
