"""Whole models through tapeout.compile, against PyTorch fp32: a GPT-2-style block, a tiny
Llama and Qwen2 from transformers, a small ResNet-style CNN and the ONNX export of one.
bf16 criterion: relative L2 error < 2e-2 and the same argmax on >= 95 % of positions."""
import numpy as np
import pytest

import tapeout

torch = pytest.importorskip("torch")
nn = torch.nn


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def run(model, inputs, dtype="bf16"):
    with torch.no_grad():
        ref = model(*inputs)
    ref = (ref.logits if hasattr(ref, "logits") else ref).float().numpy()
    prog = tapeout.compile(model, inputs, chip="tapeout-n7", dtype=dtype)
    out = prog(*inputs)[0]
    assert prog.stats["cycles"] > 0 and set(prog.stats["utilization"]) == {"dma", "mxu", "vec"}
    return out, ref, prog


class GPT2Block(nn.Module):
    def __init__(self, d=128, h=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.register_buffer("mask", torch.triu(torch.full((32, 32), float("-inf")), 1))

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=self.mask[: x.shape[1], : x.shape[1]], need_weights=False)
        x = x + a
        return x + self.proj(nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))


def test_gpt2_block():
    torch.manual_seed(0)
    out, ref, _ = run(GPT2Block().eval(), (torch.randn(2, 32, 128),))
    assert rel(out, ref) < 2e-2


def _hf(kind):
    transformers = pytest.importorskip("transformers")
    cfg = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=2048, max_position_embeddings=128, use_cache=False)
    torch.manual_seed(0)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg)).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_tiny_hf_lm_bf16(kind):
    m = _hf(kind)
    ids = torch.randint(0, 2048, (1, 48), generator=torch.Generator().manual_seed(1))
    out, ref, prog = run(m, (ids,))
    assert rel(out, ref) < 2e-2
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    assert prog.stats["bytes"]["dram"] > sum(p.numel() for p in m.parameters())   # bf16 weights were read


@pytest.mark.parametrize("dtype,limit", [("int8", 0.08), ("fp8", 0.15), ("int4-weights", 0.4)])
def test_tiny_llama_quantized_error_is_bounded(dtype, limit):
    m = _hf("llama")
    ids = torch.randint(0, 2048, (1, 16), generator=torch.Generator().manual_seed(2))
    out, ref, _ = run(m, (ids,), dtype)
    assert rel(out, ref) < limit                                  # measured in benchmarks/npu_accuracy.py


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.b1(x))
        x = self.pool(self.down(x))
        return self.fc(x.mean(dim=(2, 3)))


def _resnet():
    torch.manual_seed(0)
    m = TinyResNet().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    return m, torch.randn(2, 3, 16, 16)


def test_resnet_style_cnn():
    m, x = _resnet()
    out, ref, _ = run(m, (x,))
    assert rel(out, ref) < 2e-2


def test_onnx_export_of_the_cnn(tmp_path):
    pytest.importorskip("onnx")
    m, x = _resnet()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["x"])
    with torch.no_grad():
        ref = m(x).numpy()
    prog = tapeout.compile(str(path), None, chip="tapeout-n7", dtype="bf16")
    assert rel(prog(x.numpy())[0], ref) < 2e-2
