"""The virtual NPU predicts Alibaba's Hanguang 800 MLPerf Inference v0.5 ResNet-50 Offline result.

ResNet-50 v1.5 (tapeout.npu.vision, static int8, random weights) is compiled for the
`hanguang-800` chip file and simulated count-only at the batch that runs best; the prediction is
batch / simulated seconds. Nothing is fitted on the published figure (benchmarks/data/
mlperf_hanguang_resnet50.json). Goal: within 25 %.

The chip file declares the tensor engine's fused output stage and the pooling engine (Hot Chips
2020); "before" is the same file without them (every GEMM epilogue and pool on the vector unit),
so the printout shows what the two units change, class by class and engine by engine.

Then two diagnostics that are NOT the prediction (they change an assumption to show what the gap
is made of): the same simulation with 16x the vector lanes (the requantisation chain no longer the
bound: what a fused output pipeline would give), and an analytical array-bound throughput (fold
counts of every conv) for the chip file's 384 x 384 array and for nine 128 x 128 arrays per core
(the same peak).

    PYTHONPATH=src .venv/bin/python benchmarks/hanguang_resnet50.py [--no-whatif]
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

PUBLISHED = json.loads((Path(__file__).parent / "data" / "mlperf_hanguang_resnet50.json").read_text())


def show(r: dict, macs_per_image: float, peak_ops: float):
    sec = r["seconds_per_batch"]
    print(f"  batch {r['batch']}: {sec * 1e3:.3f} ms per batch, {r['samples_s']:,.0f} samples/s, "
          f"{r['samples_s'] * 2 * macs_per_image / peak_ops:.1%} of the int8 peak; memory {r['memory_bytes'] / 2**20:.0f} MiB")
    print("  engine utilization (busy / time, mean over cores): " +
          ", ".join(f"{q} {u:.0%}" for q, u in r["utilization"].items()))
    qs = [q for q in ("mxu", "epi", "vec", "pool", "dma") if q in r["utilization"]]
    print(f"  {'class':8s} {'share':>6s} {'us/batch':>9s}  " + " ".join(f"{q:>5s}" for q in qs) + "  ops (us)")
    for name, c in r["classes"].items():
        ops = ", ".join(f"{k} {v * 1e6:.0f}" for k, v in sorted(c["ops"].items(), key=lambda kv: -kv[1]))
        print(f"  {name:8s} {c['seconds'] / sec:6.1%} {c['seconds'] * 1e6:9.1f}  "
              + " ".join(f"{c['busy'].get(q, 0.0) / c['seconds']:5.0%}" for q in qs) + f"  {ops}")


def array_bound(rows: int, cols: int, arrays: int, clock_hz: float) -> float:
    """Images/s if only the arrays' fold counts mattered: sum over convs of ceil(K/rows) x
    ceil(N/cols) x max(M, rows) cycles (M = output pixels of one image; batch large)."""
    from tapeout.npu.vision import resnet50
    prog = resnet50(1, "f32", abstract=True)
    cycles = 0
    for e in prog.eqns:
        if e.op == "conv2d":
            _, n, ho, wo = e.outputs[0].shape
            k = math.prod(e.inputs[1].shape[1:])
            cycles += math.ceil(k / rows) * math.ceil(n / cols) * ho * wo
    return arrays * clock_hz / cycles


def variant_chip(name: str, text: str) -> str:
    path = Path(tempfile.mkdtemp()) / f"hanguang-800-{name}.toml"
    path.write_text(text)
    return str(path)


def chip_text() -> str:
    return (resources.files("tapeout.chips") / "hanguang-800.toml").read_text()


def wider_vector_chip(factor: int) -> str:
    text = chip_text().replace("lanes = 256\nflops_per_cycle = 512", f"lanes = {256 * factor}\nflops_per_cycle = {512 * factor}")
    return variant_chip("wide-vector", text)


def without_units_chip() -> str:
    """The chip file less its output stage and pooling engine (and their sources): the vector unit
    post-processes every GEMM and runs the pools, as before the file declared them."""
    lines = chip_text().splitlines(keepends=True)
    out, skip = [], False
    for ln in lines:
        if ln.startswith("["):
            skip = ln.startswith(("[cores.matrix.epilogue]", "[cores.pooling]"))
        if not skip and not ln.startswith(('"cores.matrix.epilogue', '"cores.pooling')):
            out.append(ln)
    return variant_chip("no-output-stage", "".join(out))


def main(whatif: bool = True):
    from tapeout.chip import load_chip
    from tapeout.npu.vision import predict_throughput, resnet50
    chip = load_chip("hanguang-800")
    peak = chip.peaks.int8_ops_per_s
    macs = sum(math.prod(e.outputs[0].shape) * math.prod(e.inputs[1].shape[1:])
               for e in resnet50(1, "f32", abstract=True).eqns if e.op == "conv2d")
    t0 = time.perf_counter()
    r = predict_throughput("resnet-50", "hanguang-800", dtype="int8")
    wall = time.perf_counter() - t0
    pub = PUBLISHED["published"]
    ratio = r["samples_s"] / pub
    print(f"ResNet-50 v1.5 int8 on hanguang-800 ({chip.cores.count} cores, {chip.cores.matrix.array_rows}x"
          f"{chip.cores.matrix.array_cols} array, {chip.cores.vector.lanes} vector lanes per core; "
          f"{macs / 1e9:.2f} GMACs per image)")
    print(f"predicted  {r['samples_s']:,.0f} samples/s (batch {r['batch']})")
    print(f"published  {pub:,.1f} samples/s ({PUBLISHED['source']})")
    print(f"ratio      {ratio:.3f}  -> {'within' if abs(ratio - 1) <= 0.25 else 'NOT within'} 25 %")
    print(f"wall time  {wall:.1f} s (batch search, count-only)")
    show(r, macs, peak)
    b = predict_throughput("resnet-50", without_units_chip(), dtype="int8")
    print(f"\nbefore: the same chip file without its output stage and pooling engine (vector unit post-processing)")
    print(f"predicted  {b['samples_s']:,.0f} samples/s (batch {b['batch']}), ratio {b['samples_s'] / pub:.3f}; "
          f"with them {r['samples_s'] / b['samples_s']:.2f}x that")
    show(b, macs, peak)
    if not whatif:
        return
    print("\nDiagnostics (assumptions changed; not the prediction):")
    w = predict_throughput("resnet-50", wider_vector_chip(16), dtype="int8", batch=r["batch"])
    print(f"  16x vector lanes ({256 * 16}/core), batch {w['batch']}: {w['samples_s']:,.0f} samples/s "
          f"(ratio {w['samples_s'] / pub:.3f}); utilization " +
          ", ".join(f"{q} {u:.0%}" for q, u in w["utilization"].items()))
    clk = chip.cores.clock_hz
    for rows, cols, n in ((384, 384, 4), (128, 128, 36)):
        a = array_bound(rows, cols, n, clk)
        print(f"  analytical array bound, {n // 4 if n > 4 else 1} x {rows}x{cols} per core: {a:,.0f} samples/s "
              f"({a * 2 * macs / peak:.0%} of peak; ratio {a / pub:.3f})")


if __name__ == "__main__":
    main("--no-whatif" not in sys.argv)
