"""ResNet-50 v1.5 in the IR (tapeout.npu.vision) and its timing on the virtual NPU."""
import numpy as np
import pytest

from tapeout.errors import TapeoutError
from tapeout.ir import check, evaluate
from tapeout.npu.vision import Arch, _build, _pieces, calibrate, predict_throughput, quantize_image, resnet50, simulate_batch

SMALL = Arch(blocks=(1, 2, 1, 1), width=8, classes=10, image=32)


def _conv_macs(prog):
    macs = 0
    for e in prog.eqns:
        if e.op == "conv2d":
            macs += np.prod(e.outputs[0].shape) * np.prod(e.inputs[1].shape[1:])
        elif e.op == "linear":
            macs += np.prod(e.inputs[0].shape[:-1]) * np.prod(e.inputs[1].shape)
    return int(macs)


def test_resnet50_layers_parameters_and_macs():
    prog = resnet50(1, "f32", abstract=True)
    check(prog)
    assert prog.outputs[0].shape == (1, 1000)
    convs = [e for e in prog.eqns if e.op == "conv2d"]
    assert len(convs) == 53                                   # 49 + stem + 3 projection shortcuts ... + 1 (stage 1)
    n = sum(int(np.prod(a.shape)) for a in prog.consts.values())
    bn_channels = sum(e.inputs[1].shape[0] for e in convs)
    assert n + bn_channels == 25_557_032                     # torchvision's count: BN has 2 params, folded has 1
    assert abs(_conv_macs(prog) / 1e9 - 4.09) < 0.01          # ~4.1 GMACs per 224x224 image
    outs = {e.outputs[0].name: e.outputs[0].shape for e in prog.eqns}
    assert outs["stem"] == (1, 64, 112, 112) and outs["pool"] == (1, 64, 56, 56)
    assert outs["s0b2_conv3"] == (1, 256, 56, 56) and outs["s1b3_conv3"] == (1, 512, 28, 28)
    assert outs["s2b5_conv3"] == (1, 1024, 14, 14) and outs["s3b2_conv3"] == (1, 2048, 7, 7)
    by_out = {e.outputs[0].name: e for e in prog.eqns}
    first = [e for e in convs if e.inputs[1].name.startswith("w_s1b0_")]
    strides = {e.inputs[1].name: e.params["stride"] for e in first}
    assert strides == {"w_s1b0_conv1_w": (1, 1), "w_s1b0_conv2_w": (2, 2), "w_s1b0_conv3_w": (1, 1),
                       "w_s1b0_down_w": (2, 2)}                                 # v1.5: stride in the 3x3
    assert by_out["pool"].params["kernel"] == (3, 3)


def _torch_resnet(prog, arch):
    """The same network written directly in torch, with the program's weights."""
    import torch
    import torch.nn.functional as F
    W = {k: torch.from_numpy(np.asarray(v)) for k, v in prog.consts.items()}

    def conv(x, name, stride, pad):
        return F.conv2d(x, W[f"{name}_w"], W[f"{name}_b"], stride=stride, padding=pad)

    def forward(x):
        x = F.max_pool2d(F.relu(conv(x, "stem", 2, 3)), 3, 2, 1)
        for s, n in enumerate(arch.blocks):
            for i in range(n):
                name, stride = f"s{s}b{i}", 2 if s > 0 and i == 0 else 1
                h = F.relu(conv(x, f"{name}_conv1", 1, 0))
                h = F.relu(conv(h, f"{name}_conv2", stride, 1))
                r = conv(x, f"{name}_down", stride, 0) if f"{name}_down_w" in W else x
                x = F.relu(conv(h, f"{name}_conv3", 1, 0) + r)
        return F.linear(x.mean((2, 3)), W["fc_w"], W["fc_b"])
    return forward


def test_small_resnet_matches_torch():
    torch = pytest.importorskip("torch")
    prog = resnet50(2, "f32", arch=SMALL)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ours = evaluate(prog, x)[0]
    ref = _torch_resnet(prog, SMALL)(torch.from_numpy(x)).numpy()
    assert ours.shape == (2, 10)
    assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("piece", [p for p in _pieces(SMALL) if p[0] != "head"][:4], ids=str)
def test_int8_pieces_on_the_npu_within_one_step_of_the_interpreter(piece):
    """The NPU stores the f32 requantisation multipliers in bf16 (the mode's 16-bit type), so an int8
    activation may land one step away from the interpreter's; never more."""
    from tapeout.npu.api import compile as npu_compile
    q = _build(SMALL, 2, "int8", [piece], scales={})
    x = np.random.default_rng(4).integers(-60, 60, q.inputs[0].shape).astype(np.int8)
    ref = evaluate(q, x)[0].astype(np.int64)
    ours = npu_compile(q, chip="hanguang-800", dtype="int8")(x)[0]
    assert np.abs(ours - ref).max() <= 1 and (ours == ref).mean() > 0.85 and np.abs(ref).mean() > 5


def test_int8_resnet_on_the_npu_tracks_the_interpreter_and_f32():
    from tapeout.npu.api import compile as npu_compile
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    q = resnet50(2, "int8", arch=SMALL, calibration=x)
    assert q.inputs[0].dtype == "i8" and q.op_counts()["conv2d"] == 3 * sum(SMALL.blocks) + 1 + len(SMALL.blocks)
    xq = quantize_image(x, calibrate(SMALL, x))
    ref = evaluate(q, xq)[0]
    ours = npu_compile(q, chip="hanguang-800", dtype="int8")(xq)[0]
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel(ours, ref) < 0.15                     # one-step differences + the FC's dynamic int8
    assert rel(ref, evaluate(resnet50(2, "f32", arch=SMALL), x)[0]) < 0.2      # static int8 stays near f32


@pytest.mark.parametrize("groups,cin,cout", [(1, 5, 7), (2, 6, 4), (6, 6, 6)])
def test_int8_conv_is_exact_on_the_npu(groups, cin, cout):
    from tapeout.ir import Builder
    from tapeout.npu.api import compile as npu_compile
    rng = np.random.default_rng(3)
    b = Builder("qconv")
    x = b.input((2, cin, 9, 9), "i8", name="x")
    w = b.const(rng.integers(-127, 128, (cout, cin // groups, 3, 3)).astype(np.int8), name="w")
    y = b.conv2d(x, w, stride=2, padding=1, groups=groups, acc_dtype="i32", dtype="i32")
    prog = b.build(b.cast(b.relu(b.mul(b.cast(y, dtype="f32"), 0.01)), dtype="i8"))
    xi = rng.integers(-127, 128, (2, cin, 9, 9)).astype(np.int8)
    ref = evaluate(prog, xi)[0]
    ours = npu_compile(prog, chip="hanguang-800", dtype="int8")(xi)[0]
    assert np.array_equal(ours, ref.astype(np.int64))


def test_pieces_add_up_to_the_whole_network(tmp_path):
    """Without chaining (the hanguang file less its conv engine) kernels end in barriers and pieces add
    up; with it (hanguang-800) the prediction is the whole network, which pieces overestimate."""
    from importlib import resources

    from tapeout.chip import load_chip
    from tapeout.npu.compiler import compile_ir
    from tapeout.npu.sim import simulate
    from tapeout.npu.vision import _distinct, _simulate_piece
    text = (resources.files("tapeout.chips") / "hanguang-800.toml").read_text(encoding="utf-8")
    plain = tmp_path / "hanguang-im2col.toml"
    plain.write_text("".join(ln for ln in text.splitlines(keepends=True) if "cores.matrix.conv" not in ln and
                             not ln.startswith(('dataflow = "sliding', "channels_in", "channels_out", "pixels"))))
    for chip in (str(plain), "hanguang-800"):
        r = predict_throughput(SMALL, chip, batch=2)
        assert r["batch"] == 2 and r["samples_s"] == pytest.approx(2 / r["seconds_per_batch"])
        assert set(r["classes"]) == {"stem", "stage1", "stage2", "stage3", "stage4", "head"}
        assert sum(c["seconds"] for c in r["classes"].values()) == pytest.approx(r["seconds_per_batch"])
        whole = simulate(compile_ir(resnet50(2, "int8", arch=SMALL, abstract=True), load_chip(chip), "int8"),
                         (), count_only=True).stats["cycles"]
        assert 0 < r["utilization"]["mxu"] < 1 and 0 < r["utilization"]["vec"] < 1
        if chip == "hanguang-800":
            assert r["cycles"] == whole
            assert whole < sum(n * _simulate_piece(p, SMALL, chip, "int8", 2)["cycles"] for p, n in _distinct(SMALL))
        else:
            assert r["cycles"] == pytest.approx(whole, rel=0.03)


def test_batch_search_picks_the_best_batch_that_fits():
    best = predict_throughput(SMALL, "hanguang-800")
    one = simulate_batch(SMALL, "hanguang-800", "int8", 1)
    assert best["samples_s"] >= one["samples_s"] and best["batch"] >= 1
    assert best["memory_bytes"] <= 192 * 2 ** 20


def test_errors_are_one_line():
    with pytest.raises(TapeoutError, match="vision model 'vgg'"):
        predict_throughput("vgg", "hanguang-800", batch=1)
    with pytest.raises(TapeoutError, match="dtype 'int3'"):
        predict_throughput("resnet-50", "hanguang-800", dtype="int3", batch=1)
    with pytest.raises(TapeoutError, match="f32 or int8"):
        resnet50(1, "bf16")
