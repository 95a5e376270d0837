"""The prediction contract: add "predicted_ms" to every entry of a calibration-format file.

`predict_entries(data, chip)` fills gemm, attention, memory and llm entries; where entries carry
measured "ms", `errors(...)` gives MAPE, median and max error per section. Entries that cannot be
predicted get `"predicted_ms": null` and a `"reason"`.

Kernel benchmarks (gemm, attention, memory) are timed as `tapeout measure`
(src/tapeout/perf/measure.py) times them: one launch at a time from the host (triton's do_bench), with a 256 MB cache flush
before every call that also loads the power budget. LLM steps run from a CUDA graph.
"""
from __future__ import annotations

import copy
import math
import statistics

from ..chip import Chip, load_chip
from ..errors import TapeoutError
from ..llm.kernels import Batch, Dtypes, Kernel, build_step
from ..llm.spec import load_model
from .step import run_kernels

SECTIONS = ("gemm", "attention", "memory", "llm")
DT = {"bfloat16": "bf16", "float16": "fp16", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "float32": "fp32",
      "int8": "int8", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}
SIZE = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp32": 4}
FLUSH_BYTES = 256e6  # triton.testing.do_bench zeroes a 256 MB buffer before each call


def _dt(e: dict) -> str:
    d = DT.get(str(e.get("dtype", "bfloat16")))
    if d is None:
        raise TapeoutError(f"dtype {e.get('dtype')!r} not supported")
    return d


def _sizes(e: dict, *keys: str) -> list[int]:
    """The entry's sizes under `keys`, each a whole number >= 1 (a malformed entry is not predicted)."""
    out = []
    for k in keys:
        v = e[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 1 and v == int(v)):
            raise TapeoutError(f"{k}: must be a whole number >= 1, got {v!r}")
        out.append(int(v))
    return out


def _flush() -> Kernel:
    return Kernel("elementwise", "l2_flush", 0.0, 0.0, FLUSH_BYTES, (1, int(FLUSH_BYTES)), "bf16")


def gemm_kernel(e: dict) -> Kernel:
    (M, N, K), d = _sizes(e, "M", "N", "K"), _dt(e)
    b, out = SIZE[d], 2 if d in ("fp8", "int8") else SIZE[d]
    return Kernel("gemm", e.get("tag", "gemm"), 2.0 * M * N * K, (M * K + N * K) * b, M * N * out,
                  (M, N, K, 1), d, 1.0, N * K * b)


def attention_kernel(e: dict) -> Kernel:
    B, Sq, Skv, hq, hkv, d = _sizes(e, "B", "S_q", "S_kv", "heads_q", "heads_kv", "head_dim")
    causal = bool(e.get("causal", False))
    b = SIZE[_dt(e)]
    pairs = B * hq * (Sq * (Skv - Sq) + Sq * (Sq + 1) / 2) if causal else B * hq * Sq * Skv
    rd = (B * hq * Sq * d + 2 * B * hkv * Skv * d) * b
    return Kernel("attention", "sdpa", 4.0 * pairs * d, rd, B * hq * Sq * d * b,
                  (B, Sq, Skv, hq, hkv, d, d, causal), _dt(e))


def memory_kernel(e: dict) -> Kernel:
    op = e["op"]
    if op.startswith("tiny_kernel"):
        return Kernel("elementwise", op, 1.0, 4.0, 4.0, (1, 1), "fp32")
    d = _dt(e)
    b = SIZE[d]
    if "elements" in e:
        (n,) = _sizes(e, "elements")
        reads = {"add": 2, "copy": 1, "mul": 2}.get(op)
        if reads is None:
            raise TapeoutError(f"memory op {op!r} not modelled")
        return Kernel("elementwise", op, float(n), reads * n * b, n * b, (1, n), d)
    rows, cols = _sizes(e, "rows", "cols")
    kind = {"softmax": "softmax", "rms_norm": "norm", "layer_norm": "norm"}.get(op)
    if kind is None:
        raise TapeoutError(f"memory op {op!r} not modelled")
    return Kernel(kind, op, 5.0 * rows * cols, rows * cols * b, rows * cols * b, (rows, cols), d)


def llm_kernels(e: dict) -> list[Kernel]:
    spec = load_model(e["model"])
    phase = e["phase"]
    (length,) = _sizes(e, "seq" if phase == "prefill" else "context")
    impl = e.get("implementation", "pytorch-cudagraph")
    return build_step(spec, Batch.of(phase, *_sizes(e, "batch"), length), Dtypes(), impl)


def predict_entry(section: str, e: dict, chip: Chip, params=None) -> float:
    """Predicted milliseconds for one calibration entry (`params`: override the family's PerfParams)."""
    if section == "llm":
        return run_kernels(chip, llm_kernels(e), queued=True, params=params).seconds * 1e3
    k = {"gemm": gemm_kernel, "attention": attention_kernel, "memory": memory_kernel}[section](e)
    queued = section == "memory" and e.get("op") == "tiny_kernel_in_graph_per_kernel"
    flush = [] if queued else [_flush()]
    return run_kernels(chip, [k], queued=queued, power_kernels=flush, params=params).seconds * 1e3


def predict_entries(data: dict, chip: "Chip | str", params=None) -> dict:
    """A copy of `data` with "predicted_ms" (or null and "reason") on every entry."""
    chip = load_chip(chip)
    out = copy.deepcopy(data)
    for section in SECTIONS:
        for e in out.get(section, []) or []:
            try:
                e["predicted_ms"] = predict_entry(section, e, chip, params)
            except (TapeoutError, KeyError, ValueError, TypeError) as err:
                e["predicted_ms"] = None
                e["reason"] = f"{type(err).__name__}: {err}"
    return out


def errors(data: dict) -> dict[str, dict]:
    """Per section: n, MAPE, median and max absolute percentage error, and unpredicted count."""
    res = {}
    for section in SECTIONS:
        entries = data.get(section) or []
        errs = [abs(e["predicted_ms"] / e["ms"] - 1) * 100 for e in entries
                if e.get("predicted_ms") is not None and e.get("ms")]
        missing = sum(1 for e in entries if e.get("predicted_ms") is None)
        if entries:
            res[section] = {"n": len(entries), "measured": len(errs), "unpredicted": missing,
                            "mape": statistics.fmean(errs) if errs else math.nan,
                            "median": statistics.median(errs) if errs else math.nan,
                            "max": max(errs) if errs else math.nan}
    return res
