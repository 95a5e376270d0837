"""DeepSeek-V3 multi-token prediction (mtp:1) as speculative decoding: TPOT with and without it.

    python benchmarks/speculative.py

At batch 1 on one 8-chip node (fp8 weights, tp 8), at the second-token acceptance DeepSeek published
(85-90 %, arXiv:2412.19437 section 5.4.3; data/serve/speculative.toml) against the 1.8x tokens/s it
reports; then the speedup at each batch size at the sourced default acceptance. The published figures
are printed for comparison only (nothing is fitted on them). The H100 holds the fp8 weights with almost
nothing left for a KV cache, so the batch sweep runs on the H200.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tapeout  # noqa: E402
from tapeout.perf.speculative import data  # noqa: E402

MODEL, PROMPT, OUTPUT = "deepseek-v3", 1024, 256
LAYOUT = dict(tp=8, weights="fp8", prompt=PROMPT, output=OUTPUT)


def speedup(chip: str, batch: int, spec: str) -> tuple[float, float, float]:
    """(TPOT without, TPOT with, tokens per step)."""
    plain = tapeout.estimate(MODEL, chip=chip, batch=batch, **LAYOUT)
    with_ = tapeout.estimate(MODEL, chip=chip, batch=batch, speculative=spec, **LAYOUT)
    return plain.tpot_s, with_.tpot_s, with_.settings["tokens_per_step"]


def main() -> None:
    pub = data()["published"]
    print(f"{MODEL} mtp:1, batch 1, prompt {PROMPT}, output {OUTPUT}, fp8 weights, tp 8 "
          f"(published: acceptance {pub['mtp_acceptance_low']:.0%}-{pub['mtp_acceptance_high']:.0%}, "
          f"{pub['mtp_tps_speedup']:.1f}x tokens/s)")
    print(f"{'chip':10} {'acceptance':>10} {'tokens/step':>11} {'TPOT without':>13} {'TPOT with':>10} {'speedup':>8}")
    for chip in ("h100-sxm", "h200-sxm"):
        for a in (pub["mtp_acceptance_low"], pub["mtp_acceptance_high"]):
            t0, t1, n = speedup(chip, 1, f"mtp:1:{a}")
            print(f"{chip:10} {a:>10.0%} {n:>11.3f} {t0 * 1e3:>10.2f} ms {t1 * 1e3:>7.2f} ms {t0 / t1:>7.2f}x")
    a = data()["acceptance"]["mtp"]
    print(f"\nh200-sxm, mtp:1 at the default acceptance {a:.1%}: by batch size")
    print(f"{'batch':>6} {'TPOT without':>13} {'TPOT with':>10} {'tok/s without':>14} {'tok/s with':>11} {'speedup':>8}")
    for b in (1, 4, 16, 64, 128):
        t0, t1, _ = speedup("h200-sxm", b, "mtp:1")
        print(f"{b:>6} {t0 * 1e3:>10.2f} ms {t1 * 1e3:>7.2f} ms {b / t0:>14,.0f} {b / t1:>11,.0f} {t0 / t1:>7.2f}x")


if __name__ == "__main__":
    main()
