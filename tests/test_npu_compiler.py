"""NPU compiler: every lowered op, compiled and simulated, against the IR reference interpreter;
quantised paths against a numpy emulation of the same quantisation; errors name the op."""
import ml_dtypes
import numpy as np
import pytest

import tapeout
from tapeout.errors import UnsupportedOpError
from tapeout.ir import Builder, evaluate
from tapeout.npu.compiler import compile_ir
from tapeout.npu.sim import simulate

CHIP = tapeout.load_chip("tapeout-n7")
RNG = np.random.default_rng(0)
BF = ml_dtypes.bfloat16


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def npu(prog, *xs, mode="bf16"):
    p = compile_ir(prog, CHIP, mode)
    r = simulate(p, list(xs))
    assert r.stats["cycles"] > 0 and r.stats["instructions"] == p.n_instructions
    return r.outputs


def x(*shape, pos=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if pos else a


def check(prog, *xs, tol=1.5e-2):
    """bf16 storage: one rounding per stored tensor, so a few x 2^-8 relative error."""
    for got, want in zip(npu(prog, *xs), evaluate(prog, *xs)):
        assert got.shape == want.shape
        assert rel(got, want) < tol, (prog.name, rel(got, want))


def unary(op, **p):
    b = Builder(op)
    a = b.input((6, 40), "f32", name="a")
    return b.build(b.op(op, a, **p))


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh", "sigmoid",
                                "silu", "erf", "neg", "abs", "relu"])
def test_unary(op):
    check(unary(op), x(6, 40, pos=op in ("log", "sqrt", "rsqrt", "reciprocal")))


@pytest.mark.parametrize("p", [{"approximate": "none"}, {"approximate": "tanh"}])
def test_gelu(p):
    check(unary("gelu", **p), x(6, 40))


def test_clamp_and_literals():
    b = Builder("c")
    a = b.input((3, 50), "f32", name="a")
    y = b.clamp(b.sub(2.0, b.mul(a, 3.0)), min=-1.0, max=2.5)
    check(b.build(b.pow(b.add(y, 4.0), 2.0)), x(3, 50))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum", "pow"])
@pytest.mark.parametrize("shapes", [((4, 30), (4, 30)), ((2, 4, 30), (30,)), ((2, 4, 30), (2, 4, 1)),
                                    ((2, 1, 30), (1, 4, 1)), ((4, 30), ())])
def test_binary_broadcast(op, shapes):
    b = Builder(op)
    a = b.input(shapes[0], "f32", name="a")
    c = b.input(shapes[1], "f32", name="c")
    check(b.build(b.op(op, a, c)), x(*shapes[0], pos=op == "pow"), x(*shapes[1], pos=op in ("div", "pow")))


def test_compare_where_cast():
    b = Builder("w")
    a = b.input((5, 33), "f32", name="a")
    c = b.input((5, 33), "f32", name="c")
    m = b.gt(a, c)
    y = b.where(m, a, b.mul(c, 0.5))
    check(b.build(y, b.cast(m, dtype="f32"), b.cast(a, dtype="bf16")), x(5, 33), x(5, 33))


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("axes,keep", [((1,), False), ((0, 2), True), ((2,), True)])
def test_reductions(op, axes, keep):
    b = Builder(op)
    a = b.input((3, 20, 17), "f32", name="a")
    check(b.build(b.op(op, a, axes=axes, keepdims=keep)), x(3, 20, 17))


def test_argmax():
    b = Builder("am")
    a = b.input((7, 300), "f32", name="a")
    v = x(7, 300)
    np.testing.assert_array_equal(npu(b.build(b.argmax(a, axis=1)), v)[0], v.astype(BF).astype(np.float32).argmax(1))


@pytest.mark.parametrize("op,axis", [("softmax", -1), ("softmax", 1), ("log_softmax", -1)])
def test_softmax(op, axis):
    b = Builder(op)
    a = b.input((4, 9, 70), "f32", name="a")
    check(b.build(b.op(op, a, axis=axis)), x(4, 9, 70) * 3)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_norms(op):
    b = Builder(op)
    a = b.input((2, 11, 96), "f32", name="a")
    ws = [b.const(x(96)) for _ in range(2 if op == "layer_norm" else 1)]
    check(b.build(b.op(op, a, *ws, axes=(-1,), eps=1e-5)), x(2, 11, 96) * 2 + 1)


@pytest.mark.parametrize("M,K,N", [(1, 64, 96), (37, 300, 130), (256, 512, 700)])
def test_linear_with_fused_epilogue(M, K, N):
    b = Builder("lin")
    a = b.input((M, K), "f32", name="a")
    r = b.input((M, N), "f32", name="r")
    y = b.linear(a, b.const(x(N, K) / np.sqrt(K)), b.const(x(N)))
    y = b.add(r, b.mul(b.gelu(y), 0.5))
    prog = b.build(y)
    p = compile_ir(prog, CHIP, "bf16")
    assert sum(1 for s in p.meta["kernels"] if s == "linear") == 1        # the epilogue is fused
    check(prog, x(M, K), x(M, N))


def test_batched_matmul_and_transpose_views():
    b = Builder("bmm")
    a = b.input((2, 3, 20, 16), "f32", name="a")
    c = b.input((2, 3, 24, 16), "f32", name="c")
    check(b.build(b.matmul(a, b.transpose(c, perm=(0, 1, 3, 2)))), x(2, 3, 20, 16), x(2, 3, 24, 16))


@pytest.mark.parametrize("Lq,Lk,causal,mask", [(20, 20, True, None), (1, 700, False, None), (33, 33, False, "bool"),
                                               (16, 16, False, "float")])
def test_attention(Lq, Lk, causal, mask):
    b = Builder("attn")
    q = b.input((2, 4, Lq, 32), "f32", name="q")
    k = b.input((2, 2, Lk, 32), "f32", name="k")
    v = b.input((2, 2, Lk, 32), "f32", name="v")
    xs = [x(2, 4, Lq, 32), x(2, 2, Lk, 32), x(2, 2, Lk, 32)]
    args = [q, k, v]
    if mask == "bool":
        mv = np.tril(np.ones((Lq, Lk), bool)) | (RNG.random((Lq, Lk)) < 0.5)
        args.append(b.const(mv))
    elif mask == "float":
        args.append(b.input((1, 1, Lq, Lk), "f32", name="m"))
        xs.append(x(1, 1, Lq, Lk))
    check(b.build(b.attention(*args, causal=causal)), *xs)


def test_gather_concat_slice_pad():
    b = Builder("g")
    ids = b.input((2, 5), "i64", name="ids")
    emb = b.gather(b.const(x(50, 24)), ids, axis=0)
    s = b.slice(emb, starts=(0, 1, 0), stops=(2, 5, 24), steps=(1, 2, 1))
    c = b.concat(b.neg(s), s, axis=2)
    p = b.pad(c, pads=((0, 0), (1, 2), (3, 0)), value=1.5)
    check(b.build(p, emb), RNG.integers(0, 50, (2, 5)))


def test_conv_and_pools():
    b = Builder("cnn")
    a = b.input((2, 3, 12, 12), "f32", name="a")
    y = b.relu(b.conv2d(a, b.const(x(8, 3, 3, 3) / 5), b.const(x(8)), stride=2, padding=1))
    z = b.max_pool2d(y, kernel=2, stride=2)
    w = b.avg_pool2d(y, kernel=3, stride=1, padding=1)
    check(b.build(z, w, b.reduce_mean(z, axes=(2, 3))), x(2, 3, 12, 12))


def test_constant_subgraphs_are_folded():
    b = Builder("fold")
    a = b.input((4, 8), "f32", name="a")
    pos = b.iota(shape=(4, 8), dtype="f32", axis=1)
    y = b.add(a, b.cos(b.mul(pos, 0.1)))
    prog = b.build(y)
    p = compile_ir(prog, CHIP, "bf16")
    assert "cos" not in p.meta["kernels"]
    check(prog, x(4, 8))


def _emulate_linear(a, w, mode):
    """numpy emulation of the compiler's quantisation (per-row activations, per-channel or group weights)."""
    a = a.astype(BF).astype(np.float32)
    if mode == "int4-weights":
        g = 128
        wt = w.T
        s = np.maximum(np.abs(wt.reshape(-1, g, wt.shape[1])).max(1), 1e-30) / 7
        q = np.clip(np.rint(wt / np.repeat(s, g, 0)), -8, 7)
        return a @ (q * np.repeat(s, g, 0)).astype(BF).astype(np.float32)
    qmax, dt = (127.0, np.int8) if mode == "int8" else (448.0, ml_dtypes.float8_e4m3fn)
    sw = np.abs(w).max(1) / qmax
    sx = np.maximum(np.abs(a).max(1) / qmax, 1e-30)
    cast = (lambda v: np.clip(np.rint(v), -128, 127)) if mode == "int8" else \
        (lambda v: np.clip(v, -448, 448).astype(dt).astype(np.float32))
    return (cast(a / sx[:, None]) @ cast(w / sw[:, None]).T) * sx[:, None] * sw[None]


@pytest.mark.parametrize("mode", ["int8", "fp8", "int4-weights"])
def test_quantized_linear_matches_emulation(mode):
    M, K, N = 24, 256, 160
    b = Builder("q")
    a = b.input((M, K), "f32", name="a")
    w = x(N, K) / 16
    prog = b.build(b.linear(a, b.const(w)))
    av = x(M, K)
    got = npu(prog, av, mode=mode)[0]
    emu = _emulate_linear(av, w, mode)
    assert rel(got, emu) < 1e-2, rel(got, emu)                  # the NPU does what the emulation does
    err = rel(got, av @ w.T)
    assert err < {"int8": 0.03, "fp8": 0.1, "int4-weights": 0.2}[mode], err


def test_unsupported_op_names_it():
    b = Builder("u")
    a = b.input((4, 8), "i32", name="a")
    with pytest.raises(UnsupportedOpError, match="matmul on integers wider than 8 bits"):
        compile_ir(b.build(b.matmul(a, b.transpose(a, perm=(1, 0)))), CHIP, "bf16")
    with pytest.raises(UnsupportedOpError, match="dtype"):
        compile_ir(b.build(b.neg(a)), CHIP, "int3")


CONVS = {   # name: (x shape, w shape, params); torch's F.conv2d takes the same params
    "1x1": ((2, 8, 7, 7), (16, 8, 1, 1), {}),
    "3x3": ((2, 3, 10, 10), (8, 3, 3, 3), {}),
    "strided": ((1, 4, 11, 11), (6, 4, 3, 3), {"stride": 2}),
    "padded": ((2, 3, 9, 9), (8, 3, 3, 3), {"padding": 1}),
    "groups2": ((2, 6, 8, 8), (8, 3, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 16, 12, 12), (16, 1, 3, 3), {"groups": 16, "padding": 1}),
    "depthwise-x2-strided-dilated": ((1, 4, 13, 13), (8, 1, 3, 3), {"groups": 4, "stride": 2, "padding": 2, "dilation": 2}),
    "depthwise-5x5-tall": ((1, 3, 300, 40), (3, 1, 5, 5), {"groups": 3, "padding": 2}),
}


@pytest.mark.parametrize("mode,tol", [("bf16", 1e-2), ("fp16", 2e-3)])
@pytest.mark.parametrize("name", list(CONVS))
def test_conv2d_matches_torch_and_interpreter(name, mode, tol):
    torch = pytest.importorskip("torch")
    xs, ws, p = CONVS[name]
    g = np.random.default_rng(len(name))                              # deterministic whatever the test order
    xv, wv, bv = (g.standard_normal(s).astype(np.float32) for s in (xs, ws, ws[:1]))
    wv /= np.sqrt(np.prod(ws[1:]))
    b = Builder(name)
    a = b.input(xs, "f32", name="a")
    prog = b.build(b.conv2d(a, b.const(wv), b.const(bv), **p))
    ref = torch.nn.functional.conv2d(torch.from_numpy(xv), torch.from_numpy(wv), torch.from_numpy(bv), **p).numpy()
    ir = evaluate(prog, xv)[0]
    np.testing.assert_allclose(ir, ref, rtol=1e-5, atol=1e-5)
    compiled = compile_ir(prog, CHIP, mode)
    got = simulate(compiled, [xv]).outputs[0]
    assert rel(got, ref) < tol and rel(got, ir) < tol, (rel(got, ref), rel(got, ir))
    matmuls = sum(type(i).__name__ == "Matmul" for s in compiled.streams for i in s)
    assert (matmuls == 0) == name.startswith("depthwise")       # depthwise runs on the vector unit


@pytest.mark.parametrize("dtype", ["i32", "i16", "i8", "u8"])
def test_float_to_int_cast_truncates_toward_zero_like_the_ir(dtype):
    """The IR's cast: truncate toward zero, saturate at the type's range, NaN -> 0 (not round to nearest)."""
    v = np.array([-2.75, -2.5, -1.5, -0.75, -0.5, 0.5, 0.75, 1.5, 2.5, 2.75, 127.5, 128.0, -129.0, 255.5, 40000.0,
                  -3e9, 3e9, np.nan, np.inf, -np.inf], np.float32).astype(BF).astype(np.float32)
    b = Builder("cast")
    a = b.input(v.shape, "f32", name="a")
    prog = b.build(b.cast(a, dtype=dtype))
    got, want = npu(prog, v)[0], evaluate(prog, v)[0]
    np.testing.assert_array_equal(got, want.astype(np.int64))
    lo, hi = np.iinfo(want.dtype).min, np.iinfo(want.dtype).max
    np.testing.assert_array_equal(got, np.clip(np.nan_to_num(np.trunc(v.astype(np.float64)), nan=0.0), lo, hi))
    assert got[4] == 0 and got[7] == 1 and got[9] == 2                      # not round-to-nearest
    torch = pytest.importorskip("torch")
    inside = (v > lo - 1) & (v < hi + 1)                                    # torch's cast is undefined outside
    ref = torch.from_numpy(v[inside]).to(getattr(torch, {"i32": "int32", "i16": "int16", "i8": "int8",
                                                          "u8": "uint8"}[dtype])).numpy()
    np.testing.assert_array_equal(got[inside], ref)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_fully_masked_attention_row_outputs_zero_like_the_ir(kind):
    """A query row whose every key is masked outputs 0 (the IR's definition), not the mean of V; a
    row masked with the lowest finite value is not "fully masked" and averages V, as in the IR."""
    Lq, Lk = 6, 40
    g = np.random.default_rng(5)
    keep = g.random((1, 2, Lq, Lk)) < 0.5
    keep[0, 1, 2] = False                                   # head 1, query 2: nothing to attend to
    keep[0, 0, :, 0] = True
    if kind == "bool":
        m = keep
    else:                                                    # bf16 tensors: the NPU stores them exactly
        m = np.where(keep, 0.0, -np.inf).astype(BF)
        m[0, 0, 4] = ml_dtypes.finfo(BF).min               # finite: the IR averages V there
    b = Builder("attn")
    q, k, v = (b.input(s, "bf16", name=n) for s, n in (((1, 2, Lq, 32), "q"), ((1, 2, Lk, 32), "k"), ((1, 2, Lk, 32), "v")))
    mi = b.input(m.shape, "bool" if kind == "bool" else "bf16", name="m")
    prog = b.build(b.attention(q, k, v, mi))
    xs = [g.standard_normal(s).astype(BF) for s in ((1, 2, Lq, 32), (1, 2, Lk, 32), (1, 2, Lk, 32))] + [m]
    got, want = npu(prog, *xs)[0], evaluate(prog, *xs)[0]
    assert np.all(want[0, 1, 2] == 0) and np.all(got[0, 1, 2] == 0)
    assert rel(got, want) < 1.5e-2
    if kind == "additive":
        np.testing.assert_allclose(got[0, 0, 4], xs[2][0, 0].astype(np.float32).mean(0), atol=2e-2)


def test_asm_of_compiled_program_round_trips():
    from tapeout.npu import isa
    b = Builder("r")
    a = b.input((16, 64), "f32", name="a")
    p = compile_ir(b.build(b.softmax(b.linear(a, b.const(x(32, 64))), axis=-1)), CHIP, "bf16")
    text = p.asm()
    assert isa.program_from_asm(text) == p.streams
    assert len(p.binary()) == 4 * (1 + len(p.streams)) + isa.WORD_BYTES * p.n_instructions
