"""Fixes in the IR and frontends that the NPU work needed: 0-d constants keep their shape,
avg_pool2d's divisor map (shared by the interpreter and the compiler) follows PyTorch, and a
Hugging Face model built with its default config (use_cache=True) compiles."""
import numpy as np
import pytest

import tapeout
from tapeout.ir import Builder, check, evaluate
from tapeout.ir.interp import avg_pool_divisor

torch = pytest.importorskip("torch")


def test_scalar_const_stays_0d():
    b = Builder("q")
    x = b.input((2, 3), "f32", name="x")
    s = b.const(np.float32(0.25) * np.ones((), np.float32))
    prog = b.build(b.quantize(x, s, dtype="i8"))
    check(prog)
    assert prog.consts[s.name].shape == () == s.shape
    np.testing.assert_array_equal(evaluate(prog, np.full((2, 3), 1.1, np.float32))[0], np.full((2, 3), 4, np.int8))


@pytest.mark.parametrize("k,s,p,ceil,cip", [(3, 2, 1, False, True), (3, 2, 1, False, False), (3, 2, 1, True, False),
                                            (2, 2, 0, True, True), (3, 1, 1, True, True)])
def test_avg_pool_divisor_is_torchs(k, s, p, ceil, cip):
    x = torch.rand(1, 1, 9, 8) + 0.5
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
    F = torch.nn.functional
    div = (F.avg_pool2d(x, divisor_override=1, **kw) / F.avg_pool2d(x, **kw))[0, 0].numpy()
    ours = avg_pool_divisor((9, 8), (k, k), (s, s), ((p, p), (p, p)), ceil, cip)
    np.testing.assert_allclose(ours, div, rtol=1e-5)


def test_hf_model_with_default_config_compiles():
    """transformers' default use_cache=True returns a DynamicCache torch.export cannot flatten;
    the frontend exports with use_cache=False, so the model compiles as built."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=256, max_position_embeddings=64)
    assert cfg.use_cache
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(ids).logits.numpy()
    prog = tapeout.compile(m, (ids,), chip="tapeout-n7", dtype="fp16")
    assert [v.shape for v in prog.ir.outputs] == [(2, 8, 256)] and len(prog.ir.inputs) == 1
    np.testing.assert_allclose(evaluate(prog.ir, ids.numpy())[0], ref, atol=1e-5)
    out = prog(ids)[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 5e-3
