"""ONNX importer: models exported by torch.onnx, hand-built graphs checked against onnx's
own reference evaluator, and clear errors for bad files and unsupported ops."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from tapeout.errors import TapeoutError, UnsupportedOpError  # noqa: E402
from tapeout.frontends import load  # noqa: E402
from tapeout.ir import check, evaluate  # noqa: E402

RNG = np.random.default_rng(0)


def model(nodes, inputs, outputs, inits=(), opset=18):
    """A model from nodes; inputs/outputs: (name, elem_type, shape)."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                          [helper.make_tensor_value_info(*o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def check_against_reference(tmp_path, m, feeds, rtol=1e-5, atol=1e-6):
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    prog = load(path)
    check(prog)
    ours = evaluate(prog, *feeds.values())
    ref = ReferenceEvaluator(m).run(None, feeds)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape, (o.shape, r.shape)
        if r.dtype.kind in "biu":
            assert np.array_equal(o, r)
        else:
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)
    return prog


F32 = T.FLOAT
X = RNG.standard_normal((2, 3, 8)).astype(np.float32)


def test_elementwise_and_shape_folding(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["a"]),
        helper.make_node("Sigmoid", ["r"], ["sg"]),
        helper.make_node("Mul", ["a", "sg"], ["m"]),
        helper.make_node("Pow", ["m", "two"], ["p"]),
        helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
        helper.make_node("Where", ["cond", "p", "c"], ["w"]),
        helper.make_node("Greater", ["r", "lo"], ["cond"]),
        helper.make_node("Cast", ["cond"], ["ci"], to=T.INT64),
        helper.make_node("ReduceSum", ["ci", "axis1"], ["cnt"], keepdims=0),
        helper.make_node("Erf", ["w"], ["e"]),
        helper.make_node("Tanh", ["e"], ["t"]),
    ]
    nodes = nodes[:10] + [nodes[11], nodes[10]] + nodes[12:]  # keep topological order
    inits = [("zero", np.array(0, np.int64)), ("zero1", np.array([0], np.int64)),
             ("minus1", np.array([-1], np.int64)), ("two", np.array(2.0, np.float32)),
             ("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.7, np.float32)), ("axis1", np.array([1], np.int64))]
    m = model(nodes, [("x", F32, [2, 3, 8])], [("t", F32, [2, 24]), ("cnt", T.INT64, [2])], inits)
    prog = check_against_reference(tmp_path, m, {"x": X})
    assert "Shape" not in prog.pretty() and prog.op_counts()["reshape"] == 1  # shape arithmetic folded


def test_gemm_matmul_softmax_layernorm(tmp_path):
    w = RNG.standard_normal((5, 8)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    w2 = RNG.standard_normal((5, 4)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["g"], transB=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["g2"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("MatMul", ["g", "w2"], ["mm"]),
             helper.make_node("Softmax", ["mm"], ["sm"], axis=-1),
             helper.make_node("LayerNormalization", ["g2", "lnw", "lnb"], ["ln"], axis=-1, epsilon=1e-5),
             helper.make_node("ArgMax", ["ln"], ["am"], axis=1, keepdims=0)]
    inits = [("w", w), ("b", b), ("w2", w2), ("lnw", np.linspace(0.5, 1.5, 5).astype(np.float32)),
             ("lnb", np.full(5, 0.1, np.float32))]
    m = model(nodes, [("x", F32, [6, 8])], [("sm", F32, [6, 4]), ("ln", F32, [6, 5]), ("am", T.INT64, [6])], inits)
    prog = check_against_reference(tmp_path, m, {"x": X.reshape(6, 8)})
    assert prog.op_counts()["linear"] >= 2  # Gemm(transB) and MatMul by a constant become linear


def test_slice_split_pad_expand_squeeze(tmp_path):
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Split", ["x", "sizes"], ["p0", "p1"], axis=2),
             helper.make_node("Split", ["x"], ["q0", "q1"], axis=2, num_outputs=2),
             helper.make_node("Pad", ["p1", "pads", "pv"], ["pd"]),
             helper.make_node("Unsqueeze", ["q0", "ax0"], ["u"]),
             helper.make_node("Expand", ["u", "eshape"], ["ex"]),
             helper.make_node("Squeeze", ["u", "ax0"], ["sq"]),
             helper.make_node("Transpose", ["pd"], ["tr"], perm=[2, 0, 1])]
    inits = [("st", np.array([-1, 0], np.int64)), ("en", np.array([-100, 8], np.int64)), ("ax", np.array([2, 0], np.int64)),
             ("sp", np.array([-2, 1], np.int64)), ("sizes", np.array([3, 5], np.int64)),
             ("pads", np.array([0, 1, 0, 0, 0, 2], np.int64)), ("pv", np.array(-1.0, np.float32)),
             ("ax0", np.array([0], np.int64)), ("eshape", np.array([3, 1, 1, 1], np.int64))]
    outs = [("s", F32, None), ("p0", F32, None), ("q1", F32, None), ("tr", F32, None), ("ex", F32, None),
            ("sq", F32, None)]
    m = model(nodes, [("x", F32, [2, 3, 8])], outs, inits)
    check_against_reference(tmp_path, m, {"x": X})


def test_conv_pools_batchnorm(tmp_path):
    x = RNG.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 0, 2, 1], strides=[2, 1], group=2),
             helper.make_node("Conv", ["x", "w"], ["c2"], auto_pad="SAME_UPPER", group=2, dilations=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("MaxPool", ["bn"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"])]
    inits = [("w", w), ("cb", np.arange(6, dtype=np.float32)), ("s", np.linspace(0.5, 2, 6).astype(np.float32)),
             ("bb", np.full(6, 0.2, np.float32)), ("mu", np.linspace(-1, 1, 6).astype(np.float32)),
             ("var", np.linspace(0.5, 3, 6).astype(np.float32))]
    m = model(nodes, [("x", F32, [1, 4, 9, 9])], [("mp", F32, None), ("ap", F32, None), ("gap", F32, None)], inits)
    check_against_reference(tmp_path, m, {"x": x}, rtol=1e-4, atol=1e-5)


def test_quantize_dequantize_per_axis_and_blocked(tmp_path):
    w = RNG.standard_normal((4, 32)).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "sc"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "sc"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["w4", "sg"], ["w4d"], axis=1, block_size=8)]
    w4 = RNG.integers(-8, 8, (4, 32)).astype(np.int8)
    inits = [("sx", np.array(0.05, np.float32)), ("zx", np.array(3, np.uint8)), ("w", w),
             ("sc", np.abs(w).max(1) / 127), ("w4", numpy_helper.to_array(numpy_helper.from_array(w4))),
             ("sg", np.abs(RNG.standard_normal((4, 4))).astype(np.float32))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [3, 5])],
                          [helper.make_tensor_value_info(n, F32, None) for n in ("xd", "wd", "w4d")],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in inits[:5]]
                          + [helper.make_tensor("w4", T.INT4, (4, 32), w4.flatten().tolist()),
                             numpy_helper.from_array(inits[5][1], "sg")])
    g.initializer.pop(4)  # the int8 stand-in; the INT4 tensor replaces it
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    prog = check_against_reference(tmp_path, m, {"x": RNG.uniform(-1, 8, (3, 5)).astype(np.float32)})
    assert {"quantize", "dequantize"} <= set(prog.op_counts())
    assert "i4" in {v.dtype for v in prog.constvars}


def test_torch_exported_cnn_and_transformer_block(tmp_path):
    torch = pytest.importorskip("torch")
    import warnings

    from test_frontend_torch import GPT2Block, resnet_like

    m = resnet_like()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(tmp_path / "cnn.onnx"), dynamo=False, opset_version=17)
    prog = load(tmp_path / "cnn.onnx")
    with torch.no_grad():
        ref = m(x).numpy()
    out = evaluate(prog, x.numpy())[0]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    assert prog.op_counts()["conv2d"] == 9

    torch.manual_seed(0)
    blk = GPT2Block().eval()
    x = torch.randn(2, 16, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(blk, (x,), str(tmp_path / "blk.onnx"), dynamo=False, opset_version=17)
    prog = load(tmp_path / "blk.onnx")
    with torch.no_grad():
        ref = blk(x).numpy()
    out = evaluate(prog, x.numpy())[0]
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert {"layer_norm", "softmax", "linear"} <= set(prog.op_counts())


def test_hf_llama_through_the_dynamo_onnx_exporter(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")  # the dynamo exporter needs it (the `onnx` extra installs it)
    pytest.importorskip("transformers")
    import warnings

    from tapeout.frontends.hf import build_hf_model, example_ids, logits_only

    cfg = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    m, ids = logits_only(build_hf_model(cfg)), example_ids(cfg, seq=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (ids,), str(tmp_path / "llama.onnx"), dynamo=True, verbose=False)
    prog = load(tmp_path / "llama.onnx")
    check(prog)
    with torch.no_grad():
        ref = m(ids).numpy()
    out = evaluate(prog, ids.numpy())[0]
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert prog.op_counts()["linear"] == 15 and prog.op_counts()["softmax"] == 2


def test_dynamic_input_dims_need_shapes(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, ["batch", 4])], [("y", F32, ["batch", 4])])
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    with pytest.raises(TapeoutError, match="dynamic shape"):
        load(tmp_path / "dyn.onnx")
    from tapeout.frontends import from_onnx
    prog = from_onnx(tmp_path / "dyn.onnx", input_shapes={"x": (3, 4)})
    assert prog.inputs[0].shape == (3, 4)


def test_corrupt_truncated_and_missing_files(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2])], [("y", F32, [2])],
              [("unused", np.ones((64, 64), np.float32))])
    data = m.SerializeToString()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf" * 10)
    for name in ("trunc.onnx", "junk.onnx", "missing.onnx"):
        with pytest.raises(TapeoutError) as e:
            load(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_unsupported_op_and_old_opset_name_node(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"], name="the_det")],
              [("x", F32, [3, 3])], [("y", F32, [])])
    onnx.save(m, str(tmp_path / "det.onnx"))
    with pytest.raises(UnsupportedOpError, match=r"det.onnx: node 'the_det' \(Det\): op not supported"):
        load(tmp_path / "det.onnx")
    old = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2])], [("y", F32, [2])], opset=11)
    onnx.save(old, str(tmp_path / "old.onnx"))
    with pytest.raises(TapeoutError, match="opset 11 is too old"):
        load(tmp_path / "old.onnx")
