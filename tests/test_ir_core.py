"""IR data structures, builder, checker, passes and interpreter plumbing."""
import numpy as np
import pytest

from tapeout.errors import TapeoutError, UnsupportedOpError
from tapeout.ir import Builder, Eqn, IRError, Literal, Program, Var, check, evaluate
from tapeout.ir.passes import dce


def mlp():
    b = Builder("mlp")
    x = b.input((4, 8), "f32", name="x")
    w1 = b.const(np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 100, name="w1")
    w2 = b.const(np.ones((3, 16), np.float32), name="w2")
    h = b.relu(b.linear(x, w1))
    y = b.linear(h, w2)
    return b.build(b.add(y, 1.0)), (x, w1, w2)


def test_pretty_is_jaxpr_like_golden():
    prog, _ = mlp()
    assert prog.pretty() == (
        "{ lambda w1:f32[16,8] w2:f32[3,16] ; x:f32[4,8] . let\n"
        "    linear:f32[4,16] = linear[acc_dtype='f32', dtype='f32'] x w1\n"
        "    relu:f32[4,16] = relu linear\n"
        "    linear_1:f32[4,3] = linear[acc_dtype='f32', dtype='f32'] relu w2\n"
        "    add:f32[4,3] = add linear_1 1.0:f32\n"
        "  in (add) }")


def test_evaluate_matches_numpy():
    prog, _ = mlp()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    w1 = prog.consts["w1"]
    ref = np.maximum(x @ w1.T, 0) @ np.ones((16, 3), np.float32) + 1
    np.testing.assert_allclose(evaluate(prog, x)[0], ref, rtol=1e-6)
    assert prog.op_counts() == {"linear": 2, "relu": 1, "add": 1}


def test_params_are_normalized_and_complete():
    b = Builder()
    x = b.input((2, 3, 4), "bf16")
    s = b.reduce_sum(x, axes=-1)
    e = b.eqns[-1]
    assert e.params == {"axes": (2,), "keepdims": False} and s.shape == (2, 3)
    b.matmul(x, b.transpose(x, perm=(0, 2, 1)))
    assert dict(b.eqns[-1].params) == {"acc_dtype": "f32", "dtype": "bf16"}
    q = b.input((3, 5), "i8")
    b.linear(q, b.const(np.ones((2, 5), np.int8)))
    assert dict(b.eqns[-1].params) == {"acc_dtype": "i32", "dtype": "i32"}
    with pytest.raises(TypeError):
        b.eqns[-1].params["x"] = 1  # params are read-only


@pytest.mark.parametrize("build,msg", [
    (lambda b, x: b.add(x, b.input((3,), "f32")), "do not broadcast"),
    (lambda b, x: b.add(x, b.input((2, 4), "bf16")), "one dtype"),
    (lambda b, x: b.matmul(x, b.input((5, 2), "f32")), "contracting"),
    (lambda b, x: b.reshape(x, shape=(3, 3)), "cannot reshape"),
    (lambda b, x: b.exp(b.input((2,), "i32")), "float"),
    (lambda b, x: b.softmax(x, axis=2), "out of range"),
    (lambda b, x: b.reduce_sum(x, bogus=1), "bad params"),
    (lambda b, x: b.conv2d(b.input((1, 3, 8, 8), "f32"), b.input((4, 2, 3, 3), "f32")), "groups"),
    (lambda b, x: b.attention(x, x, x), "q\\[...,Hq"),
    (lambda b, x: b.quantize(x, b.input((3,), "f32"), dtype="i8"), "scale shape"),
])
def test_builder_rejects_ill_formed_eqns(build, msg):
    b = Builder()
    x = b.input((2, 4), "f32")
    with pytest.raises(IRError, match=msg):
        build(b, x)


def test_ir_errors_are_tapeout_errors_and_unknown_op():
    assert issubclass(IRError, TapeoutError)
    with pytest.raises(UnsupportedOpError, match="no op 'frobnicate'"):
        Builder().op("frobnicate")


def test_check_catches_bad_programs():
    prog, (x, w1, _) = mlp()
    check(prog)
    ghost = Var("ghost", (4, 8), "f32")
    bad = Program(prog.inputs, prog.consts, (Eqn("exp", (ghost,), (Var("e", (4, 8), "f32"),)),), prog.outputs)
    with pytest.raises(IRError, match="undefined"):
        check(bad)
    wrong = Program((x,), {}, (Eqn("exp", (x,), (Var("e", (4, 9), "f32"),)),), (Var("e", (4, 9), "f32"),))
    with pytest.raises(IRError, match="disagrees"):
        check(wrong)
    twice = Program((x,), {}, (Eqn("exp", (x,), (x,)),), (x,))
    with pytest.raises(IRError, match="twice"):
        check(twice)


def test_dce_drops_dead_eqns_and_consts():
    b = Builder()
    x = b.input((3,), "f32")
    dead = b.const(np.ones(3, np.float32), name="dead")
    b.mul(x, dead)
    y = b.exp(x)
    prog = dce(b.build(y))
    assert [e.op for e in prog.eqns] == ["exp"] and prog.consts == {}


def test_literals_take_the_other_operands_dtype():
    b = Builder()
    x = b.input((2,), "bf16")
    b.mul(x, 0.5)
    lit = b.eqns[-1].inputs[1]
    assert isinstance(lit, Literal) and lit.dtype == "bf16"
    c = b.input((2,), "bool")
    b.where(c, x, 0)
    assert b.eqns[-1].inputs[2].dtype == "bf16"


def test_multi_output_split_and_input_validation():
    b = Builder()
    x = b.input((6, 2), "f32")
    a, c = b.split(x, axis=0, sizes=(2, 4))
    prog = b.build(a, c)
    outs = evaluate(prog, np.arange(12, dtype=np.float32).reshape(6, 2))
    assert [o.shape for o in outs] == [(2, 2), (4, 2)]
    with pytest.raises(TapeoutError, match="shape"):
        evaluate(prog, np.zeros((5, 2)))
    with pytest.raises(TapeoutError, match="expects 1 inputs"):
        evaluate(prog)
    # inputs are cast to the declared dtype
    assert evaluate(prog, np.ones((6, 2), np.float64))[0].dtype == np.float32


def test_interpreter_frees_dead_values_but_keeps_outputs():
    b = Builder()
    x = b.input((2,), "f32")
    y = b.exp(x)
    z = b.neg(y)
    outs = evaluate(b.build(y, z), np.zeros(2, np.float32))
    assert outs[0].tolist() == [1.0, 1.0] and outs[1].tolist() == [-1.0, -1.0]
