"""Gaudi 2: bucketed decode and PA-053 against the same software's CI (docs/validation.md, "Gaudi 2").

    python benchmarks/gaudi2_pa053.py          # a few seconds

PA-053 (Intel's Gaudi 2 table, Gaudi software 1.18: Llama-2-70B fp8, 4 cards TP4, 128 + 2,048 tokens,
batch 327, 3,211 tok/s) next to optimum-habana's Gaudi 2 fp8 CI rows on the same 4 cards
(data/calibration/gaudi2-optimum-habana-ci.json, v1.14.0, the release for software 1.18), with the shipped
gaudi-synapse stack, and two what-ifs, neither a fit: the 4-card all-reduce on one peer's port group (a
ring over neighbours only: a third of the fully-connected bandwidth), and PA-053's batch on 2 cards (TP2).
First: the rows whose step is mostly attention over the cache (128 + 2,048 tokens on one card), with the
shipped stack (decode over the filled buckets, dynamic_shapes) and with the same efficiencies at the
compiled length, Intel's table (bucketed recipe) next to the CI's Mistral row (no bucket flags).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import tapeout.parallel as P  # noqa: E402
import tapeout.validate as V  # noqa: E402
from tapeout.stack import load_stack  # noqa: E402
from tapeout.validate import load_rows, predict_row  # noqa: E402

CAL = ROOT / "src/tapeout/data/calibration"


def rows() -> list[dict]:
    pa053 = next(r for r in load_rows(CAL / "published.json")[1] if r["id"] == "PA-053")
    ci = [r for r in load_rows(CAL / "gaudi2-optimum-habana-ci.json")[1] if r["model"] == "llama-2-70b"]
    return [pa053] + ci


def show(title: str, rs: list[dict]) -> None:
    print(f"\n{title}\n{'row':7s} {'cards':>5s} {'batch':>6s} {'workload':>15s} {'published':>10s} {'ms/step':>8s} "
          f"{'predicted':>10s} {'TPOT ms':>8s} {'ratio':>6s} {'GiB/card':>8s}")
    for r in rs:
        p = predict_row(r)
        print(f"{r['id']:7s} {r['chips']:5d} {r['batch']:6d} {r['workload']:>15s} {r['published']:10.0f} "
              f"{r['batch'] / r['published'] * 1e3:8.1f} {p['predicted']:10.0f} {p['details']['tpot_ms']:8.1f} "
              f"{p['ratio']:6.2f} {p['details']['memory_gib_per_chip']:8.1f}")


def buckets() -> None:
    s = load_stack("gaudi-synapse")
    static = dataclasses.replace(s, name="compiled-length", kernels=tuple(k for k in s.kernels if k != "dynamic_shapes"))
    rs = [r for r in load_rows(CAL / "published.json")[1] + load_rows(CAL / "gaudi2-optimum-habana-ci.json")[1]
          if r["chip"] == "gaudi2" and r.get("chips") == 1 and r.get("workload") == "fixed:128:2048"
          and (r["id"].startswith("PA") or r["model"] == "mistral-7b")]
    print(f"decode over the filled buckets (shipped) or the compiled length (same efficiencies)\n"
          f"{'row':7s} {'model':13s} {'batch':>6s} {'published':>10s} {'bucketed':>9s} {'ratio':>6s} {'compiled':>9s} {'ratio':>6s}")
    for r in rs:
        # the CI rows name gaudi-synapse-1.18, whose dense-MoE mode does not touch these dense models
        r = {k: v for k, v in r.items() if k != "stack"}
        a, b = predict_row(r, stack=s), predict_row(r, stack=static)
        print(f"{r['id']:7s} {r['model']:13s} {r['batch']:6d} {r['published']:10.0f} {a['predicted']:9.0f} {a['ratio']:6.2f} "
              f"{b['predicted']:9.0f} {b['ratio']:6.2f}")


def one_port_group(B, d, n):
    """The fully-connected fabric with rings over one peer's ports only (what-if)."""
    ring, pair, a2a, diameter, steps = P._fully_connected(B, d, n)
    return (pair if n > 2 else ring), pair, a2a, diameter, steps


def main() -> None:
    buckets()
    rs = rows()
    show("shipped gaudi-synapse stack (ms/step: batch / published tok/s, prefill included)", rs)
    saved = P.TOPOLOGIES["fully-connected"]
    P.TOPOLOGIES["fully-connected"] = one_port_group
    V.clear_memo()
    try:
        show("what-if: rings of 3 or more cards over one peer's 3 ports (a third of the 4-card bandwidth)",
             [r for r in rs if r["chips"] == 4])
    finally:
        P.TOPOLOGIES["fully-connected"] = saved
        V.clear_memo()
    pa052 = next(r for r in load_rows(CAL / "published.json")[1] if r["id"] == "PA-052")
    show("what-if: PA-053's batch on 2 cards (TP2), next to PA-052 (the table's 2-card 128 + 128 row)",
         [dict(rs[0], id="PA-053*", chips=2, tp=2), pa052])


if __name__ == "__main__":
    main()
