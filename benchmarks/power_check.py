"""H100 power check: predicted vs measured board power and SM clock for every `power` entry of
src/tapeout/data/calibration/h100-sxm.json.

    .venv/bin/python benchmarks/power_check.py [--json]

The activity of each entry is counted here from its shapes (the performance model will later
pass its own counts to the same API); the duration is the measured ms_per_call.

- GEMM M x N x K: M*N*K MACs; DRAM: the compulsory traffic (A, B read once, C written once);
  L2: every operand tile loaded by a 128 x 256 output tile (cuBLAS' Hopper tile), plus C;
  shared memory: each loaded operand byte written once and read once by the tensor cores.
- copy: 2 x 2 GiB through DRAM and L2.
- Llama-3.1-8B (hidden 4096, 32 layers, 32 q / 8 kv heads of 128, MLP 14336, vocab 128256), the
  unfused PyTorch decoder of measure_gpu.py: per layer the QKV, O, gate-up and down GEMMs,
  attention, and the elementwise kernels (norms, RoPE by slicing and cat, SiLU, multiply,
  residual adds) counted as bytes read + written; lm_head on the last position only.
  Decode step: batch B over a KV cache of C + 1 tokens (2*32*8*128*2 bytes per token).

Two numbers per entry: the power the model gives at the measured clock and duration, and the
clock and power it predicts when it must fit the 700 W TDP itself (`sustained_power`).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from importlib import resources

from tapeout.chip import load_chip
from tapeout.energy import Activity, power_w, sustained_clock_hz, sustained_power

LLAMA = dict(hidden=4096, layers=32, heads_q=32, heads_kv=8, head_dim=128, inter=14336, vocab=128256)
TILE_M, TILE_N = 128, 256
TOLERANCE = 0.15


@dataclass(frozen=True)
class Entry:
    name: str
    activity: Activity
    seconds: float          # measured duration of one call
    watts: float            # measured median board power
    clock_hz: float         # measured median SM clock
    compute_fraction: float  # share of the time at max clock that scales with 1/clock


def gemm(M: int, N: int, K: int, dtype: str, in_b: float, out_b: float = 2.0) -> Activity:
    tm, tn = min(TILE_M, M), min(TILE_N, N)
    operand_l2 = in_b * (M * K * math.ceil(N / tn) + N * K * math.ceil(M / tm))
    return Activity(macs={dtype: float(M) * N * K},
                    dram_bytes=in_b * (M * K + N * K) + out_b * M * N,
                    shared_buffer_bytes=operand_l2 + out_b * M * N,
                    sram_bytes=2.0 * operand_l2)


def attention(B: int, Sq: int, Skv: int, causal: bool) -> Activity:
    """Flash attention, bf16: QK^T and PV MACs; q, k, v read and o written once; softmax ~5 flops per score."""
    c = LLAMA
    scores = B * c["heads_q"] * (Sq * (Sq + 1) / 2 if causal else Sq * Skv)
    io = 2.0 * B * (2 * Sq * c["heads_q"] * c["head_dim"] + 2 * Skv * c["heads_kv"] * c["head_dim"])
    return Activity(macs={"bf16": 2.0 * scores * c["head_dim"]}, vector_flops=5.0 * scores,
                    dram_bytes=io, shared_buffer_bytes=io, sram_bytes=2.0 * io)


def elementwise(nbytes: float, flops: float) -> Activity:
    return Activity(vector_flops=flops, dram_bytes=nbytes, shared_buffer_bytes=nbytes)


def _layer_gemms(M: int) -> list[Activity]:
    c = LLAMA
    h, kv = c["hidden"], c["heads_kv"] * c["head_dim"]
    return [gemm(M, h + 2 * kv, h, "bf16", 2), gemm(M, h, h, "bf16", 2),
            gemm(M, 2 * c["inter"], h, "bf16", 2), gemm(M, h, c["inter"], "bf16", 2)]


def _layer_elementwise(S: int) -> Activity:
    """Bytes read + written by the unfused kernels of one layer, in units of X = S x hidden x 2 bytes:
    2 rms_norms (2X each), RoPE on q and k (9 X per X of input: 6 half-width ops and a cat), the
    attention-output transpose copy (2X), 2 residual adds (3X each), SiLU on gate (7X), gate*up (10.5X)."""
    x = S * LLAMA["hidden"] * 2.0
    units = 2 * 2 + 9 * 1.25 + 2 + 2 * 3 + 7 + 10.5
    return elementwise(units * x, flops=30.0 * S * LLAMA["hidden"])


def llama_decode(B: int, C: int) -> Activity:
    c = LLAMA
    per_layer = sum(_layer_gemms(B), Activity()) + attention(B, 1, C + 1, False) + _layer_elementwise(B)
    lm_head = gemm(B, c["vocab"], c["hidden"], "bf16", 2)
    return per_layer.scaled(c["layers"]) + lm_head


def llama_prefill(S: int) -> tuple[Activity, Activity]:
    """(compute-bound part: GEMMs + attention, memory-bound part: elementwise kernels)."""
    c = LLAMA
    compute = (sum(_layer_gemms(S), Activity()) + attention(1, S, S, True)).scaled(c["layers"])
    compute = compute + gemm(1, c["vocab"], c["hidden"], "bf16", 2)
    return compute, _layer_elementwise(S).scaled(c["layers"]) + elementwise(2.0 * S * c["hidden"], 0.0)


def _calibration() -> dict:
    res = resources.files("tapeout") / "data" / "calibration" / "h100-sxm.json"
    return json.loads(res.read_text())


def entries() -> list[Entry]:
    cal = _calibration()
    p, ceil = cal["power"], cal["meta"]["ceilings"]["copy_GBps_read_plus_write"] * 1e9
    fmax = load_chip("h100-sxm").max_clock_hz

    def e(key: str, act: Activity, cf: float) -> Entry:
        m = p[key]
        return Entry(key, act, m["ms_per_call"] / 1e3, m["watts_median"], m["sm_clock_median"] * 1e6, cf)

    compute, memory = llama_prefill(2048)
    t = p["llama-3.1-8b_prefill_2048"]
    t_mem = memory.dram_bytes / ceil                               # elementwise kernels at the copy ceiling
    t_comp_max = (t["ms_per_call"] / 1e3 - t_mem) * t["sm_clock_median"] * 1e6 / fmax
    return [
        e("idle", Activity(), 0.0),
        e("gemm_8192_bf16", gemm(8192, 8192, 8192, "bf16", 2), 1.0),
        e("gemm_8192_fp8", gemm(8192, 8192, 8192, "fp8", 1), 1.0),
        e("copy_2GiB", Activity(dram_bytes=4.0 * 2**30, shared_buffer_bytes=4.0 * 2**30), 0.0),
        e("llama-3.1-8b_decode_B1_C1024", llama_decode(1, 1024), 0.0),
        e("llama-3.1-8b_decode_B64_C1024", llama_decode(64, 1024), 0.0),
        e("llama-3.1-8b_prefill_2048", compute + memory, t_comp_max / (t_comp_max + t_mem)),
    ]


def seconds_at_max_clock(x: Entry, fmax: float) -> float:
    return x.seconds / (x.compute_fraction * fmax / x.clock_hz + 1.0 - x.compute_fraction)


def check(chip=None) -> list[dict]:
    chip = chip or load_chip("h100-sxm")
    rows = []
    for x in entries():
        at_meas = power_w(chip, x.activity, x.seconds, x.clock_hz)
        t_max = seconds_at_max_clock(x, chip.max_clock_hz)
        f = sustained_clock_hz(chip, x.activity, t_max, x.compute_fraction)
        capped = sustained_power(chip, x.activity, t_max, x.compute_fraction)
        rows.append({"entry": x.name, "measured_w": x.watts, "measured_mhz": x.clock_hz / 1e6,
                     "model_w_at_measured_clock": at_meas.total_w, "predicted_mhz": f / 1e6,
                     "predicted_w": capped.total_w, "compute_fraction": x.compute_fraction,
                     "err_w": capped.total_w / x.watts - 1, "err_clock": f / x.clock_hz - 1,
                     "err_w_at_measured_clock": at_meas.total_w / x.watts - 1,
                     "breakdown_w": {"static": capped.static_w, **capped.dynamic_w}})
    return rows


def main(argv: list[str]) -> int:
    rows = check()
    if "--json" in argv:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'entry':32s} {'meas W':>7s} {'model W':>8s} {'err':>6s} | {'meas MHz':>8s} {'pred MHz':>8s} {'err':>6s} | "
          f"{'W @meas clk':>11s} {'err':>6s} | breakdown at predicted clock (W)")
    worst = 0.0
    for r in rows:
        b = r["breakdown_w"]
        parts = " ".join(f"{k}={v:.0f}" for k, v in b.items() if v >= 0.5)
        print(f"{r['entry']:32s} {r['measured_w']:7.0f} {r['predicted_w']:8.0f} {100 * r['err_w']:+5.1f}% | "
              f"{r['measured_mhz']:8.0f} {r['predicted_mhz']:8.0f} {100 * r['err_clock']:+5.1f}% | "
              f"{r['model_w_at_measured_clock']:11.0f} {100 * r['err_w_at_measured_clock']:+5.1f}% | {parts}")
        worst = max(worst, abs(r["err_w"]), abs(r["err_clock"]))
    print(f"worst |error| (watts or clock): {100 * worst:.1f}% (limit {100 * TOLERANCE:.0f}%)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
