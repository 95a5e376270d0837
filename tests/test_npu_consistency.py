"""The analytical model's NPU path (tapeout.perf.npu) against the virtual NPU's simulator.

Each case compiles a small program, simulates it count-only and compares the kernel's cycles with
the closed form, which uses the compiler's tile plan and the simulator's instruction costs."""
import importlib.util
from pathlib import Path

import pytest

from tapeout.chip import load_chip
from tapeout.llm.kernels import Kernel
from tapeout.npu import kernels as npu_kernels
from tapeout.perf import npu
from tapeout.perf.kernels import kernel_cost
from tapeout.perf.params import load_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("npu_consistency", ROOT / "benchmarks" / "npu_consistency.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
TOL = bench.GOAL


@pytest.mark.parametrize("case", [("tapeout-n7", 1, 6144, 4096, "bf16"), ("tapeout-n7", 16, 4096, 4096, "bf16"),
                                  ("tapeout-n7", 300, 1000, 700, "bf16"), ("tapeout-n7", 512, 2048, 1024, "bf16"),
                                  ("tapeout-n7", 512, 4096, 4096, "fp8")])
def test_gemm_matches_the_simulator(case):
    sim, model = bench.gemm_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [("tapeout-n7", 2, 32, 8, 1, 1024, False), ("tapeout-n7", 1, 8, 8, 256, 256, True),
                                  ("tapeout-n7", 1, 8, 2, 640, 640, True), ("hanguang-800", 1, 8, 8, 1, 2048, False)])
def test_attention_matches_the_simulator(case):
    sim, model = bench.attention_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [("tapeout-n7", 16, 4096), ("tapeout-n7", 700, 1024), ("hanguang-800", 64, 2048)])
def test_row_kernel_matches_the_simulator(case):
    sim, model = bench.rows_case(*case)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


@pytest.mark.parametrize("case", [(64, 56, 64, 3, 1), (512, 7, 2048, 1, 1), (128, 28, 128, 3, 2)])
def test_resnet_conv_matches_the_simulator(case):
    sim, model = bench.conv_case("tapeout-n7", *case, N=1)
    assert abs(sim / model - 1) <= TOL, (case, sim, model)


def test_decode_layer_matches_the_simulator():
    chip = load_chip("tapeout-n7")
    sim, model, _, _ = bench.layer_case("llama-3.1-8b", chip, "decode", 4, 512)
    assert abs(sim / model - 1) <= TOL, (sim, model)


def test_constants_mirror_the_compiler():
    assert npu.NBUF_SLOTS == npu_kernels.NBUF


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
