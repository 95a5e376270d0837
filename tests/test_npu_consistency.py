"""The analytical model's NPU path (tapeout.perf.npu) against the virtual NPU's simulator.

Each case compiles a small program, simulates it count-only and compares the kernel's cycles with
the closed form, which uses the compiler's tile plan and the simulator's instruction costs. Every
case of benchmarks/npu_consistency.py is asserted here too (about 10 s), plus a few shapes of its own."""

import pytest

from bench_helpers import load_benchmark
from tapeout.chip import load_chip
from tapeout.llm.kernels import Kernel
from tapeout.npu import kernels as npu_kernels
from tapeout.perf import npu
from tapeout.perf.kernels import kernel_cost
from tapeout.perf.params import load_params

bench = load_benchmark("npu_consistency")
TOL = bench.GOAL


@pytest.mark.parametrize("case", [("tapeout-n7", 16, 4096, 4096, "bf16"), ("tapeout-n7", 300, 1000, 700, "bf16"),
                                  ("tapeout-n7", 512, 2048, 1024, "bf16"), ("tapeout-n7", 300, 1000, 700, "int8"),
                                  ("hanguang-800", 300, 1000, 700, "int8"), ("hanguang-800", 64, 2048, 1024, "bf16"),
                                  *bench.GEMMS])
def test_gemm_matches_the_simulator(case):
    sim, model = bench.gemm_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [("tapeout-n7", 2, 32, 8, 1, 1024, False), ("tapeout-n7", 1, 8, 8, 256, 256, True),
                                  ("tapeout-n7", 1, 8, 2, 640, 640, True), ("hanguang-800", 1, 8, 8, 1, 2048, False),
                                  *bench.ATTENTION])
def test_attention_matches_the_simulator(case):
    sim, model = bench.attention_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [("tapeout-n7", 700, 1024), ("hanguang-800", 64, 2048), *bench.ROWS])
def test_row_kernel_matches_the_simulator(case):
    sim, model = bench.rows_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [(64, 56, 64, 3, 1), (512, 7, 2048, 1, 1), (128, 28, 128, 3, 2), (3, 224, 64, 7, 2)])
def test_resnet_conv_matches_the_simulator(case):
    sim, model = bench.conv_case("tapeout-n7", *case, N=1)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", bench.CONVS)
def test_benchmark_convs_match_the_simulator(case):
    sim, model = bench.conv_case("tapeout-n7", *case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [("decode", 4, 512), *bench.LAYERS])
def test_layer_matches_the_simulator(case):
    chip = load_chip("tapeout-n7")
    sim, model, _, _ = bench.layer_case("llama-3.1-8b", chip, *case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


def test_constants_mirror_the_compiler():
    assert npu.NBUF_SLOTS == npu_kernels.NBUF
    assert npu.LAG == npu_kernels.LAG


def test_the_output_stage_takes_what_the_compiler_gives_it():
    """Dequantisation scales go to the Fixpipe where the chip has an output stage that scales
    (hanguang-800), to the vector unit where it has none (tapeout-n7): the same fused_prefix."""
    steps = lambda chip: [s[0] for s in npu.epilogue_steps(load_chip(chip), npu.DEQUANT, 64, 256, "int32", "bf16", "dram")]
    assert steps("hanguang-800") == ["load", "load", "fix", "store"]
    assert steps("tapeout-n7") == ["ld_eb", "vec", "ld_eb", "vec", "vec", "store"]
    # a residual add after a bias: one full operand, both on the output stage; a second full operand is not
    ep = (("add", "bf16", False, "dram"), ("add", "bf16", True), ("mul", "bf16", True))
    assert [s[0] for s in npu.epilogue_steps(load_chip("hanguang-800"), ep, 64, 256, "fp32", "bf16", "shared")] == \
        ["load", "load", "fix", "ld_eb", "vec", "vec", "store"]


def test_gpu_and_cube_chips_keep_their_model():
    assert not npu.applies(load_chip("h100-sxm")) and not npu.applies(load_chip("ascend-910c"))
    assert not npu.applies(load_chip("tpu-v5e"))
    assert npu.applies(load_chip("tapeout-n7")) and npu.applies(load_chip("hanguang-800"))


def test_a_slower_stack_slows_the_npu_path():
    chip = load_chip("tapeout-n7")
    k = Kernel("gemm", "g", 2 * 2048 * 4096 * 4096, 2 * (2048 * 4096 + 4096 * 4096), 2 * 2048 * 4096,
               (2048, 4096, 4096, 1), "bf16", weight_bytes=2 * 4096 * 4096)
    p = load_params(chip.chip.family)
    import dataclasses
    slow = dataclasses.replace(p, mma_efficiency=p.mma_efficiency / 2, tiled_dram_efficiency=p.tiled_dram_efficiency / 2)
    fast, slower = kernel_cost(chip, p, k), kernel_cost(chip, slow, k)
    assert max(slower[0] / 1e9, slower[1]) == pytest.approx(2 * max(fast[0] / 1e9, fast[1]), rel=1e-6)
