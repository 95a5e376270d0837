"""FP4 (NVFP4, MXFP4) in the performance model: bytes per weight with block scales, FP4 GEMMs
where the chip has FP4 MACs (B200), weight-only FP4 elsewhere, and a one-line error for FP4
activations on a chip without them."""
import pytest

import tapeout
from tapeout.errors import TapeoutError
from tapeout.llm.kernels import Batch, Dtypes, build_step
from tapeout.llm.spec import load_model
from tapeout.perf.api import dtypes_for
from tapeout.perf.kernels import _mma_dtype

B200, H100 = tapeout.load_chip("b200"), tapeout.load_chip("h100-sxm")


def test_fp4_bytes_include_block_scales():
    assert Dtypes(weights="nvfp4").w == 0.5 + 1 / 16      # one e4m3 scale per 16 e2m1 codes
    assert Dtypes(weights="mxfp4").w == 0.5 + 1 / 32      # one e8m0 scale per 32
    assert Dtypes(weights="fp4") == Dtypes(weights="nvfp4")
    assert Dtypes(weights="nvfp4", activations="nvfp4").gemm_in == 0.5 + 1 / 16


def test_b200_runs_w4a4_and_h100_weight_only():
    assert B200.peak_flops("fp4") == pytest.approx(9e15, rel=1e-3)
    d = dtypes_for("fp4", None, None, B200)
    assert (d.activations, d.mma, _mma_dtype(B200, d.mma)) == ("nvfp4", "fp4", "fp4")
    d = dtypes_for("mxfp4", None, None, H100)                 # no FP4 MACs: dequantize to bf16
    assert (d.activations, d.mma) == ("bf16", "bf16")
    assert Dtypes(weights="nvfp4", activations="fp8").mma == "fp8"
    ks = build_step(load_model("llama-3.1-8b"), Batch.of("prefill", 1, 512), dtypes_for("fp4", None, None, B200))
    assert {k.dtype for k in ks if k.kind == "gemm"} == {"fp4"} and {k.dtype for k in ks if k.kind == "attention"} == {"bf16"}


def test_fp4_faster_than_fp8_on_b200_and_smaller_in_memory():
    kw = dict(model="llama-3.1-8b", chip="b200")
    for phase, n in (("decode", dict(context=1024)), ("prefill", dict(prompt=4096))):
        t8 = tapeout.step_time(phase=phase, batch=1, weights="fp8", **kw, **n)
        t4 = tapeout.step_time(phase=phase, batch=1, weights="fp4", **kw, **n)
        assert t4 < 0.85 * t8, (phase, t4, t8)
    r4 = tapeout.estimate("llama-3.1-8b", chip="b200", batch=8, prompt=1024, output=128, weights="nvfp4")
    r8 = tapeout.estimate("llama-3.1-8b", chip="b200", batch=8, prompt=1024, output=128, weights="fp8")
    assert r4.memory.weights_bytes == pytest.approx(r8.memory.weights_bytes * (0.5 + 1 / 16), rel=1e-6)


def test_fp4_activations_need_fp4_macs():
    with pytest.raises(TapeoutError, match=r"^h100-sxm: fp4 activations need FP4 matrix units[^\n]*$"):
        tapeout.step_time("llama-3.1-8b", chip="h100-sxm", phase="prefill", batch=1, prompt=256,
                          weights="fp4", activations="fp4")
    with pytest.raises(TapeoutError, match="need weights nvfp4"):
        Dtypes(weights="bf16", activations="nvfp4")
    assert tapeout.step_time("llama-3.1-8b", chip="h100-sxm", phase="prefill", batch=1, prompt=256,
                             weights="fp4") > 0
