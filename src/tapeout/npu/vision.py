"""ResNet-50 v1.5 as an IR program, and its throughput on the virtual NPU.

    prog = resnet50(batch=8, dtype="int8")                # IR Program, random weights (nothing downloaded)
    predict_throughput("resnet-50", "hanguang-800")       # {"samples_s": ..., "batch": ..., ...}

The network is He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1,
in the v1.5 form of torchvision and MLPerf Inference: the stride-2 of a stage's first bottleneck
sits in its 3x3 conv, not in the first 1x1. Batch norm is folded into the conv weights and bias
(inference). Two numeric forms:

- `f32`: conv2d(+bias) -> relu ...; the reference for the PyTorch comparison.
- `int8`: statically quantised, as deployed for MLPerf (calibrated per-tensor activation scales,
  per-output-channel weight scales). Each conv is
  `conv2d(x:i8, w:i8) -> i32 -> cast f32 -> * m[o] -> + b[o] (-> + residual) (-> relu) -> cast i8`,
  with m = s_in * s_w[o] / s_out and b[o] = bias / s_out + 1/2 (relu, then truncation of x + 1/2, rounds
  half up: every int8 output follows a relu), so the chain after the GEMM is its fused epilogue on the NPU and
  activations stay int8 between layers. A shortcut is kept in f32 in the block output's scale: a
  projection conv's epilogue writes it directly, an identity shortcut is `cast(x) * s_x / s_out`.
  The input image is int8 (preprocessed and quantised on the host, as in the MLPerf harness); the
  global average pool and the FC run in f32 (the NPU's int8 mode quantises the FC dynamically).

Timing (`predict_throughput`) compiles each distinct piece (stem, each distinct bottleneck shape,
head) once for the chip, simulates it count-only and multiplies by its count: every NPU kernel ends
with a barrier, so a network's time is the sum of its pieces' (tests check this on a small net).
On a chip with a conv engine, conv and pooling kernels chain across those barriers (sim._Chain), so
there it compiles and simulates the whole network instead.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import TapeoutError
from ..ir import Builder

# He et al. 2016, Table 1 (50-layer column): bottlenecks per stage, base width, expansion, classes
RESNET50 = {"blocks": (3, 4, 6, 3), "width": 64, "expansion": 4, "classes": 1000, "image": 224}


@dataclass(frozen=True)
class Arch:
    blocks: tuple = RESNET50["blocks"]
    width: int = RESNET50["width"]
    expansion: int = RESNET50["expansion"]
    classes: int = RESNET50["classes"]
    image: int = RESNET50["image"]


class _Net:
    """Builds conv units into `b` in f32 or int8; weights from a seeded generator by layer name."""

    def __init__(self, b: Builder, arch: "Arch", dtype: str, seed: int, abstract: bool, scales: dict | None):
        self.b, self.arch, self.dtype, self.seed, self.abstract = b, arch, dtype, seed, abstract
        self.scales = scales or {}
        self.acts: dict = {}                      # layer name -> f32 activation (for calibration)

    def weight(self, name, shape, gain=1.0):
        if self.abstract:
            return None
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        fan_in = math.prod(shape[1:])
        return (rng.standard_normal(shape) * gain * math.sqrt(2.0 / fan_in)).astype(np.float32), \
            (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)

    def const(self, arr, name, shape, dtype):
        if self.abstract:                          # shape-only: becomes a zero-stride const (see _abstract)
            return self.b.input(shape, dtype, name=f"w_{name}")
        return self.b.const(arr, name=name, dtype=dtype)

    def conv(self, x, name, cout, k, stride, relu=True, residual=None, gain=1.0, keep_f32=None):
        """keep_f32 (int8): the name of the tensor in whose scale to leave the result in f32."""
        shape = (cout, x.shape[1], k, k)
        w, bias = self.weight(name, shape, gain) or (None, None)
        if self.dtype == "f32":
            last = "relu" if relu else "add" if residual is not None else "conv"      # carries the layer's name
            y = self.b.conv2d(x, self.const(w, f"{name}_w", shape, "f32"),
                              self.const(bias, f"{name}_b", (cout,), "f32"), stride=stride, padding=k // 2,
                              name=name if last == "conv" else None)
            y = y if residual is None else self.b.add(y, residual, name=name if last == "add" else None)
            y = self.b.relu(y, name=name) if relu else y
            self.acts[name] = y
            return y
        return self._conv_int8(x, name, w, bias, shape, stride, relu, residual, keep_f32)

    def _conv_int8(self, x, name, w, bias, shape, stride, relu, residual, keep_f32):
        cout, k = shape[0], shape[2]
        s_in, s_out = self.scale(x.name), self.scale(keep_f32 or name)
        sw = None if w is None else np.maximum(np.abs(w).reshape(cout, -1).max(1), 1e-12) / 127.0
        wq = None if w is None else np.clip(np.rint(w / sw[:, None, None, None]), -127, 127).astype(np.int8)
        m = None if w is None else (s_in * sw / s_out).reshape(1, cout, 1, 1).astype(np.float32)
        half = 0.0 if keep_f32 else 0.5       # relu then truncation + 0.5 = rounding half up, at no extra op
        bq = None if w is None else (bias / s_out + half).reshape(1, cout, 1, 1).astype(np.float32)
        b = self.b
        acc = b.conv2d(x, self.const(wq, f"{name}_w", shape, "i8"), stride=stride, padding=k // 2, acc_dtype="i32",
                       dtype="i32")
        y = b.add(b.mul(b.cast(acc, dtype="f32"), self.const(m, f"{name}_m", (1, cout, 1, 1), "f32")),
                  self.const(bq, f"{name}_b", (1, cout, 1, 1), "f32"))
        y = y if residual is None else b.add(y, residual)
        y = b.relu(y) if relu else y
        if keep_f32:
            return y
        out = b.cast(y, dtype="i8", name=name)
        self.scales.setdefault(out.name, s_out)
        return out

    def scale(self, name) -> float:
        """The int8 scale of tensor `name`; uncalibrated, 1/16 (any value times the same)."""
        return float(self.scales.get(name, 1.0 / 16))

    def shortcut(self, x, name, cout, stride, out_name):
        """The block's shortcut in the scale of its output `out_name` (f32), or x itself in f32."""
        if x.shape[1] != cout or stride != 1:
            return self.conv(x, name, cout, 1, stride, relu=False, keep_f32=out_name)     # f32 ignores keep_f32
        if self.dtype == "f32":
            return x
        return self.b.mul(self.b.cast(x, dtype="f32"), self.scale(x.name) / self.scale(out_name))


def _bottleneck(net: _Net, x, name, width, cout, stride):
    h = net.conv(x, f"{name}_conv1", width, 1, 1)
    h = net.conv(h, f"{name}_conv2", width, 3, stride)                   # v1.5: the stride is here
    r = net.shortcut(x, f"{name}_down", cout, stride, f"{name}_conv3")
    return net.conv(h, f"{name}_conv3", cout, 1, 1, residual=r, gain=0.2)


def _stem(net: _Net, x):
    h = net.conv(x, "stem", net.arch.width, 7, 2)
    net.scales.setdefault("pool", net.scale("stem"))                    # max pooling keeps the scale
    return net.b.max_pool2d(h, kernel=3, stride=2, padding=1, name="pool")


def _head(net: _Net, x, classes):
    b = net.b
    xf = x if net.dtype == "f32" else b.mul(b.cast(x, dtype="f32"), net.scale(x.name))
    g = b.reshape(b.reduce_mean(xf, axes=(2, 3), keepdims=True), shape=(x.shape[0], x.shape[1]))
    w, bias = net.weight("fc", (classes, x.shape[1])) or (None, None)
    return b.linear(g, net.const(w, "fc_w", (classes, x.shape[1]), "f32"), net.const(bias, "fc_b", (classes,), "f32"))


def _pieces(arch: Arch):
    """The network as pieces: ("stem",), ("block", stage, index, cin, width, cout, stride, H), ("head",)."""
    out, cin, h = [("stem",)], arch.width, arch.image // 4
    for s, n in enumerate(arch.blocks):
        width = arch.width * 2 ** s
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            out.append(("block", s, i, cin, width, width * arch.expansion, stride, h))
            cin, h = width * arch.expansion, h // stride
    return out + [("head",)]


def _build(arch: Arch, batch: int, dtype: str, pieces, seed=0, abstract=False, scales=None, calib_outputs=False,
           channels_last=False, marks: list | None = None):
    """IR of the given pieces in order (a whole net, or one piece with its input as program input).
    channels_last: a piece's feature-map input and output are [N, H, W, C] tensors (transposed to and
    from the net's NCHW), the layout a conv-engine chip keeps activations in between layers, so a
    piece pays no layout copy at its edges that the whole network would not. marks: a list that gets
    the number of eqns after each piece (to attribute the whole network's kernels to pieces)."""
    if dtype not in ("f32", "int8"):
        raise TapeoutError(f"resnet50 dtype {dtype!r}: f32 or int8")
    b = Builder(f"resnet50-{dtype}")
    net = _Net(b, arch, dtype, seed, abstract, scales)
    xdt = "f32" if dtype == "f32" else "i8"
    first = pieces[0]
    if first[0] == "stem":
        x = b.input((batch, 3, arch.image, arch.image), xdt, name="image")
    else:
        c, hw, name = (first[3], first[7], f"s{first[1]}b{first[2]}_in") if first[0] == "block" else \
            (arch.width * 2 ** (len(arch.blocks) - 1) * arch.expansion, arch.image // 2 ** (len(arch.blocks) + 1),
             "head_in")
        x = b.input((batch, hw, hw, c), xdt, name=f"{name}_nhwc") if channels_last else \
            b.input((batch, c, hw, hw), xdt, name=name)
        x = b.transpose(x, perm=(0, 3, 1, 2), name=name) if channels_last else x
    for p in pieces:
        if p[0] == "stem":
            x = _stem(net, x)
        elif p[0] == "block":
            x = _bottleneck(net, x, f"s{p[1]}b{p[2]}", p[4], p[5], p[6])
        else:
            x = _head(net, x, arch.classes)
        if marks is not None:
            marks.append(len(b.eqns))
    if channels_last and pieces[-1][0] != "head":
        x = b.transpose(x, perm=(0, 2, 3, 1))
    prog = b.build(x, *net.acts.values()) if calib_outputs else b.build(x)
    return _abstract(prog) if abstract else prog


def _abstract(prog):
    """Weight inputs (named w_*) -> zero-stride consts: shapes without materialised data."""
    from ..ir.core import Program
    from ..ir.dtypes import DTYPES
    keep = tuple(v for v in prog.inputs if not v.name.startswith("w_"))
    consts = {v.name: np.broadcast_to(np.zeros((), DTYPES[v.dtype]), v.shape) for v in prog.inputs if v not in keep}
    return Program(keep, consts, prog.eqns, prog.outputs, prog.name)


def resnet50(batch: int = 1, dtype: str = "f32", *, arch: Arch = Arch(), seed: int = 0, abstract: bool = False,
             calibration=None):
    """ResNet-50 v1.5 as an IR program: image [batch, 3, H, W] -> logits [batch, classes].

    dtype "f32" or "int8" (see the module doc). abstract=True: shape-only weights (count-only timing
    of the full-size net without materialising them). int8 activation scales come from `calibration`
    (a float image batch run through the f32 net: absmax / 127 per tensor), else 1/16."""
    pieces = _pieces(arch)
    scales = None
    if dtype == "int8" and calibration is not None:
        scales = calibrate(arch, np.asarray(calibration, np.float32), seed)
    return _build(arch, batch, dtype, pieces, seed, abstract, scales)


def calibrate(arch: Arch, images: np.ndarray, seed: int = 0) -> dict:
    """Per-tensor int8 scales (absmax / 127) of the input and every conv output, from the f32 net."""
    from ..ir import evaluate
    f = _build(arch, images.shape[0], "f32", _pieces(arch), seed, calib_outputs=True)
    outs = evaluate(f, images)
    names = [o.name for o in f.outputs[1:]]                  # the layer names (see _Net.conv)
    scales = {n: max(float(np.abs(a).max()), 1e-6) / 127.0 for n, a in zip(names, outs[1:])}
    return {"image": max(float(np.abs(images).max()), 1e-6) / 127.0, **scales}


def quantize_image(images: np.ndarray, scales: dict) -> np.ndarray:
    return np.clip(np.rint(images / scales["image"]), -127, 127).astype(np.int8)




MODELS = {"resnet-50": Arch()}


# ----------------------------------------------------------------------------- timing

# Offline batches tried: doubling, as a compiler/runtime tunes its engine batch, until a batch stops
# paying (< 1 % more samples/s) or no longer fits. The MLPerf harness does not cap it: HanGuangAI's
# v0.5 Offline harness hands the engine query items of up to 1,600 images (`maxBatch` 4,800 over 3
# workers, closed/Alibaba/code/resnet/tfcpp/.../classification.cc in mlcommons/inference_results_v0.5).
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MODES = {"int8": ("int8", "int8"), "bf16": ("f32", "bf16"), "fp16": ("f32", "fp16")}   # dtype -> (IR, NPU mode)


def _piece_class(p) -> str:
    return p[0] if p[0] != "block" else f"stage{p[1] + 1}"


def _distinct(arch: Arch):
    """(piece, count) for each distinct piece: repeated bottlenecks of a stage share one simulation."""
    counts: dict = {}
    for p in _pieces(arch):
        key = p if p[0] != "block" else p[:2] + (min(p[2], 1),) + p[3:]
        counts[key] = counts.get(key, 0) + 1
    return list(counts.items())


@lru_cache(maxsize=64)
def _simulate_piece(piece, arch: Arch, chip_name: str, dtype: str, batch: int) -> dict:
    from ..chip import load_chip
    from .compiler import compile_ir
    from .sim import kernel_times, simulate
    ir_dtype, mode = MODES[dtype]
    chip = load_chip(chip_name)
    prog = compile_ir(_build(arch, batch, ir_dtype, [piece], abstract=True, channels_last=bool(chip.cores.matrix.conv)),
                      chip, mode)
    res = simulate(prog, (), count_only=True)
    ops: dict = {}
    for name, cyc in kernel_times(prog, res):
        ops[name] = ops.get(name, 0) + cyc
    weights = sum(math.prod(t.shape) * _esize(t.dtype) for t, _ in prog.constants)
    return {"cycles": res.stats["cycles"], "busy": dict(res.stats["engine_busy_cycles"]), "ops": ops,
            "memory_bytes": prog.dram_bytes, "weight_bytes": weights, "clock_hz": chip.cores.clock_hz,
            "cores": chip.cores.count, "capacity": _capacity(chip)}


@lru_cache(maxsize=64)
def _simulate_whole(arch: Arch, chip_name: str, dtype: str, batch: int) -> dict:
    """The whole network compiled and simulated count-only (chips whose conv kernels chain, where
    pieces no longer add up): cycles, and each kernel's advance of the timeline (sim.kernel_times)
    and engine busy cycles attributed to the piece class its IR eqn belongs to."""
    import bisect

    from ..chip import load_chip
    from .compiler import compile_ir
    from .isa import QUEUES, Barrier
    from .sim import COST, Timing, kernel_times, simulate
    ir_dtype, mode = MODES[dtype]
    chip = load_chip(chip_name)
    marks: list = []
    pieces = _pieces(arch)
    prog = compile_ir(_build(arch, batch, ir_dtype, pieces, abstract=True, marks=marks), chip, mode)
    res = simulate(prog, (), count_only=True)
    clk, cores = chip.cores.clock_hz, chip.cores.count
    cls_of = [_piece_class(pieces[min(bisect.bisect_right(marks, e), len(pieces) - 1)]) if e >= 0 else
              _piece_class(pieces[-1]) for e in prog.meta["kernel_eqns"]]
    classes = {_piece_class(p): {"seconds": 0.0, "ops": {}, "busy": {}} for p in pieces}
    times = kernel_times(prog, res)
    for (name, cyc), c in zip(times, cls_of):
        d = classes[c]
        d["seconds"] += cyc / clk
        d["ops"][name] = d["ops"].get(name, 0.0) + cyc / clk
    tail = res.stats["cycles"] - sum(cyc for _, cyc in times)   # after the last barrier
    classes[_piece_class(pieces[-1])]["seconds"] += tail / clk
    seg = {}
    for stream in prog.streams:
        k = 0
        for ins in stream:
            if type(ins) is Barrier:
                k += 1
            else:
                seg[id(ins)] = k
    t = Timing.from_chip(chip)
    for _, q, _, _, ins in res.events:
        k = seg[id(ins)]
        b = classes[cls_of[min(k, len(cls_of) - 1)]]["busy"]
        b[QUEUES[q]] = b.get(QUEUES[q], 0.0) + COST[type(ins)](t, ins)[0] / clk / cores
    weights = sum(math.prod(x.shape) * _esize(x.dtype) for x, _ in prog.constants)
    return {"cycles": res.stats["cycles"], "busy": dict(res.stats["engine_busy_cycles"]), "classes": classes,
            "memory_bytes": prog.dram_bytes, "weight_bytes": weights, "clock_hz": clk, "cores": cores,
            "capacity": _capacity(chip)}


def _esize(dtype):
    from .isa import DTYPES
    return DTYPES[dtype].itemsize


def _capacity(chip) -> float:
    return chip.dram.bytes or chip.shared_buffer.bytes or chip.cores.count * chip.cores.sram.bytes


def simulate_batch(model: str, chip: str, dtype: str, batch: int) -> dict:
    """Count-only time of one batch: the sum over distinct pieces of (simulated cycles x count).
    Raises UnsupportedOpError when the batch does not fit the chip's memory (weights of the whole
    net + the largest piece's activations)."""
    from ..errors import UnsupportedOpError
    arch = _arch(model)
    if dtype not in MODES:
        raise TapeoutError(f"dtype {dtype!r}: choose one of {', '.join(MODES)}")
    if _chains(chip):
        return _whole_batch(model, arch, chip, dtype, batch)
    sims = [(p, n, _simulate_piece(p, arch, chip, dtype, batch)) for p, n in _distinct(arch)]
    weights = sum(n * r["weight_bytes"] for _, n, r in sims)
    peak = max(r["memory_bytes"] - r["weight_bytes"] for _, _, r in sims)
    cap = sims[0][2]["capacity"]
    if weights + peak > cap:
        raise UnsupportedOpError(f"{model} batch {batch}: {weights + peak:.3g} bytes (weights + activations) "
                                 f"exceed the {cap:.3g}-byte memory of {chip}")
    cycles = sum(n * r["cycles"] for _, n, r in sims)
    clk, cores = sims[0][2]["clock_hz"], sims[0][2]["cores"]
    classes: dict = {}
    for p, n, r in sims:
        c = classes.setdefault(_piece_class(p), {"seconds": 0.0, "ops": {}, "busy": {}})
        c["seconds"] += n * r["cycles"] / clk
        for k, v in r["ops"].items():
            c["ops"][k] = c["ops"].get(k, 0.0) + n * v / clk
        for k, v in r["busy"].items():
            c["busy"][k] = c["busy"].get(k, 0.0) + n * v / clk / cores
    busy = {q: sum(c["busy"].get(q, 0.0) for c in classes.values()) for q in ENGINES if q in sims[0][2]["busy"]}
    return _summary(model, chip, dtype, batch, cycles, clk, busy, classes, weights + peak)


ENGINES = ("dma", "mxu", "vec", "epi", "pool")


def _summary(model, chip: str, dtype: str, batch: int, cycles: float, clk: float, busy: dict, classes: dict,
             memory: float) -> dict:
    """simulate_batch's result; `busy`: engine -> busy seconds (the chip's engines only)."""
    sec = cycles / clk
    return {"samples_s": batch / sec, "batch": batch, "seconds_per_batch": sec, "cycles": cycles,
            "utilization": {q: v / sec for q, v in busy.items()}, "classes": classes,
            "memory_bytes": memory, "chip": chip, "model": model, "dtype": dtype}


def _chains(chip_name: str) -> bool:
    """Whether the chip's conv kernels chain (a conv engine): then the prediction simulates the whole
    network, since its pieces' kernels overlap across piece boundaries too."""
    from ..chip import load_chip
    return bool(load_chip(chip_name).cores.matrix.conv)


def _whole_batch(model, arch: Arch, chip: str, dtype: str, batch: int) -> dict:
    """simulate_batch for a chip whose kernels chain: the whole network in one program (the
    compiler raises UnsupportedOpError when it does not fit the chip's memory)."""
    from ..errors import UnsupportedOpError
    try:
        r = _simulate_whole(arch, chip, dtype, batch)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(f"{getattr(model, 'name', model)} batch {batch} does not fit {chip}: {e}") from None
    clk = r["clock_hz"]
    busy = {q: r["busy"][q] / clk / r["cores"] for q in ENGINES if q in r["busy"]}
    return _summary(model, chip, dtype, batch, r["cycles"], clk, busy, r["classes"], r["memory_bytes"])


def predict_throughput(model, chip, *, dtype: str = "int8", batch: int | None = None) -> dict:
    """Offline throughput of `model` on `chip`: batch / simulated seconds per batch, at `batch` or
    (None) at the best batch of BATCHES (doubling) that fits memory. Dict: samples_s, batch, seconds_per_batch,
    cycles, utilization (per engine, of the busiest-core time), classes (seconds, op seconds and
    engine-busy seconds per piece class: stem, stage1..4, head), memory_bytes, chip, model, dtype."""
    from ..errors import UnsupportedOpError
    chip = getattr(chip, "name", chip)
    if batch is not None:
        return simulate_batch(model, chip, dtype, int(batch))
    best = None
    for b in BATCHES:
        try:
            r = simulate_batch(model, chip, dtype, b)
        except UnsupportedOpError:
            break
        if best is not None and r["samples_s"] < best["samples_s"] * 1.01 and b >= 2 * best["batch"]:
            break                                   # no longer improving
        best = r if best is None or r["samples_s"] > best["samples_s"] else best
    if best is None:
        raise TapeoutError(f"{model} does not fit {chip} even at batch 1")
    return best


def _arch(model) -> Arch:
    if isinstance(model, Arch):
        return model
    if model not in MODELS:
        raise TapeoutError(f"vision model {model!r}: choose one of {', '.join(MODELS)}")
    return MODELS[model]
