"""torch.export frontend: aten ops one by one and whole models, through the reference
interpreter, compared with PyTorch eager."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tapeout.errors import TapeoutError, UnsupportedOpError  # noqa: E402
from tapeout.frontends import load  # noqa: E402
from tapeout.ir import check, evaluate  # noqa: E402
from ir_helpers import from_torch  # noqa: E402


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def run_both(module, *inputs):
    """(IR outputs, torch outputs) for a module, after checking the program."""
    module = module.eval()
    prog = load(module, tuple(inputs))
    check(prog)
    ours = evaluate(prog, *[from_torch(i) for i in inputs])
    with torch.no_grad():
        ref = module(*inputs)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    return prog, ours, [from_torch(r) for r in ref]


def assert_same(module, *inputs, rtol=1e-5, atol=1e-6):
    prog, ours, ref = run_both(module, *inputs)
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, r.shape, o.dtype, r.dtype)
        if o.dtype.kind in "biu":
            assert np.array_equal(o, r)
        else:
            np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
    return prog


g = torch.Generator().manual_seed(0)
X = torch.randn(2, 3, 8, generator=g)
Y = torch.randn(2, 3, 8, generator=g)
I = torch.randint(-5, 6, (2, 3, 8), generator=g)
IMG = torch.randn(2, 4, 9, 9, generator=g)

CASES = {
    "arith_promote": (lambda x, i: (x * 2 + i) / 3 - x ** 2, X, I),
    "pow_sqrt_rsqrt": (lambda x: x.abs() ** 0.5 + x.abs().add(1).rsqrt() + x ** 3, X),
    "div_modes": (lambda x, i: (torch.div(x, 0.7, rounding_mode="floor"), torch.div(x, 0.7, rounding_mode="trunc"),
                                torch.div(i, 3, rounding_mode="floor"), torch.div(i, 3, rounding_mode="trunc")), X, I),
    "int_ops": (lambda i: (i * 3 - 2, i.abs(), torch.maximum(i, torch.zeros_like(i))), I),
    "remainder": (lambda x, i: (x % 0.7, torch.fmod(x, 0.7), i % 4, torch.fmod(i, 4), torch.remainder(i, -3)), X, I),
    "unary": (lambda x: (x.exp(), x.abs().add(1e-3).log(), x.sin(), x.cos(), x.tanh(),
                         x.sigmoid(), torch.erf(x), x.floor(), x.ceil(), x.round(), x.sign(), x.neg(), x.reciprocal()), X),
    "activations": (lambda x: (F.relu(x), F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), F.leaky_relu(x, 0.1),
                               F.hardtanh(x), F.relu6(x), F.hardswish(x), F.hardsigmoid(x)), X),
    "clamp": (lambda x, y: (x.clamp(-0.5, 0.7), x.clamp(min=0.1), torch.clamp(x, y - 1, y + 1)), X, Y),
    "compare_logic": (lambda x, y: ((x > y) & (x < 1), (x >= 0) | (y <= 0), (x == y) ^ (x != 0), ~(x > 0)), X, Y),
    "where": (lambda x, y: (torch.where(x > 0, x, y), torch.where(x > 0, x, 0.0), torch.where(x > y, 1.0, -1.0)), X, Y),
    "reductions": (lambda x: (x.sum(), x.sum(-1), x.mean((0, 2), keepdim=True), x.amax(1), x.amin(-1, keepdim=True),
                              x.max(), x.argmax(-1), x.argmin(1, keepdim=True), x.max(dim=1).values,
                              x.max(dim=2).indices, x.argmax()), X),
    "bool_reductions": (lambda x: ((x > 0).any(-1), (x > -3).all(1), (x > 0).sum(-1)), X),
    "cumsum": (lambda x, i: (x.cumsum(-1), i.cumsum(1)), X, I),
    "softmax": (lambda x: (x.softmax(-1), F.log_softmax(x, 1)), X),
    "views": (lambda x: (x.view(6, 8), x.reshape(2, -1), x.unsqueeze(1).squeeze(1), x.flatten(1), x.permute(2, 0, 1),
                         x.transpose(0, 1), x.t() if x.ndim == 2 else x.mT, x[:, None].expand(2, 5, 3, 8)), X),
    "slicing": (lambda x: (x[:, 1:, ::2], x[..., -3:], x[:, 1], x[1, :, 4:7], x.narrow(2, 1, 4)), X),
    "split_cat": (lambda x, y: (*x.split([3, 5], -1), *x.chunk(2, -1), *x.unbind(1), torch.cat([x, y], 1),
                                torch.stack([x, y], 0)), X, Y),
    "pad": (lambda x: (F.pad(x, (1, 2)), F.pad(x, (0, 1, 2, 0), value=-1.0)), X),
    "indexing": (lambda x, i: (x[:, torch.tensor([2, 0])], x[:, :, torch.tensor([[1, 7], [0, 0]])],
                               x[torch.tensor([1, 0]), torch.tensor([2, 2])], x[:, i[0, 0, :2].abs() % 3],
                               torch.index_select(x, 2, torch.tensor([7, 1, 1]))), X, I),
    "embedding": (lambda i: F.embedding(i.abs(), torch.arange(60.0).reshape(6, 10)), I),
    "constants_like": (lambda x: (torch.zeros_like(x) + 1, torch.ones_like(x) * x, torch.full_like(x, 3.0),
                                  x + torch.arange(8.0), x.new_zeros(3) + 2), X),
    "casts": (lambda x: (x.to(torch.bfloat16), x.half(), (x * 4).to(torch.int32), x.int().float(), (x > 0).long()), X),
    "matmuls": (lambda x, y: (x @ y.transpose(1, 2), torch.bmm(x, y.mT), torch.matmul(x[0], y[0, 0]),
                              torch.einsum("bij,bkj->bik", x, y)), X, Y),
    "norms": (lambda x: (F.layer_norm(x, (8,)), F.layer_norm(x, (3, 8), torch.ones(3, 8) * 2, torch.zeros(3, 8) + .5),
                         F.rms_norm(x, (8,), torch.arange(8.0), 1e-6)), X),
    "pools": (lambda im: (F.max_pool2d(im, 3, 2, 1), F.max_pool2d(im, 2, ceil_mode=True), F.avg_pool2d(im, 3, 2, 1),
                          F.avg_pool2d(im, 2, 2, 1, count_include_pad=False), F.adaptive_avg_pool2d(im, 1),
                          F.adaptive_avg_pool2d(im[..., :8, :8], 2), im.mean((-1, -2))), IMG),
    "sdpa": (lambda x, y: (F.scaled_dot_product_attention(x[None], y[None], y[None], is_causal=True),
                           F.scaled_dot_product_attention(x[None], y[None], x[None], attn_mask=(x[0, :, :3] > 0)[None, None]
                                                          .expand(1, 2, 3, 3), scale=0.3),
                           F.scaled_dot_product_attention(x[None], y[None, :1], y[None, :1], enable_gqa=True)), X, Y),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_aten_ops_match_torch(name):
    fn, *inputs = CASES[name]
    assert_same(Fn(fn), *inputs, rtol=2e-5, atol=2e-6)


def test_convs_and_batchnorm_fold():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, stride=2, dilation=2, groups=8, bias=False), nn.BatchNorm2d(8))
    for bn in (m[1], m[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    prog = assert_same(m, IMG, rtol=1e-4, atol=1e-5)
    assert "mul" not in prog.op_counts() and prog.op_counts()["conv2d"] == 2  # both BNs folded
    assert any(n.endswith("_bnfold") for n in prog.consts)


def test_conv1d_and_batchnorm_without_conv():
    m = nn.Sequential(nn.Conv1d(3, 5, 3, padding=2, dilation=2), nn.Flatten(), nn.BatchNorm1d(40), nn.Linear(40, 4))
    m[2].running_mean.uniform_(-1, 1)
    m[2].running_var.uniform_(0.5, 2)
    prog = assert_same(m, torch.randn(2, 3, 8, generator=g), rtol=1e-4, atol=1e-5)
    assert prog.op_counts()["mul"] == 1  # unfoldable BN -> per-channel mul + add


def test_constants_fold_and_params_keep_names():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.register_buffer("scale", torch.linspace(0.5, 1.5, 8))

        def forward(self, x):
            mask = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)  # built from constants only
            y = self.proj(x) * self.scale
            return y.masked_fill(mask[:, :1], 0.0)

    prog = assert_same(M(), X)
    assert {"proj_weight", "proj_bias", "scale"} <= set(prog.consts)
    assert "iota" not in prog.op_counts() and "triu" not in str(prog.pretty())


class GPT2Block(nn.Module):
    def __init__(self, d=64, h=4):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


def test_gpt2_style_block():
    torch.manual_seed(0)
    prog = assert_same(GPT2Block(), torch.randn(2, 16, 64), rtol=1e-4, atol=2e-6)
    assert prog.op_counts()["attention"] == 1 and prog.op_counts()["linear"] == 4


def resnet_like():
    class Basic(nn.Module):
        def __init__(self, c, stride):
            super().__init__()
            o = c * stride
            self.c1, self.b1 = nn.Conv2d(c, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
            self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
            self.down = nn.Sequential(nn.Conv2d(c, o, 1, stride, bias=False), nn.BatchNorm2d(o)) if stride > 1 else None

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                      Basic(8, 1), Basic(8, 2), Basic(16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


def test_resnet_style_cnn():
    prog = assert_same(resnet_like(), torch.randn(2, 3, 32, 32, generator=g), rtol=1e-4, atol=1e-5)
    assert prog.op_counts()["conv2d"] == 9 and "mul" not in prog.op_counts()


def test_bf16_module_runs_in_bf16():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 16)).to(torch.bfloat16)
    x = torch.randn(4, 32).to(torch.bfloat16)
    prog, ours, ref = run_both(m, x)
    assert ours[0].dtype == ref[0].dtype  # bf16
    with torch.no_grad():
        exact = m.float()(x.float()).numpy()
    err_ours = np.abs(ours[0].astype(np.float32) - exact).max()
    err_torch = np.abs(ref[0].astype(np.float32) - exact).max()
    assert err_ours <= 2 * err_torch + 1e-2, (err_ours, err_torch)


def test_unsupported_op_names_aten_op_and_module_path():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.cumprod(x, 1)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            return self.inner(x + 1)

    with pytest.raises(UnsupportedOpError) as e:
        load(Outer(), (X,))
    msg = str(e.value)
    assert "aten.cumprod" in msg and "module 'inner'" in msg and "test_frontend_torch.py" in msg
    assert "\n" not in msg


def test_export_failure_is_a_tapeout_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(TapeoutError, match="torch.export failed for DataDependent"):
        load(DataDependent(), (X,))
