"""Numerical error of the virtual NPU against PyTorch fp32, per dtype path:
a 2-layer, hidden-512 Llama and Qwen2 from transformers (random weights), 128 tokens.

bf16/fp16: all tensors stored in 16 bits, fp32 accumulation and vector math.
int8: per-token dynamic activation scales x per-channel weight scales, int32 accumulation.
fp8: the same with e4m3 (+-448) and fp32 accumulation. int4-weights: group-128 weight scales,
bf16 activations. nvfp4 / mxfp4: every GEMM weight block-quantized to e2m1 (NVFP4: blocks of 16,
e4m3 scales and an fp32 tensor scale; MXFP4: blocks of 32, e8m0 scales; tapeout.ir.blockfp),
bf16 activations; the "interp" row is the reference interpreter on the same FP4 program.
PyTorch's own bf16 forward is printed as the yardstick.

    .venv/bin/python benchmarks/npu_accuracy.py
"""
from __future__ import annotations

import numpy as np

MODES = ("bf16", "fp16", "int8", "fp8", "int4-weights", "nvfp4", "mxfp4")


def model(kind: str):
    import torch
    import transformers

    cfg = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=2, num_attention_heads=8,
               num_key_value_heads=4, vocab_size=32000, max_position_embeddings=256, use_cache=False)
    torch.manual_seed(0)
    cls = {"llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig),
           "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config)}[kind]
    return cls[0](cls[1](**cfg)).eval()


def metrics(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return np.linalg.norm(out - ref) / np.linalg.norm(ref), (out.argmax(-1) == ref.argmax(-1)).mean()


def main():
    import copy

    import torch

    import tapeout

    print(f"{'model':6s} {'path':17s} {'rel L2 vs fp32':>15s} {'argmax agree':>13s}")
    for kind in ("llama", "qwen2"):
        m = model(kind)
        ids = torch.randint(0, 32000, (1, 128), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = m(ids).logits.float().numpy()
            tb = copy.deepcopy(m).to(torch.bfloat16)(ids).logits.float().numpy()
        e, a = metrics(tb, ref)
        print(f"{kind:6s} {'torch bf16':17s} {e:15.4f} {100 * a:12.1f}%")
        for mode in MODES:
            prog = tapeout.compile(m, (ids,), chip="tapeout-n7", dtype=mode)
            e, a = metrics(prog(ids)[0], ref)
            ok = "" if mode not in ("bf16", "fp16") else ("  PASS" if e < 2e-2 and a >= 0.95 else "  FAIL")
            print(f"{kind:6s} {'npu ' + mode:17s} {e:15.4f} {100 * a:12.1f}%{ok}")
            if mode in ("nvfp4", "mxfp4"):
                from tapeout.ir import blockfp, evaluate
                e, a = metrics(evaluate(blockfp.quantize_weights(prog.ir, mode), ids.numpy())[0], ref)
                print(f"{kind:6s} {'interp ' + mode:17s} {e:15.4f} {100 * a:12.1f}%")


if __name__ == "__main__":
    main()
