"""Every IR op through the numpy reference interpreter, compared with PyTorch (or numpy where
torch has no such op). Float paths are compared in units in the last place; integer and bool
paths exactly."""
import math

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import mutually_broadcastable_shapes  # noqa: E402

from tapeout.ir import OPS  # noqa: E402
from tapeout.ir.interp import erf  # noqa: E402
from ir_helpers import from_torch, run_op, to_torch, ulp_diff  # noqa: E402

FAST = settings(max_examples=25, deadline=None)
LOWP = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def rand(shape, dtype="f32", seed=0, lo=-3.0, hi=3.0):
    return np.asarray(np.random.default_rng(seed).uniform(lo, hi, shape)).astype(LOWP.get(dtype, dtype))


def assert_ulp(ours, ref, max_ulp=1, atol=0.0):
    """Within max_ulp units in the last place, or within atol (for results near zero, where
    cancellation makes ulps meaningless)."""
    ref = from_torch(ref) if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (ours.shape, ref.shape, ours.dtype, ref.dtype)
    d = ulp_diff(ours, ref)
    d[np.abs(ours.astype(np.float64) - ref.astype(np.float64)) <= atol] = 0
    assert d.max(initial=0) <= max_ulp, f"max {d.max()} ulp"


# ---- elementwise -------------------------------------------------------------------------------
UNARY = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "sin": torch.sin, "cos": torch.cos,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "silu": F.silu, "erf": torch.erf, "floor": torch.floor,
    "ceil": torch.ceil, "round": torch.round, "sign": torch.sign, "relu": torch.relu,
}
POSITIVE = {"log", "sqrt", "rsqrt"}
# (torch CPU sqrt is not correctly rounded; ours is, see test_sqrt_correctly_rounded)
# f32 transcendental results may differ from torch's vectorized (SLEEF) kernels by a few ulp
F32_ULP = {"sqrt": 1, "reciprocal": 1, "exp": 2, "log": 2, "sin": 2, "cos": 2, "tanh": 3, "sigmoid": 3, "silu": 4, "erf": 2, "rsqrt": 2}


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_matches_torch(op, dtype):
    lo = 0.01 if op in POSITIVE else -4.0
    x = rand((7, 33), dtype, seed=1, lo=lo, hi=4.0)
    x.flat[:4] = np.array([0.5, 1.5, 2.5, -0.5], np.float32).astype(x.dtype) if op not in POSITIVE else x.flat[:4]
    ours = run_op(op, x)
    assert_ulp(ours, UNARY[op](to_torch(x)), F32_ULP.get(op, 0) if dtype == "f32" else 1)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gelu_both_forms(approximate, dtype):
    x = rand((5, 64), dtype, seed=2, lo=-6, hi=6)
    # torch's f32 gelu loses relative accuracy for x << 0 (1 + erf(x) cancels); ours uses f64 erf
    assert_ulp(run_op("gelu", x, approximate=approximate),
               F.gelu(to_torch(x), approximate=approximate), 4 if dtype == "f32" else 1, atol=1e-6)


def test_erf_is_accurate_to_double():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, np.inf, -np.inf]])
    ref = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(erf(x) - ref)) < 5e-15
    assert np.isnan(erf(np.array([np.nan]))[0])


def test_clamp_and_logical_not():
    x = rand((4, 9), seed=3)
    assert_ulp(run_op("clamp", x, min=-1.0, max=0.5), torch.clamp(to_torch(x), -1.0, 0.5), 0)
    assert_ulp(run_op("clamp", x, min=0.25), torch.clamp(to_torch(x), min=0.25), 0)
    m = x > 0
    assert np.array_equal(run_op("logical_not", m), ~m)


BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "maximum": torch.maximum, "minimum": torch.minimum, "pow": torch.pow}
COMPARE = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}


@FAST
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       op=st.sampled_from(sorted(BINARY)), dtype=st.sampled_from(["f32", "bf16", "f16"]), seed=st.integers(0, 99))
def test_binary_float_broadcasting(shapes, op, dtype, seed):
    a = rand(shapes.input_shapes[0], dtype, seed, lo=0.1 if op == "pow" else -3)
    b = rand(shapes.input_shapes[1], dtype, seed + 1, lo=0.1 if op == "div" else -3)
    ref = BINARY[op](to_torch(a), to_torch(b))
    assert_ulp(run_op(op, a, b), ref, (2 if op == "pow" else 0) if dtype == "f32" else 1)


@pytest.mark.parametrize("dtype", ["i8", "i32", "i64", "u8"])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
def test_binary_integer_exact_with_wraparound(op, dtype):
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype.replace("i", "int").replace("u8", "uint8").replace("uint8nt8", "uint8"))
    a = rng.integers(info.min, info.max, (6, 10), endpoint=True).astype(info.dtype)
    b = rng.integers(info.min, info.max, (1, 10), endpoint=True).astype(info.dtype)
    b[b == 0] = 1
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ref = torch.div(ta, tb, rounding_mode="trunc") if op == "div" else BINARY[op](ta, tb)
    assert np.array_equal(run_op(op, a, b), ref.numpy())


def test_int_div_truncates_toward_zero_and_by_zero_is_zero():
    a = np.array([7, -7, 7, -7, 5], np.int32)
    b = np.array([2, 2, -2, -2, 0], np.int32)
    assert run_op("div", a, b).tolist() == [3, -3, -3, 3, 0]


@FAST
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=5),
       op=st.sampled_from(sorted(COMPARE)), seed=st.integers(0, 99))
def test_compare_exact(shapes, op, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, shapes.input_shapes[0]).astype(np.float32)
    b = rng.integers(-2, 3, shapes.input_shapes[1]).astype(np.float32)
    assert np.array_equal(run_op(op, a, b), COMPARE[op](torch.from_numpy(a), torch.from_numpy(b)).numpy())


@pytest.mark.parametrize("op", ["logical_and", "logical_or", "logical_xor"])
def test_logical(op):
    rng = np.random.default_rng(5)
    a, b = rng.random((3, 4)) > 0.5, rng.random((1, 4)) > 0.5
    assert np.array_equal(run_op(op, a, b), getattr(torch, op)(torch.from_numpy(a), torch.from_numpy(b)).numpy())


def test_where_and_literals():
    c = rand((3, 5), seed=6) > 0
    a, b = rand((3, 5), "bf16", 7), rand((1, 5), "bf16", 8)
    ref = torch.where(torch.from_numpy(c), to_torch(a), to_torch(b))
    assert_ulp(run_op("where", c, a, b), ref, 0)
    assert_ulp(run_op("where", c, a, 0.0), torch.where(torch.from_numpy(c), to_torch(a), 0.0), 0)
    assert_ulp(run_op("add", a, 1.0), to_torch(a) + 1.0, 0)


# ---- casts and low precision ---------------------------------------------------------------------
FLOAT_TARGETS = ["bf16", "f16", "f8e4m3", "f8e5m2"]


@pytest.mark.parametrize("target", FLOAT_TARGETS)
def test_cast_float_rounds_like_torch_bit_exact(target):
    from tapeout.frontends.torch_export import torch_dtype
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-6, 4, 2000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 448.0, 464.0, 1e6, -1e6, 57344.0, 65504.0]]).astype(np.float32)
    # exact ties of the target format: halfway between two representable values
    ties = (np.arange(1, 200, dtype=np.float32) + 0.5) * np.float32(2.0 ** -7)
    x = np.concatenate([x, ties, -ties])
    ours = run_op("cast", x, dtype=target)
    ref = from_torch(torch.from_numpy(x).to(torch_dtype(target)))
    bits = np.uint8 if "f8" in target else np.uint16
    nan = np.isnan(x)
    assert np.isnan(ours[nan].astype(np.float32)).all() and np.isnan(ref[nan].astype(np.float32)).all()
    assert np.array_equal(ours[~nan].view(bits), ref[~nan].view(bits))  # bit-exact (NaN payloads aside)
    # and, inside the format's range, equals ml_dtypes' own RNE conversion
    fin = ~nan & (np.abs(x) <= float(ml_dtypes.finfo(ours.dtype).max))
    assert np.array_equal(ours[fin].view(bits), x[fin].astype(ours.dtype).view(bits))


def test_f8e4m3_saturates_and_e5m2_overflows_to_inf():
    x = np.array([500.0, -1e5, np.inf], np.float32)
    assert run_op("cast", x, dtype="f8e4m3").astype(np.float32).tolist() == [448.0, -448.0, 448.0]
    assert np.isinf(run_op("cast", x * 1000, dtype="f8e5m2").astype(np.float32)).all()


def test_cast_float_to_int_truncates_and_saturates():
    x = np.array([2.7, -2.7, 0.5, -0.5, 1e10, -1e10, np.nan, 7.9, -8.9], np.float32)
    i8 = run_op("cast", x, dtype="i8")
    assert i8.tolist() == [2, -2, 0, 0, 127, -128, 0, 7, -8]
    in_range = x[[0, 1, 2, 3, 7, 8]]
    assert np.array_equal(run_op("cast", in_range, dtype="i32"), torch.from_numpy(in_range).to(torch.int32).numpy())
    i4 = run_op("cast", x, dtype="i4")
    assert i4.astype(np.int64).tolist() == [2, -2, 0, 0, 7, -8, 0, 7, -8]


def test_cast_int_wraps_and_bool():
    a = np.array([127, 128, 255, -129, 1000], np.int64)
    assert np.array_equal(run_op("cast", a, dtype="i8"), torch.from_numpy(a).to(torch.int8).numpy())
    assert run_op("cast", a, dtype="bool").all()
    assert run_op("cast", np.array([True, False]), dtype="f32").tolist() == [1.0, 0.0]


def test_bf16_arithmetic_rounds_once_from_f32():
    a = rand((1000,), "bf16", 10)
    b = rand((1000,), "bf16", 11)
    exact = (a.astype(np.float32) * b.astype(np.float32)).astype(ml_dtypes.bfloat16)
    assert np.array_equal(run_op("mul", a, b).view(np.uint16), exact.view(np.uint16))


# ---- reductions ---------------------------------------------------------------------------------
RED = {"reduce_sum": torch.sum, "reduce_mean": torch.mean, "reduce_max": torch.amax, "reduce_min": torch.amin}


@FAST
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data(),
       op=st.sampled_from(sorted(RED)), keep=st.booleans(), dtype=st.sampled_from(["f32", "bf16"]))
def test_reductions(shape, data, op, keep, dtype):
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
    if len({a % len(shape) for a in axes}) != len(axes):
        return
    x = rand(tuple(shape), dtype, 12)
    ref = RED[op](to_torch(x), dim=tuple(axes), keepdim=keep)
    # f32 sums cancel: summation order (ours pairwise, torch vectorized) shows near zero
    assert_ulp(run_op(op, x, axes=tuple(axes), keepdims=keep), ref, 8 if dtype == "f32" else 1,
               atol=1e-5 if dtype == "f32" else 0)


def test_integer_sum_wraps_and_arg_reductions():
    x = np.random.default_rng(13).integers(-5, 5, (4, 7, 3)).astype(np.int64)
    assert np.array_equal(run_op("reduce_sum", x, axes=(1,)), x.sum(1))
    for op, f in (("argmax", torch.argmax), ("argmin", torch.argmin)):
        for axis in (0, 1, -1):
            for keep in (False, True):
                ref = f(torch.from_numpy(x.astype(np.float32)), dim=axis, keepdim=keep).numpy()
                assert np.array_equal(run_op(op, x.astype(np.float32), axis=axis, keepdims=keep), ref)
    y = np.array([[1, 3, 3, 0]], np.float32)  # ties: first index
    assert run_op("argmax", y, axis=1).tolist() == [1]


def test_cumsum():
    x = rand((3, 8), seed=14)
    assert_ulp(run_op("cumsum", x, axis=1), torch.cumsum(to_torch(x), 1), 4)
    b = np.ones((2, 5), np.int64)
    assert run_op("cumsum", b, axis=-1)[0].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("op,f", [("softmax", torch.softmax), ("log_softmax", torch.log_softmax)])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_softmax(op, f, dtype):
    x = rand((3, 5, 17), dtype, 15, -8, 8)
    for axis in (-1, 1):
        # defined as: computed in f32, rounded once (torch's own bf16 log_softmax rounds inside)
        ref = f(to_torch(x).float(), axis).to(to_torch(x).dtype)
        assert_ulp(run_op(op, x, axis=axis), ref, 4 if dtype == "f32" else 1, atol=2e-6)


# ---- shapes -----------------------------------------------------------------------------------
def test_shape_ops_against_torch():
    x = rand((2, 3, 4), seed=16)
    t = to_torch(x)
    assert np.array_equal(run_op("reshape", x, shape=(6, -1)), t.reshape(6, -1).numpy())
    assert np.array_equal(run_op("transpose", x, perm=(2, 0, 1)), t.permute(2, 0, 1).numpy())
    assert np.array_equal(run_op("broadcast_to", x[:, :1], shape=(5, 2, 3, 4)), t[:, :1].expand(5, 2, 3, 4).numpy())
    y = rand((2, 5, 4), seed=17)
    assert np.array_equal(run_op("concat", x, y, axis=1), torch.cat([t, to_torch(y)], 1).numpy())
    parts = run_op("split", x, axis=2, sizes=(1, 3))
    for p, r in zip(parts, torch.split(t, [1, 3], dim=2)):
        assert np.array_equal(p, r.numpy())
    padded = run_op("pad", x, pads=((0, 0), (1, 2), (3, 0)), value=-1.5)
    assert np.array_equal(padded, F.pad(t, (3, 0, 1, 2), value=-1.5).numpy())


@FAST
@given(data=st.data(), shape=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_slice_is_python_slicing(data, shape):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    sl = []
    for d in shape:
        a = data.draw(st.one_of(st.none(), st.integers(-d - 2, d + 2)))
        b = data.draw(st.one_of(st.none(), st.integers(-d - 2, d + 2)))
        s = data.draw(st.sampled_from([1, 2, 3, -1, -2]))
        sl.append(slice(a, b, s))
    ref = x[tuple(sl)]
    out = run_op("slice", x, starts=[s.start for s in sl], stops=[s.stop for s in sl], steps=[s.step for s in sl])
    assert np.array_equal(out, ref)
    if all(s.step > 0 for s in sl):
        t = torch.from_numpy(x)
        assert np.array_equal(out, t[tuple(sl)].numpy()) if all(
            (s.start is None or s.start >= 0) and (s.stop is None or s.stop >= 0) for s in sl) else True


def test_gather_is_embedding_and_index_select():
    w = rand((10, 6), seed=18)
    ids = np.array([[1, 9, 0], [4, 4, 2]], np.int64)
    assert np.array_equal(run_op("gather", w, ids, axis=0), F.embedding(torch.from_numpy(ids), to_torch(w)).numpy())
    idx = np.array([5, -1, 0], np.int32)
    assert np.array_equal(run_op("gather", w, idx, axis=1), np.take(w, idx, axis=1))
    with pytest.raises(Exception):
        run_op("gather", w, np.array([10]), axis=0)


def test_full_and_iota():
    assert np.array_equal(run_op("full", shape=(2, 3), value=1.5, dtype="bf16"),
                          from_torch(torch.full((2, 3), 1.5, dtype=torch.bfloat16)))
    assert np.array_equal(run_op("iota", shape=(7,), dtype="i64", start=2, step=3), torch.arange(2, 23, 3).numpy())
    got = run_op("iota", shape=(2, 4), dtype="f32", axis=1, start=0.5, step=0.25)
    assert np.array_equal(got, np.broadcast_to(np.arange(4) * 0.25 + 0.5, (2, 4)).astype(np.float32))


# ---- linear algebra ---------------------------------------------------------------------------
@FAST
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3), m=st.integers(1, 9),
       k=st.integers(1, 40), n=st.integers(1, 9), dtype=st.sampled_from(["f32", "bf16"]))
def test_matmul_batched_broadcasting(shapes, m, k, n, dtype):
    a = rand(shapes.input_shapes[0] + (m, k), dtype, 19, -1, 1)
    b = rand(shapes.input_shapes[1] + (k, n), dtype, 20, -1, 1)
    ours = run_op("matmul", a, b)
    ref = torch.matmul(to_torch(a).float(), to_torch(b).float()).to(to_torch(a).dtype)  # f32 accumulate, 1 rounding
    if dtype == "bf16":
        assert_ulp(ours, ref, 1)
    else:  # f32 summation order differs from torch's BLAS
        np.testing.assert_allclose(ours, from_torch(ref), rtol=1e-5, atol=1e-5 * np.sqrt(k))


def test_matmul_vectors_like_numpy():
    a, b = rand((5,), seed=21), rand((5, 3), seed=22)
    np.testing.assert_allclose(run_op("matmul", a, b), a @ b, rtol=1e-6)
    np.testing.assert_allclose(run_op("matmul", b.T, a[:, None][:, 0][:5]), b.T @ a, rtol=1e-6)


def test_int8_matmul_accumulates_exactly_in_i32():
    rng = np.random.default_rng(23)
    a = rng.integers(-128, 128, (3, 7, 300)).astype(np.int8)
    b = rng.integers(-128, 128, (300, 5)).astype(np.int8)
    ours = run_op("matmul", a, b)
    assert ours.dtype == np.int32
    assert np.array_equal(ours, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32))
    i4 = rng.integers(-8, 8, (5, 300)).astype(ml_dtypes.int4)
    got = run_op("linear", a, i4)  # mixed i8 x i4
    assert np.array_equal(got, a.astype(np.int64) @ i4.astype(np.int64).T)


def test_int_accumulator_wraps():
    a = np.full((1, 70000), 127, np.int8)
    b = np.full((70000, 1), 127, np.int8)
    exact = 127 * 127 * 70000
    assert run_op("matmul", a, b)[0, 0] == np.array(exact).astype(np.int32)
    assert run_op("matmul", a, b, acc_dtype="i64", dtype="i64")[0, 0] == exact


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_linear_with_bias(dtype):
    x, w, b = rand((2, 5, 24), dtype, 24, -1, 1), rand((7, 24), dtype, 25, -1, 1), rand((7,), dtype, 26)
    ref = F.linear(to_torch(x).float(), to_torch(w).float(), to_torch(b).float()).to(to_torch(x).dtype)
    assert_ulp(run_op("linear", x, w, b), ref, 1, atol=0 if dtype == "bf16" else 1e-5)


@FAST
@given(stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), k=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
       groups=st.sampled_from([1, 2, 4]), bias=st.booleans(), seed=st.integers(0, 50))
def test_conv2d_matches_torch(stride, pad, dil, k, groups, bias, seed):
    c, o = 4, 8
    x = rand((2, c, 9, 10), "f32", seed)
    w = rand((o, c // groups) + k, "f32", seed + 1, -1, 1)
    b = rand((o,), "f32", seed + 2) if bias else None
    ref = F.conv2d(to_torch(x), to_torch(w), None if b is None else to_torch(b), stride, pad, dil, groups)
    args = (x, w) + (() if b is None else (b,))
    ours = run_op("conv2d", *args, stride=stride, padding=pad, dilation=dil, groups=groups)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_conv2d_depthwise_and_asymmetric_padding():
    x, w = rand((1, 6, 8, 8), seed=27), rand((6, 1, 3, 3), seed=28)
    ref = F.conv2d(to_torch(x), to_torch(w), groups=6, padding=1)
    np.testing.assert_allclose(run_op("conv2d", x, w, groups=6, padding=1), ref.numpy(), rtol=1e-5, atol=1e-5)
    ref = F.conv2d(F.pad(to_torch(x), (0, 2, 1, 0)), to_torch(w), groups=6)
    ours = run_op("conv2d", x, w, groups=6, padding=((1, 0), (0, 2)))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-5)


@FAST
@given(k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), ceil=st.booleans(), cip=st.booleans(),
       hw=st.tuples(st.integers(4, 11), st.integers(4, 11)), dil=st.integers(1, 2))
def test_pools_match_torch(k, s, p, ceil, cip, hw, dil):
    if p > k // 2:
        return
    x = rand((2, 3) + hw, "f32", 29)
    try:
        ref = F.max_pool2d(to_torch(x), k, s, p, dil, ceil_mode=ceil)
    except RuntimeError:
        return
    np.testing.assert_array_equal(run_op("max_pool2d", x, kernel=k, stride=s, padding=p, dilation=dil, ceil_mode=ceil),
                                  ref.numpy())
    ref = F.avg_pool2d(to_torch(x), k, s, p, ceil_mode=ceil, count_include_pad=cip)
    ours = run_op("avg_pool2d", x, kernel=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6, atol=1e-6)


# ---- normalization and attention ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_layer_norm_and_rms_norm(dtype):
    x = rand((3, 4, 32), dtype, 30, -4, 4)
    w, b = rand((32,), dtype, 31), rand((32,), dtype, 32)
    tol, atol = (8, 2e-6) if dtype == "f32" else (1, 0)
    ref = F.layer_norm(to_torch(x), (32,), to_torch(w), to_torch(b))
    assert_ulp(run_op("layer_norm", x, w, b, eps=1e-5), ref, tol, atol)
    assert_ulp(run_op("layer_norm", x), F.layer_norm(to_torch(x), (32,)), tol, atol)
    ref = F.layer_norm(to_torch(x).float(), (4, 32)).to(to_torch(x).dtype)
    assert_ulp(run_op("layer_norm", x, axes=(1, 2)), ref, tol, atol)
    ref = F.rms_norm(to_torch(x).float(), (32,), to_torch(w).float(), eps=1e-6).to(to_torch(x).dtype)
    assert_ulp(run_op("rms_norm", x, w, eps=1e-6), ref, tol, atol)


@FAST
@given(hkv=st.sampled_from([1, 2, 4]), rep=st.sampled_from([1, 2]), lq=st.integers(1, 9), extra=st.integers(0, 4),
       causal=st.booleans(), mask=st.sampled_from([None, "bool", "float"]), scale=st.sampled_from([None, 0.3]),
       seed=st.integers(0, 50))
def test_attention_matches_sdpa(hkv, rep, lq, extra, causal, mask, scale, seed):
    lk = lq + extra
    q = rand((2, hkv * rep, lq, 16), "f32", seed, -1, 1)
    k, v = rand((2, hkv, lk, 16), "f32", seed + 1, -1, 1), rand((2, hkv, lk, 8), "f32", seed + 2, -1, 1)
    args, m_t = [q, k, v], None
    if mask is not None:
        rng = np.random.default_rng(seed)
        m = rng.random((lq, lk)) > 0.3
        m[:, 0] = True
        m_np = m if mask == "bool" else np.where(m, 0.0, -1e9).astype(np.float32) + rand((lq, lk), "f32", 3, 0, 1)
        args.append(m_np)
        m_t = torch.from_numpy(m_np)
    if causal and m_t is not None:
        return  # torch rejects is_causal together with a mask
    ref = F.scaled_dot_product_attention(*(to_torch(a) for a in (q, k, v)), attn_mask=m_t, is_causal=causal,
                                         scale=scale, enable_gqa=True)
    ours = run_op("attention", *args, causal=causal, scale=scale)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=2e-6)


def test_attention_fully_masked_row_is_zero_like_torch():
    q, k, v = rand((1, 1, 2, 4), seed=33), rand((1, 1, 3, 4), seed=34), rand((1, 1, 3, 4), seed=35)
    m = np.array([[False, False, False], [True, True, False]])
    ours = run_op("attention", q, k, v, m)
    ref = F.scaled_dot_product_attention(*(to_torch(a) for a in (q, k, v)), attn_mask=torch.from_numpy(m))
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-6)
    assert not ours[0, 0, 0].any()


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_attention_low_precision_rounds_once(dtype):
    q, k, v = (rand((1, 2, 5, 8), dtype, s, -1, 1) for s in (36, 37, 38))
    ref = F.scaled_dot_product_attention(*(to_torch(a).float() for a in (q, k, v)), is_causal=True).to(to_torch(q).dtype)
    assert_ulp(run_op("attention", q, k, v, causal=True), ref, 1)


# ---- quantization ----------------------------------------------------------------------------------
def _tq(x, s, qmin, qmax, zp=None):
    """Independent torch formula: clamp(round_half_even(x / s) + zp)."""
    y = torch.round(x / s) + (0 if zp is None else zp)
    return torch.clamp(y, qmin, qmax)


def test_quantize_per_tensor_int8_and_round_half_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 0.26], np.float32)
    s = np.array(1.0, np.float32)
    q = run_op("quantize", x, s, dtype="i8")
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -128, 0]
    x = rand((64, 32), seed=39, lo=-10, hi=10)
    s = np.array(0.07, np.float32)
    ref = _tq(torch.from_numpy(x), torch.tensor(0.07), -128, 127).to(torch.int8).numpy()
    assert np.array_equal(run_op("quantize", x, s, dtype="i8"), ref)


def test_quantize_per_channel_with_zero_point_u8():
    x = rand((8, 16), seed=40, lo=-2, hi=5)
    s = rand((8, 1), seed=41, lo=0.01, hi=0.05)
    zp = np.random.default_rng(42).integers(0, 40, (8, 1)).astype(np.uint8)
    ref = _tq(torch.from_numpy(x), torch.from_numpy(s), 0, 255, torch.from_numpy(zp).float()).to(torch.uint8).numpy()
    q = run_op("quantize", x, s, zp, dtype="u8")
    assert np.array_equal(q, ref)
    deq = run_op("dequantize", q, s, zp, dtype="f32")
    zf = zp.astype(np.float32)
    np.testing.assert_allclose(deq, (q.astype(np.float32) - zf) * s, rtol=0, atol=0)
    assert np.abs(deq - np.clip(x, (0 - zf) * s, (255 - zf) * s)).max() <= s.max() / 2 + 1e-6


def test_int4_per_group_weight_only():
    n, k, g = 6, 64, 16
    w = rand((n, k), seed=43, lo=-1, hi=1)
    s = np.abs(w.reshape(n, k // g, g)).max(-1) / 7
    q = run_op("quantize", w, s.astype(np.float32), dtype="i4")
    assert q.dtype == ml_dtypes.int4 and q.astype(np.int8).min() >= -8 and q.astype(np.int8).max() <= 7
    ref_q = _tq(torch.from_numpy(w).view(n, k // g, g), torch.from_numpy(s).unsqueeze(-1), -8, 7).view(n, k)
    assert np.array_equal(q.astype(np.int8), ref_q.to(torch.int8).numpy())
    deq = run_op("dequantize", q, s.astype(np.float32), dtype="bf16")
    ref = (ref_q.view(n, k // g, g) * torch.from_numpy(s).unsqueeze(-1)).view(n, k).to(torch.bfloat16)
    assert np.array_equal(deq.view(np.uint16), from_torch(ref).view(np.uint16))
    assert np.abs(deq.astype(np.float32) - w).max() <= s.max() / 2 * 1.02 + 1e-3


def test_fp8_quantize_saturates():
    x = np.array([1000.0, -1000.0, 1.0, 0.1], np.float32)
    q = run_op("quantize", x, np.array(1.0, np.float32), dtype="f8e4m3")
    ref = torch.from_numpy(x).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert np.array_equal(q.view(np.uint8), from_torch(ref).view(np.uint8))


def test_sqrt_is_correctly_rounded():
    x = rand((4096,), seed=44, lo=0.0, hi=100.0)
    assert np.array_equal(run_op("sqrt", x), np.sqrt(x.astype(np.float64)).astype(np.float32))


def test_every_op_has_a_test_here():
    """Every op in the IR table is named (as a quoted string) by a test in this file. (A
    static check, so it holds under pytest-xdist too.)"""
    src = open(__file__).read()
    missing = sorted(op for op in OPS if f'"{op}"' not in src)
    assert not missing, f"ops without a differential test: {missing}"
