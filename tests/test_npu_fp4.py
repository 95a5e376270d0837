"""FP4 (NVFP4, MXFP4) on the virtual NPU: packed e2m1 weights, Dequant4 with block scales, and
GEMMs bit-equal to the reference interpreter."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapeout
from tapeout.ir import Builder, blockfp, evaluate
from tapeout.npu.isa import Dequant4, decode, encode, from_asm, to_asm

CHIP = tapeout.load_chip("tapeout-n7")


def _program(fmt, M, N, K, seed, pow2_tensor_scale=True):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32)
    if pow2_tensor_scale:   # NVFP4's tensor scale becomes 2^-10: dequantized weights need few bits
        w *= np.float32(2688 * 2.0 ** -10) / np.abs(w).max()
    b = Builder(fmt)
    x = b.input((M, K), "bf16", name="x")
    prog = b.build(b.linear(x, blockfp.weight(b, w, fmt, dtype="bf16")))
    xs = (rng.integers(-16, 17, (M, K)) / 8).astype(np.float32)   # 4-bit significands: exact fp32 sums
    return prog, xs


@settings(max_examples=8, deadline=None)
@given(fmt=st.sampled_from(["nvfp4", "mxfp4"]), M=st.integers(1, 9), N=st.sampled_from([2, 16, 34, 96]),
       kb=st.integers(1, 4), seed=st.integers(0, 1000), mode=st.sampled_from(["bf16", "fp16"]))
def test_fp4_linear_bit_equal_to_interpreter(fmt, M, N, kb, seed, mode):
    K = kb * 32
    prog, xs = _program(fmt, M, N, K, seed)
    want = evaluate(prog, xs)[0].astype(np.float32)
    npu = tapeout.compile(prog, chip=CHIP, dtype=mode)
    np.testing.assert_array_equal(npu(xs)[0], want)
    deq = [i for s in npu.program.streams for i in s if isinstance(i, Dequant4)]
    assert deq and all(i.code == "e2m1" and i.group == blockfp.FORMATS[fmt].block for i in deq)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_fp4_weights_stay_packed_in_dram(fmt):
    """Weights cross DRAM as two e2m1 codes per byte plus one 1-byte scale per block."""
    M, N, K = 4, 64, 256
    prog, xs = _program(fmt, M, N, K, 1, pow2_tensor_scale=False)
    npu = tapeout.compile(prog, chip=CHIP, dtype="bf16")
    got = npu(xs)[0]
    want = evaluate(prog, xs)[0].astype(np.float32)
    assert np.linalg.norm(got - want) <= 2.0 ** -8 * np.linalg.norm(want)      # fp32 sums in another order
    block = blockfp.FORMATS[fmt].block
    weight_bytes = K * N // 2 + K // block * N
    assert npu.stats["bytes"]["dram"] == M * K * 2 + weight_bytes + M * N * 2


def test_dequant4_fields_round_trip():
    i = Dequant4(rows=64, cols=48, group=16, d_addr=0, d_dtype="bf16", d_rs=48, a_addr=4096, s_addr=8192,
                 s_dtype="fp8", s_rs=48, code="e2m1", imm=float(np.float32(0.0014506778)))
    assert decode(encode(i)) == i and from_asm(to_asm(i)) == i
    assert "code" not in to_asm(Dequant4(rows=1, cols=2, group=1, d_addr=0, d_dtype="bf16", d_rs=2, a_addr=0,
                                         s_addr=0, s_dtype="fp32", s_rs=2))


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_block_mode_quantizes_every_gemm_weight(fmt):
    """dtype="nvfp4"/"mxfp4": every GEMM weight block-quantized (tapeout.ir.blockfp.quantize_weights),
    the NPU follows the interpreter on that program (its f32 activations are stored in bf16)."""
    rng = np.random.default_rng(3)
    b = Builder("mlp")
    x = b.input((8, 64), "f32", name="x")
    h = b.silu(b.linear(b.rms_norm(x), b.const(rng.standard_normal((128, 64)).astype(np.float32) / 8, name="up")))
    prog = b.build(b.linear(h, b.const(rng.standard_normal((64, 128)).astype(np.float32) / 8, name="down")))
    xs = rng.standard_normal((8, 64)).astype(np.float32)
    npu = tapeout.compile(prog, chip=CHIP, dtype=fmt)
    want = evaluate(blockfp.quantize_weights(prog, fmt), xs)[0]
    got = npu(xs)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2
    assert sum(isinstance(i, Dequant4) for s in npu.program.streams for i in s) >= 2
    dense = evaluate(prog, xs)[0]
    assert 0.02 < np.linalg.norm(want - dense) / np.linalg.norm(dense) < 0.3     # FP4's own error, not zero


def test_native_fp4_multipliers_speed_up_the_array(tmp_path):
    """A chip file with macs_per_cycle.fp4 (4x bf16 here) runs Matmuls on FP4 weights (w_fp4=1) at
    that rate: 4x the columns per fold; tapeout-n7 (no fp4 MACs) at the bf16 rate. Same result."""
    from importlib import resources

    from tapeout.npu.isa import Matmul
    from tapeout.npu.sim import Timing, _matmul_cost
    text = (resources.files("tapeout") / "chips" / "tapeout-n7.toml").read_text()
    path = tmp_path / "n7-fp4.toml"
    path.write_text(text.replace('name = "tapeout-n7"', 'name = "n7-fp4"').replace("int8 = 32768", "int8 = 32768\nfp4 = 65536", 1))
    fast = tapeout.load_chip(str(path))
    mm = dict(acc_addr=0, a_addr=0, w_addr=0, M=256, K=256, N=512, lda=256, ldw=512, ldc=512, in_dtype="bf16",
              acc_dtype="fp32")
    n7, n7_fp4 = (_matmul_cost(Timing.from_chip(c), Matmul(**mm, w_fp4=1))[0] for c in (CHIP, fast))
    assert n7 == _matmul_cost(Timing.from_chip(CHIP), Matmul(**mm))[0] == 4 * n7_fp4   # folds 2 x 4 -> 2 x 1
    prog, xs = _program("mxfp4", 64, 512, 256, 2)
    outs = [tapeout.compile(prog, chip=c, dtype="bf16")(xs)[0] for c in (CHIP, fast)]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_shape_only_weights_stay_packed():
    """Count-only runs (shape-only weights, as tapeout.npu.llm uses) take the packed FP4 path too."""
    import ml_dtypes
    b = Builder("abstract")
    x = b.input((1, 512), "bf16", name="x")
    w = b.const(np.broadcast_to(np.zeros((), ml_dtypes.bfloat16), (1024, 512)), name="w")
    prog = b.build(b.linear(x, w))
    npu = tapeout.compile(prog, chip=CHIP, dtype="mxfp4")
    assert any(isinstance(i, Dequant4) for s in npu.program.streams for i in s)
    x_reads = npu.stats["bytes"]["dram"] - 1024 * 512 * (0.5 + 1 / 32) - 1024 * 2   # weights once, y once
    assert x_reads % (512 * 2) == 0 and 1 <= x_reads // (512 * 2) <= CHIP.cores.count    # x once per core at most
