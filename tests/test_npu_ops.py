"""Every IR op on the virtual NPU against the reference interpreter (the definition of each op).

One table, `CASES`: for every op of the IR op table (`tapeout.ir.OPS`) one or more small
programs, compiled for tapeout-n7 in fp16 (the most precise mode the chip has: 11-bit
significands) and in bf16, simulated, and compared with `tapeout.ir.evaluate`. Input data are
bf16-representable, so both see the same values and only the NPU's final rounding to its
storage type (fp16/bf16 for f32 tensors) can differ. Checks per case:
  "exact"  bit-equal to the interpreter's result rounded to the storage type (data movement,
           integer, bool, compare, rounding and max/min ops, casts, quantisation);
  "ulp"    within one unit in the last place of the storage type (elementwise math);
  float t  relative L2 error below t x the storage type's unit roundoff (reductions, GEMMs,
           softmax, norms, attention: fp32 sums in another order, attention's P in 16 bits).
`test_every_ir_op_has_an_npu_lowering` is the static check: an op without a lowering fails it.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import pytest

import tapeout
from tapeout.ir import OPS, Builder, evaluate
from tapeout.ir.dtypes import DTYPES, FLOATS, dtype_name
from ir_helpers import ulp_diff
from tapeout.npu.compiler import handled_ops

CHIP = tapeout.load_chip("tapeout-n7")
MODES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
UNIT = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}
# IR ops the NPU does not lower, with the reason. Keep it empty: an entry needs a justification.
NOT_ON_NPU: dict[str, str] = {}


@dataclass(frozen=True)
class Case:
    prog: object
    inputs: tuple
    tol: object = "exact"


@dataclass(frozen=True)
class C:
    """A constant operand (a weight) rather than a runtime input."""
    v: np.ndarray


def f(*shape, lo=-3.0, hi=3.0, seed=0):
    """bf16-representable f32 data (exact in fp16 too: no magnitudes below 2^-8)."""
    a = np.random.default_rng(seed + sum(shape)).uniform(lo, hi, shape).astype(ml_dtypes.bfloat16).astype(np.float32)
    return np.where(np.abs(a) < 2.0 ** -8, 0.0, a).astype(np.float32)


def halves(*shape, seed=0):
    """Multiples of 0.5 in [-4, 4]: ties for rounding, comparisons and argmax."""
    return (np.random.default_rng(seed + 7).integers(-8, 9, shape) / 2).astype(np.float32)


def bf(a):
    """`a` rounded to bf16 (so that fp16 and bf16 storage both hold it exactly)."""
    return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float32)


def ints(*shape, lo=-50, hi=50, dtype=np.int32, seed=0):
    return np.random.default_rng(seed + 3).integers(lo, hi, shape).astype(dtype)


def bools(*shape, seed=0):
    return np.random.default_rng(seed + 5).random(shape) < 0.5


def one(op, *args, tol="exact", **params) -> Case:
    """A program of one `op` eqn; ndarray args are runtime inputs, C(...) constants, scalars literals."""
    b = Builder(op)
    ins, xs = [], []
    for a in args:
        if isinstance(a, C):
            ins.append(b.const(a.v))
        elif isinstance(a, np.ndarray):
            ins.append(b.input(a.shape, dtype_name(a.dtype), name=f"x{len(xs)}"))
            xs.append(a)
        else:
            ins.append(a)
    out = b.op(op, *ins, **params)
    return Case(b.build(*(out if isinstance(out, tuple) else (out,))), tuple(xs), tol)


def _unary(op, tol="ulp", **kw):
    return [lambda: one(op, f(6, 40, **kw), tol=tol)]


def _ew_int(op):
    return lambda: one(op, ints(5, 12), ints(5, 12, seed=1))


def _attention(Lq, Lk, causal=False, mask=None, hq=4, hkv=2):
    b = Builder("attn")
    q = b.input((2, hq, Lq, 16), "f32", name="q")
    k = b.input((2, hkv, Lk, 16), "f32", name="k")
    v = b.input((2, hkv, Lk, 16), "f32", name="v")
    xs, args = [f(2, hq, Lq, 16), f(2, hkv, Lk, 16, seed=1), f(2, hkv, Lk, 16, seed=2)], [q, k, v]
    if mask == "bool":                 # with fully masked rows, whose output the IR defines as 0
        m = bools(1, hq, Lq, Lk)
        m[0, 1, :3] = False
        args.append(b.input(m.shape, "bool", name="m"))
        xs.append(m)
    elif mask == "float":              # additive: -inf masks, a row of lowest-finite does not
        m = np.where(bools(1, 1, Lq, Lk, seed=3), 0.0, -np.inf).astype(np.float32)
        m[0, 0, 0] = -np.inf
        args.append(b.input(m.shape, "f32", name="m"))
        xs.append(m)
    return Case(b.build(b.attention(*args, causal=causal)), tuple(xs), 4.0)


def _conv(x, w, tol=1.0, bias=True, runtime_w=False, **p):
    bias_v = (C(f(w.shape[0], seed=9)),) if bias else ()
    return one("conv2d", x, w if runtime_w else C(w), *bias_v, tol=tol, **p)


def _quant(x_shape, s_shape, dtype, zp=False):
    x = f(*x_shape, lo=-6, hi=6)
    s = C(np.random.default_rng(1).uniform(0.02, 0.2, s_shape).astype(np.float32))
    z = (C(ints(*s_shape, lo=-3, hi=4, dtype=DTYPES[dtype])),) if zp else ()
    return one("quantize", x, s, *z, dtype=dtype)


def _dequant(q, s_shape, zp=False):
    s = C(np.random.default_rng(2).uniform(0.02, 0.2, s_shape).astype(np.float32))
    z = (C(ints(*s_shape, lo=-3, hi=4, dtype=q.dtype)),) if zp else ()
    return one("dequantize", q, s, *z, tol="ulp")


def _fp4_scales(shape, dtype, seed=4):
    """Block scales as the FP4 formats store them: e4m3 values or e8m0 powers of two."""
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.05, 0.5, shape) if dtype == "f8e4m3" else 2.0 ** rng.integers(-4, 1, shape)
    return C(v.astype(np.float32).astype(DTYPES[dtype]))


def _fp4_quant(s_dtype, tensor_scale=1.0):
    return one("quantize", f(6, 32, lo=-6, hi=6), _fp4_scales((6, 2), s_dtype), dtype="f4e2m1",
               tensor_scale=tensor_scale)


def _fp4_dequant(s_dtype, tensor_scale=1.0):
    q = np.random.default_rng(6).integers(0, 16, (6, 32)).astype(np.uint8).view(ml_dtypes.float4_e2m1fn)
    return one("dequantize", q, _fp4_scales((6, 2), s_dtype), dtype="bf16", tensor_scale=tensor_scale)


def _fp4_gemm(fmt, op="linear", N=48, K=64):
    """x[5, K] bf16 times a block-quantized FP4 weight (packed on the NPU, dequantized by Dequant4).
    Inputs are multiples of 1/8 and the weights' amax makes NVFP4's tensor scale a power of two,
    so every fp32 sum is exact in any order: the result must be bit-equal."""
    from tapeout.ir import blockfp
    w = np.random.default_rng(8).standard_normal((N, K)).astype(np.float32)
    w *= np.float32(2688 * 2.0 ** -10) / np.abs(w).max()
    b = Builder(f"{fmt}_{op}")
    x = b.input((5, K), "bf16", name="x")
    if op == "linear":
        y = b.linear(x, blockfp.weight(b, w, fmt, dtype="bf16"))
    else:
        y = b.matmul(x, blockfp.weight(b, w.T.copy(), fmt, dtype="bf16", axis=0))
    xs = (np.random.default_rng(9).integers(-16, 17, (5, K)) / 8).astype(np.float32)
    return Case(b.build(y), (xs,))


def _reshape_of_transpose():
    b = Builder("rt")
    x = b.input((4, 6), "f32", name="x")
    return Case(b.build(b.reshape(b.transpose(x, perm=(1, 0)), shape=(3, 8))), (f(4, 6),))


def _nan_and_big(a):
    a = a.copy()
    a.flat[:5] = [np.nan, 59904.0, -59904.0, 300.0, -300.0]    # (fp16 storage holds at most 65504)
    return a


CASES = {
    **{op: _unary(op) for op in ("exp", "sin", "cos", "tanh", "sigmoid", "silu", "erf")},
    **{op: _unary(op, lo=0.05, hi=4.0) for op in ("log", "sqrt", "rsqrt", "reciprocal")},
    **{op: [lambda op=op: one(op, bf(halves(6, 40) + f(6, 40, lo=-0.3, hi=0.3) * (op != "round")))]
       for op in ("floor", "ceil", "round")},
    **{op: [lambda op=op: one(op, halves(6, 40)), lambda op=op: one(op, ints(5, 12))]
       for op in ("neg", "abs", "relu", "sign")},
    "gelu": [lambda: one("gelu", f(6, 40), approximate="none", tol="ulp"),
             lambda: one("gelu", f(6, 40), approximate="tanh", tol="ulp")],
    "clamp": [lambda: one("clamp", f(6, 40), min=-0.5, max=0.75), lambda: one("clamp", ints(5, 12), max=7.0)],
    "logical_not": [lambda: one("logical_not", bools(4, 9))],
    **{op: [lambda op=op: one(op, f(4, 30), f(4, 30, seed=1), tol="ulp"),
            lambda op=op: one(op, f(2, 4, 30), f(30, seed=2), tol="ulp"),
            lambda op=op: one(op, f(2, 1, 30), f(1, 4, 1, seed=3), tol="ulp")]
       for op in ("add", "sub", "mul", "maximum", "minimum")},
    "div": [lambda: one("div", f(4, 30), f(4, 30, lo=0.25, seed=1), tol="ulp"),
            lambda: one("div", f(2, 4, 30), -1.5, tol="ulp"),
            lambda: one("div", ints(5, 12), np.where(ints(5, 12, seed=1) == 0, 0, ints(5, 12, lo=-7, hi=8, seed=2))),
            lambda: one("div", ints(9, 40, lo=-3000, hi=3000), 25), lambda: one("div", ints(9, 40), 0)],
    "pow": [lambda: one("pow", f(4, 30, lo=0.1), f(4, 30, lo=-2, hi=2, seed=1), tol="ulp"),
            lambda: one("pow", f(4, 30), 2.0, tol="ulp")],
    **{op: [lambda op=op: one(op, ints(5, 12), ints(5, 12, seed=1))] for op in ("add", "sub", "mul", "maximum")},
    **{op: [lambda op=op: one(op, halves(5, 12), halves(5, 12, seed=1)),
            lambda op=op: one(op, halves(3, 5, 12), halves(12, seed=2)),
            lambda op=op: one(op, ints(5, 12, lo=-3, hi=3), ints(5, 12, lo=-3, hi=3, seed=1))]
       for op in ("eq", "ne", "lt", "le", "gt", "ge")},
    **{op: [lambda op=op: one(op, bools(4, 9), bools(4, 9, seed=1))] for op in ("logical_and", "logical_or", "logical_xor")},
    "where": [lambda: one("where", bools(3, 20), f(3, 20), f(20, seed=1)),
              lambda: one("where", bools(3, 1), ints(3, 20), ints(1, 20, seed=1))],
    "cast": [lambda dt=dt: one("cast", _nan_and_big(f(6, 20, lo=-10, hi=10)), dtype=dt)
             for dt in ("i32", "i16", "i8", "u8", "i4", "bool", "bf16", "f16", "f8e4m3", "f8e5m2")]
    + [lambda dt=dt: one("cast", ints(5, 12, lo=-300, hi=300), dtype=dt) for dt in ("i8", "u8", "i16", "f32", "bool")]
    + [lambda: one("cast", bools(4, 9), dtype="f32"), lambda: one("cast", ints(5, 12, dtype=np.int8), dtype="i32")],
    **{op: [lambda op=op: one(op, f(3, 20, 17), axes=(1,), tol=1.0),
            lambda op=op: one(op, f(3, 20, 17), axes=(0, 2), keepdims=True, tol=1.0),
            lambda op=op: one(op, ints(4, 30, lo=-100, hi=100), axes=(1,))][:2 + (op == "reduce_sum")]
       for op in ("reduce_sum", "reduce_mean")},
    **{op: [lambda op=op: one(op, f(3, 20, 17), axes=(1,)), lambda op=op: one(op, f(3, 20, 17), axes=(2,), keepdims=True),
            lambda op=op: one(op, ints(4, 30), axes=(0,))]
       for op in ("reduce_max", "reduce_min")},
    **{op: [lambda op=op: one(op, halves(7, 60), axis=1), lambda op=op: one(op, halves(5, 6, 7), axis=1, keepdims=True),
            lambda op=op: one(op, ints(7, 30, lo=-3, hi=3), axis=0)]
       for op in ("argmax", "argmin")},
    "cumsum": [lambda: one("cumsum", f(4, 50), axis=1, tol="ulp"), lambda: one("cumsum", f(9, 3, 4), axis=0, tol="ulp"),
               lambda: one("cumsum", ints(3, 40), axis=1)],
    "reshape": [lambda: one("reshape", f(4, 6, 5), shape=(6, 20)), _reshape_of_transpose],
    "transpose": [lambda: one("transpose", f(2, 3, 4, 5), perm=(2, 0, 3, 1)), lambda: one("transpose", ints(5, 7), perm=(1, 0))],
    "broadcast_to": [lambda: one("broadcast_to", f(3, 1, 5), shape=(2, 3, 4, 5))],
    "concat": [lambda: one("concat", f(2, 3, 5), f(2, 1, 5, seed=1), f(2, 4, 5, seed=2), axis=1),
               lambda: one("concat", ints(3, 4), ints(3, 2), axis=1)],
    "slice": [lambda: one("slice", f(6, 10, 7), starts=(1, 0, 2), stops=(6, 10, 7), steps=(2, 3, 1)),
              lambda: one("slice", f(6, 10), starts=(None, None), stops=(None, None), steps=(-1, -2)),
              lambda: one("slice", f(5, 9, 4), starts=(4, 7, 0), stops=(0, 1, 4), steps=(-2, -3, 1))],
    "split": [lambda: one("split", f(4, 11, 3), axis=1, sizes=(2, 5, 4))],
    "pad": [lambda: one("pad", f(2, 3, 5), pads=((0, 1), (2, 0), (1, 3)), value=1.5),
            lambda: one("pad", ints(3, 4), pads=((1, 1), (0, 2)), value=-7)],
    "gather": [lambda: one("gather", C(f(50, 24)), ints(2, 5, lo=0, hi=50, dtype=np.int64), axis=0),
               lambda: one("gather", f(3, 20, 4), ints(7, lo=-20, hi=20), axis=1),
               lambda: one("gather", f(3, 4, 9), C(np.array([[8, -1], [0, 3]], np.int64)), axis=2),
               lambda: one("gather", ints(10, 6), ints(4, lo=-10, hi=10, dtype=np.int8), axis=0)],
    "full": [lambda: one("full", shape=(3, 4), value=2.5, dtype="f32"), lambda: one("full", shape=(5,), value=7, dtype="i32")],
    "iota": [lambda: one("iota", shape=(4, 6), dtype="f32", axis=1, start=-2, step=0.5),
             lambda: one("iota", shape=(3, 5), dtype="i64", axis=0, start=3)],
    "matmul": [lambda: _fp4_gemm("nvfp4", "matmul"), lambda: _fp4_gemm("mxfp4", "matmul"),
               lambda: one("matmul", f(20, 48), f(48, 36, seed=1), tol=1.0),
               lambda: one("matmul", f(2, 3, 20, 16), f(2, 3, 16, 24, seed=1), tol=1.0),        # bmm
               lambda: one("matmul", f(2, 3, 8, 16), f(16, 12, seed=1), tol=1.0),
               lambda: one("matmul", f(16), f(3, 16, 5, seed=1), tol=1.0),
               lambda: one("matmul", f(6, 16), C(f(16, 10, seed=1)), tol=1.0),
               lambda: one("matmul", ints(6, 40, lo=-128, hi=128, dtype=np.int8),
                           ints(40, 9, lo=-128, hi=128, dtype=np.int8, seed=1))],
    "linear": [lambda: _fp4_gemm("nvfp4"), lambda: _fp4_gemm("mxfp4"),
               lambda: one("linear", f(2, 7, 64), C(f(48, 64, lo=-0.3, hi=0.3)), C(f(48, seed=1)), tol=1.0),
               lambda: one("linear", f(9, 32), f(20, 32, seed=1), tol=1.0),
               lambda: one("linear", ints(6, 64, lo=-128, hi=128, dtype=np.int8),
                           C(ints(24, 64, lo=-128, hi=128, dtype=np.int8, seed=1)))],
    "conv2d": [lambda: _conv(f(2, 8, 7, 7), f(16, 8, 1, 1, seed=1)),                                  # 1x1
               lambda: _conv(f(2, 3, 9, 9), f(8, 3, 3, 3, seed=1), padding=1),                       # 3x3 padded
               lambda: _conv(f(1, 4, 11, 10), f(6, 4, 3, 3, seed=1), stride=2, padding=(0, 1)),      # strided
               lambda: _conv(f(2, 6, 8, 8), f(8, 3, 3, 3, seed=1), groups=2, padding=1),             # grouped
               lambda: _conv(f(2, 6, 9, 9), f(6, 1, 3, 3, seed=1), groups=6, padding=1),             # depthwise
               lambda: _conv(f(1, 4, 12, 12), f(8, 1, 3, 3, seed=1), groups=4, stride=2, dilation=2, padding=2),
               lambda: _conv(f(1, 4, 6, 6), f(4, 4, 3, 3, seed=1), bias=False, runtime_w=True)],
    "max_pool2d": [lambda: one("max_pool2d", f(2, 3, 9, 9), kernel=3, stride=2, padding=1),
                   lambda: one("max_pool2d", f(1, 2, 8, 7), kernel=2, stride=2, ceil_mode=True),
                   lambda: one("max_pool2d", f(1, 2, 9, 9), kernel=2, stride=1, dilation=2),
                   lambda: one("max_pool2d", ints(1, 2, 6, 6, lo=-100, hi=-50), kernel=3, stride=2, padding=1)],
    "avg_pool2d": [lambda: one("avg_pool2d", f(2, 3, 9, 9), kernel=3, stride=2, padding=1, tol="ulp"),
                   lambda: one("avg_pool2d", f(2, 3, 9, 9), kernel=3, stride=2, padding=1, count_include_pad=False,
                               tol="ulp"),
                   lambda: one("avg_pool2d", f(1, 2, 8, 7), kernel=3, stride=2, ceil_mode=True, tol="ulp")],
    **{op: [lambda op=op: one(op, f(4, 9, 70, lo=-9, hi=9), axis=-1, tol=2.0), lambda op=op: one(op, f(4, 9, 70), axis=1, tol=2.0)]
       for op in ("softmax", "log_softmax")},
    "layer_norm": [lambda: one("layer_norm", f(2, 11, 96, lo=-5, hi=7), C(f(96, seed=1)), C(f(96, seed=2)), tol=2.0),
                   lambda: one("layer_norm", f(5, 6, 8), axes=(-2, -1), tol=2.0)],
    "rms_norm": [lambda: one("rms_norm", f(2, 11, 96), C(f(96, seed=1)), tol=2.0)],
    "attention": [lambda: _attention(20, 20, causal=True), lambda: _attention(1, 70), lambda: _attention(9, 12, mask="bool"),
                  lambda: _attention(6, 10, mask="float", hq=2, hkv=1), lambda: _attention(5, 5, causal=True, hkv=4)],
    "quantize": [lambda: _quant((6, 32), (), "i8"), lambda: _quant((6, 32), (6, 1), "u8", zp=True),
                 lambda: _quant((6, 32), (6, 4), "i4"), lambda: _quant((6, 32), (1, 32), "f8e4m3"),
                 lambda: _quant((6, 32), (), "f8e5m2"), lambda: _fp4_quant("f8e8m0"),
                 lambda: _fp4_quant("f8e4m3", tensor_scale=0.37)],
    "dequantize": [lambda: _dequant(ints(6, 32, lo=-128, hi=128, dtype=np.int8), (6, 1)),
                   lambda: _dequant(ints(6, 32, lo=0, hi=256, dtype=np.uint8), (1, 32), zp=True),
                   lambda: _dequant(ints(6, 32, lo=-8, hi=8, dtype=ml_dtypes.int4), (6, 4)),
                   lambda: _fp4_dequant("f8e8m0"), lambda: _fp4_dequant("f8e4m3", tensor_scale=0.37)],
}
PARAMS = [(op, k) for op in sorted(CASES) for k in range(len(CASES[op]))]


def test_every_ir_op_has_an_npu_lowering():
    """Static: the compiler handles every op of the IR op table, and this file tests each one."""
    missing = sorted(set(OPS) - handled_ops() - set(NOT_ON_NPU))
    assert not missing, f"IR ops with no NPU lowering: {missing}"
    assert set(CASES) == set(OPS), sorted(set(OPS) ^ set(CASES))


def stored(a: np.ndarray, ir_dtype: str, mode: str) -> np.ndarray:
    """What the NPU stores for an IR value: f32/f64 in the mode's 16-bit type, others as they are."""
    return a.astype(MODES[mode]) if ir_dtype in ("f32", "f64") else a


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("op,k", PARAMS, ids=[f"{op}-{k}" for op, k in PARAMS])
def test_op_matches_interpreter(op, k, mode):
    case = CASES[op][k]()
    want = evaluate(case.prog, *case.inputs)
    got = tapeout.compile(case.prog, chip=CHIP, dtype=mode)(*case.inputs)
    for g, w, v in zip(got, want, case.prog.outputs):
        assert g.shape == w.shape, (g.shape, w.shape)
        w = stored(w, v.dtype, mode)
        if v.dtype not in FLOATS or case.tol == "exact":
            np.testing.assert_array_equal(g, w.astype(g.dtype) if v.dtype not in FLOATS else w.astype(np.float32))
        elif case.tol == "ulp":
            d = ulp_diff(g.astype(w.dtype), w)
            assert d.max(initial=0) <= 1, f"{d.max()} ulp"
        else:
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            err = np.linalg.norm(g64 - w64) / max(np.linalg.norm(w64), 1e-30)
            assert err <= case.tol * UNIT[mode], (err, case.tol * UNIT[mode])
