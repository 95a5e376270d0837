"""Consistency of the virtual NPU's simulated time with the analytical performance model.

    python benchmarks/npu_consistency.py [--model llama-3.1-8b] [--chip tapeout-n7] [--quick]

For a chip the virtual NPU runs, the analytical model (tapeout.perf) times kernels with the
simulator's own timing in closed form (src/tapeout/perf/npu.py: the compiler's tile plan, the
simulator's instruction costs, the queues combined without walking the program). This script
checks the two against each other, each case compiled and simulated count-only:

1. single kernels: GEMMs (decode and prefill shapes; bf16, int8 and fp8 on tapeout-n7, int8 on
   hanguang-800), attention (decode and causal prefill) and row kernels (RMSNorm, SiLU x mul),
   the NPU kernel's cycles against `tapeout.perf.npu`'s closed form;
2. ResNet-50 convolutions (tapeout.npu.vision's layer shapes, batch 4): the compiler's whole
   lowering of a conv (pad, im2col, GEMM with bias+relu epilogue, NHWC->NCHW copy);
3. one Llama decoder layer, decode and prefill: the simulated program against `run_kernels` over
   the analytical model's `fused` kernel sequence (its own kernel boundaries: RoPE is one kernel
   there and five on the NPU, SiLU x mul a kernel there and GEMM epilogues on the NPU).

Goal: every ratio within 5 %. Exit status 1 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

from tapeout.chip import load_chip  # noqa: E402
from tapeout.ir import Builder  # noqa: E402
from tapeout.ir.core import Program  # noqa: E402
from tapeout.llm.kernels import Batch, build_step  # noqa: E402
from tapeout.llm.spec import load_model  # noqa: E402
from tapeout.npu.compiler import compile_ir  # noqa: E402
from tapeout.npu.llm import llama_step  # noqa: E402
from tapeout.npu.sim import kernel_times, simulate  # noqa: E402
from tapeout.perf import npu  # noqa: E402
from tapeout.perf.step import run_kernels  # noqa: E402

GOAL = 0.05
# (chip, M, N, K, mode): decode (M = batch) and prefill (M = tokens) projections of Llama-3.1-8B
GEMMS = [("tapeout-n7", 1, 6144, 4096, "bf16"), ("tapeout-n7", 16, 14336, 4096, "bf16"),
         ("tapeout-n7", 64, 4096, 14336, "bf16"), ("tapeout-n7", 512, 6144, 4096, "bf16"),
         ("tapeout-n7", 2048, 4096, 4096, "bf16"), ("tapeout-n7", 16, 4096, 4096, "int8"),
         ("tapeout-n7", 512, 14336, 4096, "int8"), ("tapeout-n7", 512, 4096, 4096, "fp8"),
         ("hanguang-800", 16, 4096, 4096, "int8"), ("hanguang-800", 512, 4096, 4096, "int8")]
# (chip, B, Hq, Hkv, Lq, Lk, causal)
ATTENTION = [("tapeout-n7", 1, 32, 8, 1, 1024, False), ("tapeout-n7", 16, 32, 8, 1, 2048, False),
             ("tapeout-n7", 1, 32, 8, 512, 512, True), ("tapeout-n7", 1, 32, 8, 2048, 2048, True),
             ("hanguang-800", 4, 32, 8, 1, 2048, False)]
ROWS = [("tapeout-n7", 16, 4096), ("tapeout-n7", 2048, 4096), ("hanguang-800", 512, 4096)]
# ResNet-50 v1.5 convs at batch 4 (He et al. 2016, Table 1): (C, H, O, k, stride)
CONVS = [(3, 224, 64, 7, 2), (64, 56, 64, 1, 1), (64, 56, 64, 3, 1), (64, 56, 256, 1, 1), (256, 56, 128, 1, 1),
         (128, 56, 128, 3, 2), (512, 28, 256, 1, 1), (256, 28, 256, 3, 2), (256, 14, 1024, 1, 1),
         (1024, 14, 512, 1, 1), (512, 14, 512, 3, 2), (512, 7, 2048, 1, 1)]
LAYERS = [("decode", 1, 1024), ("decode", 16, 2048), ("decode", 64, 8192), ("prefill", 1, 512), ("prefill", 1, 2048)]
RMS = [("vec", "mul", "full", "fp32", ("bf16", "bf16")), ("red", "sum", "col", "fp32", ("fp32",)),
       ("vec", "adds", "col", "fp32", ()), ("vec", "rsqrt", "col", "fp32", ()),
       ("vec", "mul", "full", "fp32", ("bf16", "fp32")), ("vec", "mul", "full", "bf16", ("fp32", "bf16"))]


def _abstract(ir, keep):
    """`ir` with every input but `keep` a shape-only (zero-stride) constant: count-only timing."""
    consts = {v.name: np.broadcast_to(np.zeros((), ml_dtypes.bfloat16), v.shape) for v in ir.inputs if v.name not in keep}
    return Program(tuple(v for v in ir.inputs if v.name in keep), consts, ir.eqns, ir.outputs, ir.name)


def simulated(ir, chip, mode="bf16") -> list[tuple[str, int]]:
    prog = compile_ir(ir, chip, mode)
    return kernel_times(prog, simulate(prog, (), count_only=True))


def gemm_case(name, M, N, K, mode):
    """The GEMM kernel's cycles (the last kernel; int8/fp8 quantise x in a row kernel first) and the model's.
    Kernels after the first include the barrier before them (100 cycles), which the model leaves to the launch gap."""
    chip = load_chip(name)
    b = Builder("gemm")
    x = b.input((M, K), "bf16", name="x")
    ir = _abstract(b.build(b.linear(x, b.input((N, K), "bf16", name="w"))), {"x"})
    ks = simulated(ir, chip, mode)
    sim = ks[-1][1] - (npu.machine(chip).t.barrier if len(ks) > 1 else 0)
    q = mode in ("int8", "fp8")
    in_dt, acc = npu.ISA_IN.get(mode, ("bf16", "fp32"))
    model = npu.gemm_cycles(chip, M, N, K, 1, in_dt, acc, "bf16", "shared" if q else "dram", "dram",
                            npu.DEQUANT if q else ())["cycles"]
    return sim, model


def attention_case(name, B, Hq, Hkv, Lq, Lk, causal):
    chip = load_chip(name)
    b = Builder("attn")
    q = b.input((B, Hq, Lq, 128), "bf16", name="q")
    k, v = (b.input((B, Hkv, Lk, 128), "bf16", name=n) for n in "kv")
    sim = simulated(b.build(b.attention(q, k, v, causal=causal)), chip)[-1][1]
    return sim, npu.attention_cycles(chip, B, Hq, Hkv, Lq, Lk, 128, 128, causal, "bf16", "dram", "dram", "dram")["cycles"]


def rows_case(name, R, C):
    """RMSNorm over [R, C] (input, weight and output in DRAM)."""
    chip = load_chip(name)
    b = Builder("rms")
    x, w = b.input((R, C), "bf16", name="x"), b.input((C,), "bf16", name="w")
    sim = simulated(b.build(b.rms_norm(x, w, axes=(-1,), eps=1e-5)), chip)[-1][1]
    model = npu.row_cycles(chip, R, C, [("full", "bf16", "dram"), ("row", "bf16", "dram")], RMS,
                           [("full", "bf16", "dram")], whole_rows=True)["cycles"]
    return sim, model


def conv_case(name, C, H, O, k, s, N=4):
    """One conv + bias + relu (input and output in DRAM): all its kernels."""
    chip = load_chip(name)
    b = Builder("conv")
    x = b.input((N, C, H, H), "bf16", name="x")
    y = b.relu(b.conv2d(x, b.input((O, C, k, k), "bf16", name="w"), b.input((O,), "bf16", name="bias"),
                        stride=s, padding=k // 2))
    sim = sum(c for _, c in simulated(_abstract(b.build(y), {"x"}), chip))
    return sim, npu.conv2d_cycles(chip, N, C, H, H, O, k, s, k // 2, "bf16", x_space="dram", out_space="dram")["cycles"]


def layer_case(model: str, chip, phase: str, B: int, L: int):
    """One decoder layer: simulated seconds, analytical seconds, and both by kind."""
    spec = load_model(model)
    sim = {}
    total = 0.0
    for name, cyc in simulated(llama_step(model, phase, B, L, layers=1, abstract=True, head=False), chip):
        g = {"linear": "gemm", "attention": "attention"}.get(name, "other")
        sim[g] = sim.get(g, 0.0) + cyc / chip.cores.clock_hz
        total += cyc / chip.cores.clock_hz
    layer = [dataclasses.replace(k, count=1.0) for k in build_step(spec, Batch.of(phase, B, L), impl="fused")
             if k.count == spec.layers or k.kind == "embed"]   # the program has the embedding too
    st = run_kernels(chip, layer, clock_hz=chip.cores.clock_hz)
    ana = {}
    for kt in st.kernels:
        g = kt.kernel.kind if kt.kernel.kind in ("gemm", "attention") else "other"
        ana[g] = ana.get(g, 0.0) + kt.seconds
    return total, st.seconds, sim, ana


def kernel_rows(quick: bool = False):
    """(label, simulated cycles, model cycles) of every single-kernel and conv case."""
    sel = (lambda xs: xs[::3]) if quick else (lambda xs: xs)
    for c in sel(GEMMS):
        yield (f"gemm {c[0]} {c[4]} M{c[1]} N{c[2]} K{c[3]}", *gemm_case(*c))
    for c in sel(ATTENTION):
        yield (f"attention {c[0]} B{c[1]} Hq{c[2]} Lq{c[4]} Lk{c[5]}{' causal' if c[6] else ''}", *attention_case(*c))
    for c in sel(ROWS):
        yield (f"rms_norm {c[0]} {c[1]}x{c[2]}", *rows_case(*c))
    for c in sel(CONVS):
        yield (f"resnet50 conv C{c[0]} H{c[1]} O{c[2]} k{c[3]} s{c[4]} B4", *conv_case("tapeout-n7", *c))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--chip", default="tapeout-n7")
    ap.add_argument("--quick", action="store_true", help="every third single-kernel case")
    a = ap.parse_args()
    worst = 0.0
    print("single kernels: simulated vs analytical (perf/npu.py), cycles")
    for label, sim, model in kernel_rows(a.quick):
        worst = max(worst, abs(sim / model - 1))
        print(f"  {label:52s} {sim:10.0f} {model:10.0f} {sim / model:6.3f}")
    chip = load_chip(a.chip)
    print(f"one {a.model} layer on {chip.name}: simulated (count-only) vs analytical (run_kernels at the chip's clock), us")
    print(f"  {'case':20s} {'sim':>9s} {'model':>9s} {'ratio':>6s}   gemm sim/model   attention sim/model   other sim/model")
    for phase, B, L in LAYERS:
        t = time.perf_counter()
        sim, ana, gs, ga = layer_case(a.model, chip, phase, B, L)
        worst = max(worst, abs(sim / ana - 1))
        cols = "   ".join(f"{gs.get(g, 0) * 1e6:8.1f}/{ga.get(g, 0) * 1e6:<8.1f}" for g in ("gemm", "attention", "other"))
        print(f"  {phase} B{B} L{L}".ljust(22) + f" {sim * 1e6:9.1f} {ana * 1e6:9.1f} {sim / ana:6.3f}   {cols}"
              f"   ({time.perf_counter() - t:.1f} s)")
    print(f"largest gap: {100 * worst:.1f} % (goal: within {100 * GOAL:.0f} %)")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
