"""A plain PyTorch Llama-style decoder with random weights, for `tapeout measure`'s LLM steps.

The kernel sequence matches tapeout's `pytorch-cudagraph` implementation (tapeout.llm.kernels):
per layer rms_norm, fused QKV linear, RoPE from slices and cat, KV-cache write, SDPA, O linear,
residual add, rms_norm, fused gate+up linear, SiLU, multiply, down linear, residual add.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class TinyLlama:
    cfg: tuple
    weights: dict

    @staticmethod
    def build(torch, name: str, device: str) -> "TinyLlama":
        if name == "tiny":
            cfg = (256, 2, 4, 2, 64, 512, 1000)
        else:
            from ..llm.spec import load_model

            s = load_model(name)
            cfg = (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab)
        h, L, nq, nkv, d, inter, vocab = cfg
        kw = dict(device=device, dtype=torch.bfloat16)
        r = lambda *shape: torch.empty(*shape, **kw).normal_(0, 0.02)
        w = {"embed": r(vocab, h), "norm": torch.ones(h, **kw), "lm_head": r(vocab, h),
             "layers": [{"ln1": torch.ones(h, **kw), "ln2": torch.ones(h, **kw), "qkv": r((nq + 2 * nkv) * d, h),
                         "o": r(h, nq * d), "gu": r(2 * inter, h), "down": r(h, inter)} for _ in range(L)]}
        return TinyLlama(cfg, w)

    def forward(self, torch, tokens, pos, caches=None, ctx=0):
        F = torch.nn.functional
        h, L, nq, nkv, d, inter, vocab = self.cfg
        B, S = tokens.shape
        x = self.weights["embed"][tokens]
        for i, l in enumerate(self.weights["layers"]):
            q, k, v = F.linear(F.rms_norm(x, (h,), l["ln1"], 1e-6), l["qkv"]).split([nq * d, nkv * d, nkv * d], -1)
            q = _rope(torch, q.view(B, S, nq, d).transpose(1, 2), pos, d)
            k = _rope(torch, k.view(B, S, nkv, d).transpose(1, 2), pos, d)
            v = v.view(B, S, nkv, d).transpose(1, 2)
            if caches is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                kc, vc = caches[i]
                kc[:, :, ctx:ctx + 1].copy_(k); vc[:, :, ctx:ctx + 1].copy_(v)
                a = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, S, nq * d), l["o"])
            g, u = F.linear(F.rms_norm(x, (h,), l["ln2"], 1e-6), l["gu"]).chunk(2, -1)
            x = x + F.linear(F.silu(g) * u, l["down"])
        x = F.rms_norm(x[:, -1], (h,), self.weights["norm"], 1e-6)
        return F.linear(x, self.weights["lm_head"]).argmax(-1)


def _rope(torch, x, pos, d):
    inv = 1.0 / (1e6 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def step_fn(torch, m: TinyLlama, phase: str, B: int, L: int, device: str, graph: bool = True):
    """A callable running one step (replaying a CUDA graph of it on a GPU unless `graph` is False)."""
    h, layers, nq, nkv, d, inter, vocab = m.cfg
    if phase == "decode":
        caches = [tuple(torch.randn(B, nkv, L + 1, d, device=device, dtype=torch.bfloat16) for _ in range(2))
                  for _ in range(layers)]
        tok, pos = torch.randint(0, vocab, (B, 1), device=device), torch.tensor([L], device=device)
        fn = lambda: m.forward(torch, tok, pos, caches, L)
    else:
        tok, pos = torch.randint(0, vocab, (B, L), device=device), torch.arange(L, device=device)
        fn = lambda: m.forward(torch, tok, pos)
    if device != "cuda" or not graph:
        return fn
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(); fn()
    torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def time_step(torch, m: TinyLlama, phase: str, B: int, L: int, device: str) -> float:
    """Milliseconds of one step, replayed from a CUDA graph on a GPU (median of 5 x 5 replays)."""
    run = step_fn(torch, m, phase, B, L, device)
    if device != "cuda":
        import time

        run()
        ts = []
        for _ in range(3):
            t = time.perf_counter(); run(); ts.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ts)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(5):
            run()
        b.record(); b.synchronize()
        times.append(a.elapsed_time(b) / 5)
    return statistics.median(times)
