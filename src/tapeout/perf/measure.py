"""`tapeout measure`: time this machine's GPU in the calibration format, to calibrate to your own card.

Measures GEMMs (bf16, fp16, fp8 where the card has it), SDPA attention (prefill and decode),
memory-bound kernels (add, copy, softmax, rms_norm, an empty kernel alone and inside a CUDA
graph) and whole decode/prefill steps of a plain PyTorch Llama-style model replayed from CUDA
graphs, with the same conventions as the shipped H100 file: median of repeated runs, the L2
flushed before every kernel call (weights come from DRAM, as in inference). Then two sections of
evidence for what the model cannot see from outside: `in_step`, prefill steps profiled kernel by
kernel next to their layer GEMMs timed alone, and `power`, the shipped file's power entries (board
power and SM clock under nvidia-smi) with the share of samples each clock-event reason was active.

Needs PyTorch with CUDA; without a GPU it stops with one clear line. `allow_cpu=True` runs the
same code on the CPU with tiny shapes (to test the pipeline, not to calibrate).
"""
from __future__ import annotations

import functools
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


# ---- where a step's time goes, and the board's power: the evidence docs/validation.md asks for

def _kernel_class(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "xmma", "cutlass", "nvjet", "aten::mm", "aten::addmm", "aten::bmm", "cublas")):
        return "gemm"
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    return "other"


def _profile_kernels(torch, run, reps: int, cuda: bool) -> dict[str, float]:
    """Device milliseconds per call of `run` by kernel name (CPU: self time of each ATen op)."""
    from torch.profiler import ProfilerActivity, profile

    run()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(reps):
            run()
        if cuda:
            torch.cuda.synchronize()
    per: dict[str, float] = {}
    for e in prof.events():
        if cuda and e.device_type == torch.autograd.DeviceType.CUDA:
            t = e.device_time_total
        elif not cuda and e.name.startswith("aten::"):
            t = e.self_cpu_time_total
        else:
            continue
        per[e.name] = per.get(e.name, 0.0) + t / 1e3 / reps
    return per


def _in_step(b: _Bench, quick: bool) -> list[dict]:
    """A prefill step profiled kernel by kernel (replayed from its CUDA graph), next to its four layer
    GEMMs timed alone the usual way (L2 flushed, median): whether the GEMMs run slower inside the step
    than alone, the long-prefill gap of docs/validation.md."""
    from .measure_model import TinyLlama, step_fn

    torch, F = b.torch, b.torch.nn.functional
    cuda = b.dev == "cuda"
    name = "llama-3.1-8b" if cuda else "tiny"
    m = TinyLlama.build(torch, name, b.dev)
    h, layers = m.cfg[0], m.cfg[1]
    out = []
    for S in ([2048] if quick else [512, 2048, 4096]) if cuda else [32]:
        if b.left() < 20:
            break
        how = "cuda-graph" if cuda else "cpu-eager"
        per = _profile_kernels(torch, step_fn(torch, m, "prefill", 1, S, b.dev), 3, cuda)
        if cuda and not per:     # a profiler that does not see the kernels inside a graph: time them eagerly
            how, per = "eager", _profile_kernels(torch, step_fn(torch, m, "prefill", 1, S, b.dev, graph=False), 3, cuda)
        by_class: dict[str, float] = {}
        for k, ms in per.items():
            by_class[_kernel_class(k)] = by_class.get(_kernel_class(k), 0.0) + ms
        x = torch.randn(S, h, device=b.dev, dtype=torch.bfloat16)
        alone = 0.0
        for key in ("qkv", "o", "gu", "down"):
            w = m.weights["layers"][0][key]
            a = x if w.shape[1] == h else torch.randn(S, w.shape[1], device=b.dev, dtype=torch.bfloat16)
            alone += b.time_ms(lambda: F.linear(a, w)) * layers
        top = sorted(per.items(), key=lambda kv: -kv[1])[:12]
        out.append({"model": name, "phase": "prefill", "seq": S, "profiled": how,
                    "kernels_ms": round(sum(per.values()), 4), "by_class_ms": {k: round(v, 4) for k, v in by_class.items()},
                    "layer_gemms_alone_ms": round(alone, 4),
                    "top_kernels": [{"name": k[:120], "ms": round(v, 4)} for k, v in top]})
    return out


POWER_QUERY = ("power.draw", "clocks.sm", "temperature.gpu", "clocks_event_reasons.sw_power_cap",
               "clocks_event_reasons.hw_slowdown", "clocks_event_reasons.hw_power_brake_slowdown",
               "clocks_event_reasons.sw_thermal_slowdown")


@functools.lru_cache(maxsize=1)
def _power_fields() -> tuple[str, ...]:
    """POWER_QUERY, or power and clock only on drivers older than the clocks_event_reasons names."""
    import subprocess

    ok = subprocess.run(["nvidia-smi", "--query-gpu=" + ",".join(POWER_QUERY), "--format=csv", "-i", "0"],
                        capture_output=True).returncode == 0
    return POWER_QUERY if ok else POWER_QUERY[:3]


def _sample_power(b: _Bench, fn, seconds: float) -> dict:
    """Run fn in a loop for `seconds` while nvidia-smi samples power, SM clock and the clock-event
    reasons every 100 ms (the calibration file's power entries, plus the share of samples each
    reason was active: a power-brake or hardware slowdown the SM clock does not show)."""
    import subprocess

    p = subprocess.Popen(["nvidia-smi", "--query-gpu=" + ",".join(_power_fields()), "--format=csv,noheader,nounits",
                          "-i", "0", "-lms", "100"], stdout=subprocess.PIPE, text=True)
    n, t = 0, time.time()
    while time.time() - t < seconds:
        fn(); n += 1
        if n % 4 == 0:
            b.sync()
    b.sync(); el = time.time() - t
    p.terminate(); text = p.communicate()[0]
    return power_entry(text, n, el)


def power_entry(text: str, calls: int, seconds: float) -> dict:
    """One power entry from nvidia-smi's CSV rows (POWER_QUERY order); the first quarter (ramp) dropped."""
    rows = [[v.strip() for v in line.split(",")] for line in text.strip().splitlines() if line.count(",") >= 2]
    rows = rows[len(rows) // 4:]
    if not rows:
        raise TapeoutError("nvidia-smi gave no power samples")
    med = lambda xs: sorted(xs)[len(xs) // 2]
    w = [float(r[0]) for r in rows]
    entry = {"calls": calls, "seconds": seconds, "ms_per_call": seconds * 1e3 / max(calls, 1), "watts_median": med(w),
             "watts_max": max(w), "sm_clock_median": med([float(r[1]) for r in rows]), "samples": len(rows)}
    reasons = {q.split(".")[1]: sum(r[i].lower() == "active" for r in rows) / len(rows)
               for i, q in enumerate(POWER_QUERY) if q.startswith("clocks_event") and all(len(r) > i for r in rows)}
    if reasons:
        entry["event_reasons_active"] = reasons
    return entry


def _power_kernels(b: _Bench, fp8: bool, secs: float) -> dict:
    """Power entries of single kernels looped: square GEMMs of 8192 and a 2 GiB copy; and the bf16 GEMM in
    bursts of 10 with 15 ms of sleep between, whose average power stays under the cap so that the GEMMs
    run at (or near) the max clock: the compute-bound point at the top of the V-f curve that the capped
    entries (an H100's GEMMs at 1.26-1.38 GHz) leave extrapolated (energy.py's alpha)."""
    torch, F = b.torch, b.torch.nn.functional
    x = torch.randn(8192, 8192, device=b.dev, dtype=torch.bfloat16)
    res = {"gemm_8192_bf16": _sample_power(b, lambda: F.linear(x, x), secs)}

    def burst():
        for _ in range(10):
            F.linear(x, x)
        b.sync()
        time.sleep(0.015)

    res["gemm_8192_bf16_x10_sleep15ms"] = _sample_power(b, burst, secs)
    if fp8:
        xf, one = x.to(torch.float8_e4m3fn), torch.ones((), device=b.dev)
        res["gemm_8192_fp8"] = _sample_power(b, lambda: torch._scaled_mm(xf, xf.t(), scale_a=one, scale_b=one,
                                                                         out_dtype=torch.bfloat16), secs)
    a = torch.empty(1 << 30, dtype=torch.bfloat16, device=b.dev)
    c = torch.empty_like(a)
    res["copy_2GiB"] = _sample_power(b, lambda: c.copy_(a), secs)
    return res


def _power(b: _Bench, quick: bool, fp8: bool) -> dict:
    """Power entries in the shipped H100 file's format (the ones benchmarks/power_check.py checks), with
    the clock-event reasons."""
    import shutil

    from .measure_model import TinyLlama, step_fn

    if b.dev != "cuda" or shutil.which("nvidia-smi") is None:
        return {"skipped": "needs an NVIDIA GPU and nvidia-smi"}
    torch = b.torch
    secs = 2.0 if quick else 4.0
    res = {"idle": _sample_power(b, lambda: time.sleep(0.05), secs)}
    res.update(_power_kernels(b, fp8, secs))
    m = TinyLlama.build(torch, "llama-3.1-8b", b.dev)
    for key, phase, B, L in (("llama-3.1-8b_decode_B64_C1024", "decode", 64, 1024),
                             ("llama-3.1-8b_prefill_2048", "prefill", 1, 2048)):
        if b.left() < secs + 10:
            break
        res[key] = _sample_power(b, step_fn(torch, m, phase, B, L, b.dev), secs)
    return res


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
    res = {"meta": meta, "gemm": [], "attention": [], "memory": [], "llm": [], "in_step": [], "power": {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for key, fn in (("gemm", lambda: _gemms(b, quick, fp8)), ("attention", lambda: _attention(b, quick)),
                        ("memory", lambda: _memory(b, quick)), ("llm", lambda: _llm(b, quick)),
                        ("in_step", lambda: _in_step(b, quick)), ("power", lambda: _power(b, quick, fp8))):
            res[key] = fn()
            out.write_text(json.dumps(res, indent=1))  # after each section: an interrupted run keeps what it has
    return sum(len(res[k]) for k in ("gemm", "attention", "memory", "llm"))
