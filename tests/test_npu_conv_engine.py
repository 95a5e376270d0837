"""A chip file's convolution engine (cores.matrix.conv): convolutions' Matmuls run at its rate, other
GEMMs on the array; results are the same sums either way."""
from importlib import resources

import numpy as np
import pytest

from tapeout.chip import load_chip, parse_chip
from tapeout.errors import ChipFileError
from tapeout.ir import Builder, evaluate
from tapeout.npu import isa, sim
from tapeout.npu.compiler import compile_ir

HG = (resources.files("tapeout.chips") / "hanguang-800.toml").read_text(encoding="utf-8")


def without_conv_engine():
    lines, out, skip = HG.splitlines(keepends=True), [], False
    for ln in lines:
        if ln.startswith("["):
            skip = ln.startswith("[cores.matrix.conv]")
        if not skip and not ln.startswith('"cores.matrix.conv'):
            out.append(ln)
    return parse_chip("".join(out), path="hanguang-im2col.toml")


def test_conv_engine_occupancy_formula():
    g = isa.Geometry.from_chip(load_chip("hanguang-800"))
    ci, co, px = g.conv
    assert (ci, co, px) == (128, 128, 9)
    assert isa.matmul_occupancy(g, 6273, 256, 64, "int8", conv=True) == 2 * 1 * 697
    assert isa.matmul_occupancy(g, 100, 129, 200, "int8", conv=True) == 2 * 2 * ci      # weight load bound
    assert isa.matmul_occupancy(g, 6273, 256, 64, "int8") == 1 * 1 * 6273             # the 384 x 384 array
    assert isa.matmul_latency(g, True) == 2 * ci + co - 2
    assert isa.matmul_cycles(g, 900, 128, 128, "int8", conv=True) == isa.matmul_latency(g, True) + ci


def test_convs_use_the_engine_linears_the_array_and_results_do_not_change():
    rng = np.random.default_rng(0)
    b = Builder("cl")
    x = b.input((2, 16, 6, 6), "i8", name="x")
    y = b.conv2d(x, b.const(rng.integers(-127, 128, (24, 16, 3, 3)).astype(np.int8)), padding=1, acc_dtype="i32",
                 dtype="i32")
    z = b.linear(b.reshape(b.cast(y, dtype="f32"), shape=(2, 24 * 36)), b.const(rng.standard_normal((10, 24 * 36)).astype(np.float32)))
    prog = b.build(y, z)
    xs = [rng.integers(-127, 128, (2, 16, 6, 6)).astype(np.int8)]
    p = compile_ir(prog, load_chip("hanguang-800"), "int8")
    mm = [i for s in p.streams for i in s if type(i) is isa.Matmul]
    assert {i.conv for i in mm if i.K % 144 == 0 or i.N == 24} == {1} and {i.conv for i in mm if i.N == 10} == {0}
    r, q = sim.simulate(p, xs), sim.simulate(compile_ir(prog, without_conv_engine(), "int8"), xs)
    assert np.array_equal(r.outputs[0], evaluate(prog, *xs)[0].astype(np.int32))
    assert np.array_equal(r.outputs[0], q.outputs[0]) and np.array_equal(r.outputs[1], q.outputs[1])


def test_a_conv_engine_above_the_peak_is_a_one_line_error():
    with pytest.raises(ChipFileError, match="cores.matrix.conv") as e:
        parse_chip(HG.replace("pixels = 9", "pixels = 10"), path="hg-big.toml")
    assert "\n" not in str(e.value)
