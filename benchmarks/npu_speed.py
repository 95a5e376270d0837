"""Speed of the virtual NPU:

1. functional simulation of a 2-layer, hidden-512 Llama (transformers, random weights) forward
   over 128 tokens: compile (torch.export + NPU compiler) + run, target <= 10 s;
2. count-only timing of a full 32-layer Llama-3.1-8B decode step (1 sequence, 1024 cached
   tokens, shape-only weights), build + compile + simulate, target <= 30 s.

    .venv/bin/python benchmarks/npu_speed.py
"""
from __future__ import annotations

import time

import numpy as np


def functional_llama() -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import tapeout

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=256, use_cache=False)
    m = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 128))
    with torch.no_grad():
        ref = m(ids).logits.float().numpy()
    t0 = time.perf_counter()
    prog = tapeout.compile(m, (ids,), chip="tapeout-n7", dtype="bf16")
    t1 = time.perf_counter()
    out = prog(ids)[0]
    t2 = time.perf_counter()
    err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    return {"compile_s": t1 - t0, "run_s": t2 - t1, "total_s": t2 - t0, "instructions": prog.stats["instructions"],
            "npu_seconds": prog.stats["seconds"], "rel_l2": err, "argmax": float((out.argmax(-1) == ref.argmax(-1)).mean())}


def count_only_8b(phase="decode", length=1024) -> dict:
    import tapeout
    from tapeout.npu.compiler import compile_ir
    from tapeout.npu.llm import llama_step
    from tapeout.npu.sim import simulate

    t0 = time.perf_counter()
    ir = llama_step("llama-3.1-8b", phase, 1, length)
    prog = compile_ir(ir, tapeout.load_chip("tapeout-n7"), "bf16")
    t1 = time.perf_counter()
    st = simulate(prog, (), count_only=True).stats
    t2 = time.perf_counter()
    return {"compile_s": t1 - t0, "simulate_s": t2 - t1, "total_s": t2 - t0, "instructions": st["instructions"],
            "npu_ms": st["seconds"] * 1e3, "utilization": st["utilization"], "dram_gb": st["bytes"]["dram"] / 1e9}


def main():
    f = functional_llama()
    print(f"functional 2-layer hidden-512 Llama, 128 tokens: compile {f['compile_s']:.2f} s + run {f['run_s']:.2f} s "
          f"= {f['total_s']:.2f} s (target <= 10 s) {'PASS' if f['total_s'] <= 10 else 'FAIL'}; "
          f"{f['instructions']} instructions, simulated {f['npu_seconds'] * 1e6:.1f} us on tapeout-n7, "
          f"rel L2 vs PyTorch fp32 {f['rel_l2']:.4f}, argmax {100 * f['argmax']:.1f} %")
    c = count_only_8b()
    u = c["utilization"]
    print(f"count-only Llama-3.1-8B decode step (32 layers + head, ctx 1024): compile {c['compile_s']:.2f} s + simulate "
          f"{c['simulate_s']:.2f} s = {c['total_s']:.2f} s (target <= 30 s) {'PASS' if c['total_s'] <= 30 else 'FAIL'}; "
          f"{c['instructions']} instructions; simulated step {c['npu_ms']:.2f} ms, DRAM {c['dram_gb']:.2f} GB, "
          f"utilization dma {100 * u['dma']:.0f} % mxu {100 * u['mxu']:.0f} % vec {100 * u['vec']:.1f} %")


if __name__ == "__main__":
    main()
