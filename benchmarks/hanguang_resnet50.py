"""The virtual NPU predicts Alibaba's Hanguang 800 MLPerf Inference v0.5 ResNet-50 Offline result.

ResNet-50 v1.5 (tapeout.npu.vision, static int8, random weights) is compiled for the
`hanguang-800` chip file and simulated count-only at the batch that runs best; the prediction is
batch / simulated seconds. Nothing is fitted on the published figure (benchmarks/data/
mlperf_hanguang_resnet50.json). Goal: within 25 %.

The chip file declares a sliding-window conv engine (ISSCC 2020 paper 7.2 and Hot Chips 2020: convs
run directly, not as im2col GEMMs; its organisation, 9 output pixels x 128 x 128 channels per cycle,
is assumed from the peak), the tensor engine's fused output stage and the pooling engine. "before"
is the same file without the conv engine (im2col GEMMs on the assumed 384 x 384 array), then also
without the output stage and pooling engine, class by class and engine by engine.

On a chip with a conv engine the conv kernels chain (docs/npu.md), so the prediction simulates the
whole network; "without chaining" is the same program with every barrier a full one.

Then the sensitivity to the assumed conv-engine organisation, the pooling engine's rate and the batch
(NOT the prediction: each line changes an assumption), and the fold-count bound of every conv (array-bound throughput) for the 384 x 384
array and the 9 x 128 x 128 engine.

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


def conv_engine_chip(ci: int, co: int, px: int, epi: int | None = None) -> str:
    """The chip file with another conv-engine organisation (and, if given, output-stage rate)."""
    text = chip_text().replace("channels_in = 128 ", f"channels_in = {ci} ").replace(
        "channels_out = 128\n", f"channels_out = {co}\n").replace("pixels = 9\n", f"pixels = {px}\n")
    if epi:
        text = text.replace("elements_per_cycle = 1152 ", f"elements_per_cycle = {epi} ")
    return variant_chip(f"conv-{ci}x{co}x{px}-{epi}", text)


def strip_sections(text: str, sections: tuple) -> str:
    """The chip text less the named sections (and their sources entries)."""
    out, skip = [], False
    for ln in text.splitlines(keepends=True):
        if ln.startswith("["):
            skip = ln.startswith(tuple(f"[{x}]" for x in sections))
        if not skip and not ln.startswith(tuple(f'"{x}' for x in sections)):
            out.append(ln)
    return "".join(out)


def im2col_chip() -> str:
    """The chip file less its conv engine: convs are im2col GEMMs on the assumed 384 x 384 array."""
    return variant_chip("im2col", strip_sections(chip_text(), ("cores.matrix.conv",)).replace(
        "elements_per_cycle = 1152 ", "elements_per_cycle = 384 "))


def without_units_chip() -> str:
    """Also less the output stage and pooling engine: the vector unit post-processes every GEMM and
    runs the pools (the file before it declared any of the three)."""
    return variant_chip("no-units", strip_sections(chip_text(), ("cores.matrix.conv", "cores.matrix.epilogue",
                                                                 "cores.pooling")))


def pool_chip(rate: int) -> str:
    """The chip file with another pooling-engine rate (window elements per cycle)."""
    text = chip_text()
    assert "[cores.pooling]" in text and "elements_per_cycle = 384\n" in text
    return variant_chip(f"pool-{rate}", text.replace("elements_per_cycle = 384\n", f"elements_per_cycle = {rate}\n"))


def chaining(batch: int, pub: float):
    """The whole network at `batch` as predicted, and the same program with every barrier a full one
    (no kernel chains): what chaining contributes."""
    import dataclasses

    from tapeout.chip import load_chip
    from tapeout.npu.compiler import compile_ir
    from tapeout.npu.sim import simulate
    from tapeout.npu.vision import resnet50
    chip = load_chip("hanguang-800")
    prog = compile_ir(resnet50(batch, "int8", abstract=True), chip, "int8")
    full = simulate(dataclasses.replace(prog, meta={**prog.meta, "chained": []}), (), count_only=True)
    fs = batch / full.stats["seconds"]
    print(f"  without chaining (every barrier a full one; window loads, channels-last kept): {fs:,.0f} samples/s "
          f"(ratio {fs / pub:.3f}); {len(prog.meta['chained'])} of {len(prog.meta['kernels'])} barriers chain")


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
    cv = chip.cores.matrix.conv
    print(f"ResNet-50 v1.5 int8 on hanguang-800 ({chip.cores.count} cores, conv engine {cv.channels_in} x "
          f"{cv.channels_out} x {cv.pixels} ({cv.dataflow}), {chip.cores.matrix.array_rows}x"
          f"{chip.cores.matrix.array_cols} array for other GEMMs, {chip.cores.vector.lanes} vector lanes per core; "
          f"{macs / 1e9:.2f} GMACs per image)")
    print(f"predicted  {r['samples_s']:,.0f} samples/s (batch {r['batch']})")
    print(f"published  {pub:,.1f} samples/s ({PUBLISHED['source']})")
    print(f"ratio      {ratio:.3f}  -> {'within' if abs(ratio - 1) <= 0.25 else 'NOT within'} 25 %")
    print(f"wall time  {wall:.1f} s (batch search, count-only)")
    show(r, macs, peak)
    chaining(r["batch"], pub)
    for label, path in (("without the conv engine (im2col GEMMs on the assumed 384 x 384 array)", im2col_chip()),
                        ("without the conv engine, output stage and pooling engine", without_units_chip())):
        b = predict_throughput("resnet-50", path, dtype="int8")
        print(f"\nbefore: the same chip file {label}")
        print(f"predicted  {b['samples_s']:,.0f} samples/s (batch {b['batch']}), ratio {b['samples_s'] / pub:.3f}; "
              f"the chip file as it is gives {r['samples_s'] / b['samples_s']:.2f}x that")
        show(b, macs, peak)
    if not whatif:
        return
    print("\nSensitivity to the conv engine's assumed organisation (channels_in x channels_out x pixels per "
          "cycle; not the prediction):")
    for ci, co, px, epi in ((128, 128, 9, None), (64, 256, 9, None), (256, 64, 9, None), (64, 64, 36, None),
                            (128, 384, 3, None), (384, 128, 3, None), (384, 384, 1, None), (1152, 128, 1, None),
                            (128, 128, 9, 384)):
        w = predict_throughput("resnet-50", conv_engine_chip(ci, co, px, epi), dtype="int8")
        note = " (the chip file)" if (ci, co, px, epi) == (128, 128, 9, None) else \
            f" (output stage {epi}/cycle)" if epi else " (the 9 read as a 3x3 window's taps)" if ci == 1152 else ""
        print(f"  {ci:3d} x {co:3d} x {px:2d}{note}: {w['samples_s']:8,.0f} samples/s at batch {w['batch']:2d}, "
              f"ratio {w['samples_s'] / pub:.3f}; mxu {w['utilization']['mxu']:.0%} busy")
    for label, path in (("pooling engine at 1152 window elements per cycle (the output stage's rate; file: 384)",
                         pool_chip(1152)),):
        w = predict_throughput("resnet-50", path, dtype="int8")
        print(f"  {label}: {w['samples_s']:8,.0f} samples/s at batch {w['batch']:2d}, ratio {w['samples_s'] / pub:.3f}")
    from tapeout.npu.vision import simulate_batch
    for b in (8, 16):
        w = simulate_batch("resnet-50", "hanguang-800", "int8", b)
        print(f"  batch {b} (the search doubles the batch while it pays and fits): {w['samples_s']:8,.0f} samples/s, "
              f"ratio {w['samples_s'] / pub:.3f}")
    clk = chip.cores.clock_hz
    for ci, co, px in ((384, 384, 1), (128, 128, 9)):
        a = array_bound(ci, co, px * 4, clk)
        print(f"  fold-count bound, {ci} x {co} x {px} per core: {a:,.0f} samples/s "
              f"({a * 2 * macs / peak:.0%} of peak; ratio {a / pub:.3f})")


if __name__ == "__main__":
    main("--no-whatif" not in sys.argv)
