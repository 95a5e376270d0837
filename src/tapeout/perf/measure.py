"""`tapeout measure`: time this machine's GPU in the calibration format, to calibrate to your own card.

Measures GEMMs (bf16, fp16, fp8 where the card has it), SDPA attention (prefill and decode),
memory-bound kernels (add, copy, softmax, rms_norm, an empty kernel alone and inside a CUDA
graph) and whole decode/prefill steps of a plain PyTorch Llama-style model replayed from CUDA
graphs, with the same conventions as the shipped H100 file: median of repeated runs, the L2
flushed before every kernel call (weights come from DRAM, as in inference).

Needs PyTorch with CUDA; without a GPU it stops with one clear line. `allow_cpu=True` runs the
same code on the CPU with tiny shapes (to test the pipeline, not to calibrate).
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from ..errors import TapeoutError

FLUSH_BYTES = 256 * 1000 * 1000


class _Bench:
    def __init__(self, torch, device: str, budget_s: float):
        self.torch, self.dev, self.t0, self.budget = torch, device, time.time(), budget_s
        self.flush = torch.empty(FLUSH_BYTES // 4 if device == "cuda" else 1024, dtype=torch.int32, device=device)

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def sync(self):
        if self.dev == "cuda":
            self.torch.cuda.synchronize()

    def time_ms(self, fn, reps: int = 25, flush: bool = True) -> float:
        """Median milliseconds of fn(), with the cache flushed before each call."""
        torch = self.torch
        fn(); self.sync()
        out = []
        for _ in range(reps):
            if flush:
                self.flush.zero_()
            if self.dev == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record(); fn(); b.record(); b.synchronize()
                out.append(a.elapsed_time(b))
            else:
                t = time.perf_counter(); fn(); out.append((time.perf_counter() - t) * 1e3)
        return statistics.median(out)


def _gemms(b: _Bench, quick: bool, fp8: bool) -> list[dict]:
    torch, F = b.torch, b.torch.nn.functional
    cpu = b.dev != "cuda"
    cases = [(s, s, s, "bfloat16", "square") for s in ([64, 128] if cpu else [512, 1024, 2048, 4096, 8192])]
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
    if cpu:
        shapes = {"tiny": (256, 128)}
    for layer, (N, K) in shapes.items():
        for M in ([1, 16] if cpu or quick else [1, 16, 128, 1024, 4096]):
            cases.append((M, N, K, "bfloat16", f"llama-3.1-8b:{layer}" if not cpu else layer))
    if fp8 and not cpu:
        cases += [(s, s, s, "fp8_e4m3", "square") for s in (1024, 4096, 8192)]
    out = []
    for M, N, K, dt, tag in cases[: 4 if quick else None]:
        if b.left() < 5:
            break
        x = torch.randn(M, K, device=b.dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=b.dev, dtype=torch.bfloat16)
        if dt == "fp8_e4m3":
            xf, wf = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            one = torch.ones((), device=b.dev)
            fn = lambda: torch._scaled_mm(xf, wf.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        else:
            x, w = x.to(getattr(torch, dt)), w.to(getattr(torch, dt))
            fn = lambda: F.linear(x, w)
        out.append({"M": M, "N": N, "K": K, "dtype": dt, "tag": tag, "ms": b.time_ms(fn)})
    return out


def _attention(b: _Bench, quick: bool) -> list[dict]:
    torch, F = b.torch, b.torch.nn.functional
    cpu = b.dev != "cuda"
    hq, hkv, d = (4, 2, 32) if cpu else (32, 8, 128)
    cases = [(1, s, s, True) for s in ([64] if cpu else [1024, 4096, 16384])]
    cases += [(B, 1, c, False) for B, c in ([(2, 128)] if cpu else [(1, 4096), (8, 4096), (64, 4096), (32, 16384)])]
    out = []
    for B, Sq, Skv, causal in cases[: 2 if quick else None]:
        if b.left() < 5:
            break
        q = torch.randn(B, hq, Sq, d, device=b.dev, dtype=torch.bfloat16)
        k = torch.randn(B, hkv, Skv, d, device=b.dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        out.append({"B": B, "S_q": Sq, "S_kv": Skv, "heads_q": hq, "heads_kv": hkv, "head_dim": d,
                    "causal": causal, "dtype": "bfloat16", "ms": b.time_ms(fn)})
    return out


def _memory(b: _Bench, quick: bool) -> list[dict]:
    torch, F = b.torch, b.torch.nn.functional
    cpu = b.dev != "cuda"
    out = []
    for n in ([1 << 12, 1 << 16] if cpu else [1 << 16, 1 << 20, 1 << 24, 1 << 28])[: 2 if quick else None]:
        x = torch.randn(n, device=b.dev, dtype=torch.bfloat16); y = torch.randn_like(x)
        out.append({"op": "add", "elements": n, "dtype": "bfloat16", "ms": b.time_ms(lambda: x + y)})
        out.append({"op": "copy", "elements": n, "dtype": "bfloat16", "ms": b.time_ms(lambda: x.clone())})
    for rows, cols in ([(64, 256)] if cpu else [(4096, 4096), (16384, 8192)]):
        x = torch.randn(rows, cols, device=b.dev, dtype=torch.bfloat16)
        w = torch.ones(cols, device=b.dev, dtype=torch.bfloat16)
        out.append({"op": "softmax", "rows": rows, "cols": cols, "dtype": "bfloat16", "ms": b.time_ms(lambda: torch.softmax(x, -1))})
        out.append({"op": "rms_norm", "rows": rows, "cols": cols, "dtype": "bfloat16",
                    "ms": b.time_ms(lambda: F.rms_norm(x, (cols,), w, 1e-6))})
    t = torch.zeros(1, device=b.dev)
    out.append({"op": "tiny_kernel_eager", "ms": b.time_ms(lambda: t.add_(1), flush=False)})
    if b.dev == "cuda":
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            t.add_(1)
        b.sync()
        with torch.cuda.graph(g):
            for _ in range(100):
                t.add_(1)
        out.append({"op": "tiny_kernel_in_graph_per_kernel", "ms": b.time_ms(g.replay, flush=False) / 100})
    return out


def _llm(b: _Bench, quick: bool) -> list[dict]:
    from .measure_model import TinyLlama, time_step

    cpu = b.dev != "cuda"
    name = "tiny" if cpu else "llama-3.1-8b"
    m = TinyLlama.build(b.torch, name, b.dev)
    out = []
    for phase, B, L in ([("decode", 1, 64), ("prefill", 1, 32)] if cpu else
                        [("decode", 1, 1024), ("decode", 16, 2048), ("decode", 64, 1024), ("prefill", 1, 512), ("prefill", 1, 2048)]):
        if b.left() < 10 or (quick and len(out) >= 2):
            break
        ms = time_step(b.torch, m, phase, B, L, b.dev)
        e = {"model": name, "phase": phase, "batch": B, ("context" if phase == "decode" else "seq"): L,
             "ms": ms, "implementation": "pytorch-cudagraph" if not cpu else "pytorch-eager"}
        out.append(e)
    return out


def measure(out: Path, budget_s: float = 300.0, quick: bool = False, allow_cpu: bool = False) -> int:
    """Measure and write `out`; returns the number of entries. Raises TapeoutError without a GPU."""
    try:
        import torch
    except ImportError:
        raise TapeoutError("tapeout measure needs PyTorch with CUDA: pip install torch (a CUDA build)") from None
    if not torch.cuda.is_available() and not allow_cpu:
        raise TapeoutError("no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False): nothing to measure")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    b = _Bench(torch, dev, budget_s)
    meta = {"device": dev, "torch": torch.__version__, "host": platform.node(),
            "measured_on": time.strftime("%Y-%m-%d"), "method": "tapeout measure (src/tapeout/perf/measure.py)"}
    if dev == "cuda":
        p = torch.cuda.get_device_properties(0)
        meta.update(gpu_name=p.name, multiprocessors=p.multi_processor_count, memory_bytes=p.total_memory,
                    l2_bytes=getattr(p, "L2_cache_size", None))
    fp8 = dev == "cuda" and torch.cuda.get_device_capability(0) >= (8, 9)
    res = {"meta": meta, "gemm": [], "attention": [], "memory": [], "llm": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for key, fn in (("gemm", lambda: _gemms(b, quick, fp8)), ("attention", lambda: _attention(b, quick)),
                        ("memory", lambda: _memory(b, quick)), ("llm", lambda: _llm(b, quick))):
            res[key] = fn()
            out.write_text(json.dumps(res, indent=1))  # after each section: an interrupted run keeps what it has
    return sum(len(res[k]) for k in ("gemm", "attention", "memory", "llm"))
