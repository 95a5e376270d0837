"""Chained conv kernels and window loads on a chip with a conv engine (hanguang-800): the kernel
after a chained barrier issues while the one before drains, the memory engine forms conv windows as
it loads them; results stay the interpreter's, data dependencies are kept, other chips unchanged."""
import dataclasses
from importlib import resources

import numpy as np
import pytest

from tapeout.chip import load_chip, parse_chip
from tapeout.ir import Builder, evaluate
from tapeout.npu import isa, sim
from tapeout.npu.compiler import compile_ir
from tapeout.npu.vision import Arch, resnet50

HG = load_chip("hanguang-800")
HG_TEXT = (resources.files("tapeout.chips") / "hanguang-800.toml").read_text(encoding="utf-8")
SMALL = Arch(blocks=(1, 1, 1, 1), width=8, classes=10, image=32)


def conv_prog(n, c, h, w, o, k, stride=1, pad=None, dilation=1, seed=0):
    rng = np.random.default_rng(seed)
    b = Builder("conv")
    x = b.input((n, c, h, w), "i8", name="x")
    pad = k // 2 if pad is None else pad
    y = b.conv2d(x, b.const(rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)), stride=stride, padding=pad,
                 dilation=dilation, acc_dtype="i32", dtype="i32")
    return b.build(y), [rng.integers(-127, 128, (n, c, h, w)).astype(np.int8)]


@pytest.mark.parametrize("n,c,h,w,o,k,stride,pad,dilation", [
    (2, 16, 7, 6, 24, 3, 1, 1, 1),           # 3x3 same: zero fills on all four sides
    (1, 3, 15, 15, 8, 7, 2, 3, 1),           # the stem's 7x7 / 2, 3 channels a tap
    (2, 32, 8, 8, 16, 1, 2, 0, 1),           # 1x1 stride 2 (the downsample shortcut)
    (1, 8, 9, 9, 8, 3, 2, ((0, 2), (1, 0)), 1),   # asymmetric padding, stride 2
    (1, 8, 9, 9, 8, 3, 1, 2, 2),             # dilation 2
    (1, 300, 4, 4, 16, 3, 1, 1, 1),          # K = 2700 > one K chunk: a chunk ends inside a tap
])
def test_window_loads_match_the_interpreter(n, c, h, w, o, k, stride, pad, dilation):
    prog, xs = conv_prog(n, c, h, w, o, k, stride, pad, dilation)
    p = compile_ir(prog, HG, "int8")
    assert np.array_equal(sim.simulate(p, xs).outputs[0], evaluate(prog, *xs)[0].astype(np.int64))


def block_prog(n=2, c=32, h=14, seed=0):
    """1x1 -> 3x3 -> 1x1 int8 convs with requantising epilogues: a bottleneck's chain."""
    rng = np.random.default_rng(seed)
    b = Builder("chain")
    x = b.input((n, c, h, h), "i8", name="x")
    for j, (o, k) in enumerate(((c, 1), (c, 3), (2 * c, 1))):
        y = b.conv2d(x, b.const(rng.integers(-127, 128, (o, x.shape[1], k, k)).astype(np.int8)), padding=k // 2,
                     acc_dtype="i32", dtype="i32")
        x = b.cast(b.relu(b.mul(b.cast(y, dtype="f32"), 1.0 / 2048)), dtype="i8")
    return b.build(x), [rng.integers(-127, 128, (n, c, h, h)).astype(np.int8)]


def _segments(p):
    """Segment (kernel) index of each instruction, per core."""
    seg = {}
    for stream in p.streams:
        k = 0
        for ins in stream:
            if type(ins) is isa.Barrier:
                k += 1
            else:
                seg[id(ins)] = k
    return seg


def test_chained_convs_keep_every_dependency_and_the_interpreters_result():
    prog, xs = block_prog()
    p = compile_ir(prog, HG, "int8")
    assert p.meta["chained"] and len(p.meta["chained"]) == len(p.meta["kernels"]) - 2    # all but before "output"
    r = sim.simulate(p, xs)
    assert np.array_equal(r.outputs[0], evaluate(prog, *xs)[0].astype(np.int64))
    seg = _segments(p)
    ev = [(seg[id(i)], c, s, e, i) for c, q, s, e, i in r.events]
    dmas = [(k, c, s, e, sim._far_ranges(i)) for k, c, s, e, i in ev if type(i) is isa.Dma]
    n_raw = 0
    for k1, _, _, e1, r1 in dmas:                # kernel k+1's DMA after kernel k's on every hazard
        for k2, _, s2, _, r2 in dmas:
            if k2 == k1 + 1 and any(sp1 == sp2 and lo1 < hi2 and lo2 < hi1 and (w1 or w2)
                                    for sp1, lo1, hi1, w1 in r1 for sp2, lo2, hi2, w2 in r2):
                assert s2 >= e1
                n_raw += 1
    assert n_raw > 0
    ends = {}
    for k, _, _, e, _ in ev:
        ends[k] = max(ends.get(k, 0), e)
    for k, _, s, _, _ in ev:                     # two kernels in flight at most
        assert k < 2 or s >= ends[k - 2]
    sram = {}                                    # consecutive kernels use disjoint SRAM on each core
    for k, c, _, _, i in ev:
        if type(i) is isa.Dma:
            for sp, a in (("src", i.src_addr), ("dst", i.dst_addr)):
                if getattr(i, f"{sp}_space") == "sram":
                    lo, hi = sram.get((k, c), (1 << 62, 0))
                    sram[(k, c)] = (min(lo, a), max(hi, a + 1))
    for (k, c), (lo, hi) in sram.items():
        if (k + 1, c) in sram:
            lo2, hi2 = sram[(k + 1, c)]
            assert hi <= lo2 or hi2 <= lo


def test_two_chained_convs_take_less_than_apart_but_no_less_than_the_engine():
    """A 1x1 conv then a 3x3 conv reading it (stage 1's shapes): chained, the 3x3's first tiles start
    while the 1x1 drains, so the pair takes less than the two kernels one after the other; it cannot
    beat the conv engine's busy cycles on the busiest core plus one skew (the last fold's results)."""
    rng = np.random.default_rng(1)
    w1 = rng.integers(-127, 128, (64, 64, 1, 1)).astype(np.int8)
    w2 = rng.integers(-127, 128, (64, 64, 3, 3)).astype(np.int8)

    def first(b, x):
        y = b.conv2d(x, b.const(w1), acc_dtype="i32", dtype="i32")
        return b.cast(b.relu(b.mul(b.cast(y, dtype="f32"), 1 / 512)), dtype="i8")

    def second(b, y):
        return b.conv2d(y, b.const(w2), padding=1, acc_dtype="i32", dtype="i32")

    progs = []
    for f in ((first,), (second,), (first, second)):
        b = Builder("convs")
        x = b.input((16, 64, 56, 56), "i8", name="x")
        for g in f:
            x = g(b, x)
        progs.append(compile_ir(b.build(x), HG, "int8"))
    one, two, pair = (sim.simulate(p, (), count_only=True) for p in progs)
    assert progs[2].meta["chained"] == [0]
    t = sim.Timing.from_chip(HG)
    skew = isa.matmul_latency(t.geom, True)
    apart = one.barriers[0] + t.barrier + two.barriers[0]      # each conv kernel alone, one after the other
    chained = pair.barriers[1]                                # the two conv kernels chained
    assert chained < apart - skew
    busy = max(sum(sim.COST[isa.Matmul](t, i)[0] for i in s if type(i) is isa.Matmul) for s in progs[2].streams)
    assert chained >= busy + skew


def test_pieces_chain_only_on_a_conv_engine_and_llm_gemms_never():
    b = Builder("lin")
    x = b.input((64, 256), "bf16", name="x")
    lin = b.build(b.linear(x, b.const(np.ones((128, 256), np.float32))))
    assert compile_ir(lin, HG, "int8").meta["chained"] == []
    ir = resnet50(1, "int8", arch=SMALL, abstract=True)
    assert "chained" not in compile_ir(ir, load_chip("tapeout-n7"), "int8").meta
    assert compile_ir(ir, HG, "int8").meta["chained"]


def test_chaining_only_removes_time():
    """The same programs with every barrier a full one (meta chained dropped) take longer."""
    prog, _ = block_prog()
    p = compile_ir(prog, HG, "int8")
    full = sim.simulate(dataclasses.replace(p, meta={**p.meta, "chained": []}), (), count_only=True)
    assert sim.simulate(p, (), count_only=True).stats["cycles"] < full.stats["cycles"]


def test_a_chained_resnet_computes_what_the_unchained_im2col_chip_does():
    """The small int8 ResNet (every block kind, stem pool, head) on hanguang-800, chained with window
    loads and channels-last activations, gives bit for bit the logits of the same chip file without
    the conv engine (im2col GEMMs, NCHW, full barriers), and tracks the interpreter as before."""
    rng = np.random.default_rng(0)
    prog = resnet50(1, "int8", arch=SMALL)
    x = rng.integers(-127, 128, (1, 3, 32, 32)).astype(np.int8)
    p = compile_ir(prog, HG, "int8")
    assert len(p.meta["chained"]) > 10
    out = sim.simulate(p, [x]).outputs[0]
    plain = compile_ir(prog, parse_chip("".join(ln for ln in HG_TEXT.splitlines(keepends=True)
                                                if "cores.matrix.conv" not in ln and not ln.startswith(
                                                    ("dataflow = \"sliding", "channels_in", "channels_out", "pixels"))),
                                        path="hanguang-im2col.toml"), "int8")
    assert "chained" not in plain.meta
    assert np.array_equal(out, sim.simulate(plain, [x]).outputs[0])
    ref = evaluate(prog, x)[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.15      # the FC's dynamic int8 (tests/test_npu_vision.py)
