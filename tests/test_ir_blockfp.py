"""FP4 block formats (NVFP4, MXFP4) in the IR against an independent ml_dtypes reference.

The reference below is written from the format rules alone (OCP MX v1.0 section 6.3 for MXFP4,
NVIDIA's two-level scaling for NVFP4), with ml_dtypes casts for every rounding; the IR side is
`tapeout.ir.blockfp.quantize` (scale choice) plus the interpreter's quantize/dequantize ops.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tapeout.errors import TapeoutError
from tapeout.ir import Builder, IRError, blockfp, check, evaluate

F4, E4M3, E8M0 = ml_dtypes.float4_e2m1fn, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e8m0fnu


def reference_qdq(x: np.ndarray, fmt: str) -> np.ndarray:
    """Quantize-dequantize x[R, K] with blocks along K, from the formats' definitions."""
    block = {"mxfp4": 32, "nvfp4": 16}[fmt]
    R, K = x.shape
    xb = x.astype(np.float32).reshape(R, K // block, block)
    amax = np.abs(xb).max(-1, keepdims=True)
    if fmt == "mxfp4":   # X = 2^(floor(log2(amax)) - emax_elem), emax_elem = 2; e8m0 spans 2^-127..2^127
        lg = np.floor(np.log2(np.where(amax > 0, amax, 1).astype(np.float64)))
        e = np.clip(np.where(amax > 0, lg - 2, -127), -127, 127)
        scale = (2.0 ** e).astype(np.float32).astype(E8M0).astype(np.float32)
        ts = np.float32(1.0)
    else:                # fp32 tensor scale amax / (6 * 448); e4m3 block scales amax_b / 6 / ts (RNE)
        t_amax = np.float32(np.abs(x).max())
        ts = t_amax / np.float32(6 * 448) if t_amax > 0 else np.float32(1.0)
        scale = np.minimum(amax / np.float32(6) / ts, np.float32(448)).astype(E4M3).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(xb / (scale * ts), -6, 6).astype(F4)     # RNE to e2m1, saturating at +-6
    return ((q.astype(np.float32) * scale) * ts).reshape(R, K)


def via_ir(x: np.ndarray, fmt: str) -> np.ndarray:
    """blockfp's scales, then the IR's dequantize op evaluated by the interpreter."""
    qt = blockfp.quantize(x, fmt)
    b = Builder("qdq")
    q = b.input(qt.q.shape, "f4e2m1", name="q")
    y = b.dequantize(q, b.const(qt.scale, name="s"), dtype="f32", tensor_scale=qt.tensor_scale)
    prog = b.build(y)
    check(prog)
    return evaluate(prog, qt.q)[0]


def test_e2m1_values_and_rounding():
    codes = np.arange(16, dtype=np.uint8).view(F4).astype(np.float32)
    assert sorted(set(np.abs(codes).tolist())) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    x = np.array([0.25, 0.75, 1.25, 2.5, 3.5, 5.0, 7.0, -100.0], np.float32)
    b = Builder("q")
    xi = b.input(x.shape, "f32")
    out = evaluate(b.build(b.quantize(xi, 1.0, dtype="f4e2m1")), x)[0].astype(np.float32)
    np.testing.assert_array_equal(out, [0, 1, 1, 2, 4, 4, 6, -6])   # ties to even, saturation


def test_mxfp4_known_block():
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [5.0, 0.3, -7.5, 0.1]     # amax 7.5: floor(log2) = 2, scale 2^0
    qt = blockfp.quantize(x, "mxfp4")
    assert qt.scale.astype(np.float32).item() == 1.0 and qt.tensor_scale == 1.0
    np.testing.assert_array_equal(qt.q.astype(np.float32)[0, :4], [4.0, 0.5, -6.0, 0.0])


def test_nvfp4_known_scales():
    x = np.zeros((1, 32), np.float32)
    x[0, 0], x[0, 16] = 2688.0, 6.0      # tensor scale 2688 / 2688 = 1; block scales 448 and 1
    qt = blockfp.quantize(x, "nvfp4")
    assert qt.tensor_scale == 1.0
    np.testing.assert_array_equal(qt.scale.astype(np.float32), [[448.0, 1.0]])
    np.testing.assert_array_equal(blockfp.dequantize(qt)[0, [0, 16]], [2688.0, 6.0])


finite = st.floats(-3e4, 3e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(["mxfp4", "nvfp4"]), rows=st.integers(1, 3), blocks=st.integers(1, 3),
       data=st.data(), exp=st.integers(-30, 12))
def test_quantize_dequantize_matches_reference(fmt, rows, blocks, data, exp):
    K = blocks * blockfp.FORMATS[fmt].block
    x = data.draw(arrays(np.float32, (rows, K), elements=finite)) * np.float32(2.0 ** exp)
    x[0, 0] = 0.0 if data.draw(st.booleans()) else x[0, 0]
    want = reference_qdq(x, fmt)
    np.testing.assert_array_equal(via_ir(x, fmt), want)
    np.testing.assert_array_equal(blockfp.dequantize(blockfp.quantize(x, fmt)), want)


def test_zero_tensor_and_errors():
    z = np.zeros((2, 32), np.float32)
    for fmt in ("mxfp4", "nvfp4"):
        np.testing.assert_array_equal(via_ir(z, fmt), z)
    with pytest.raises(TapeoutError, match="multiple of the block 32"):
        blockfp.quantize(np.ones((2, 48), np.float32), "mxfp4")
    with pytest.raises(TapeoutError, match="unknown"):
        blockfp.quantize(z, "fp3")
    b = Builder("bad")
    q = b.input((2, 32), "f4e2m1")
    with pytest.raises(IRError, match="tensor_scale"):
        b.dequantize(q, b.const(np.ones((2, 2), np.float32)), tensor_scale=0.0)


def test_quantize_weights_rewrites_gemm_weights():
    rng = np.random.default_rng(0)
    b = Builder("mlp")
    x = b.input((3, 64), "f32", name="x")
    w1 = b.const(rng.standard_normal((32, 64)).astype(np.float32), name="w1")
    w2 = b.const(rng.standard_normal((32, 8)).astype(np.float32), name="w2")        # matmul b[K, N]
    prog = b.build(b.matmul(b.relu(b.linear(x, w1)), w2))
    for fmt in ("nvfp4", "mxfp4"):
        qp = blockfp.quantize_weights(prog, fmt)
        check(qp)
        assert qp.op_counts()["dequantize"] == 2 and "w1" not in qp.consts
        assert qp.consts[f"w2_{fmt}_s"].shape == (32 // blockfp.FORMATS[fmt].block, 8)
        xs = rng.standard_normal((3, 64)).astype(np.float32)
        w1q = reference_qdq(prog.consts["w1"], fmt)
        w2q = reference_qdq(prog.consts["w2"].T.copy(), fmt).T
        want = np.maximum(xs @ w1q.T, 0) @ w2q
        np.testing.assert_allclose(evaluate(qp, xs)[0], want, rtol=1e-5, atol=1e-4)
