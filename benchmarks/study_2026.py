"""What the 2026 workloads change in the flagship study (docs/study.md, "What the 2026 workloads change").

    python benchmarks/study_2026.py                     # ~1 min on 2 cores: the tables of docs/study.md
    python benchmarks/study_2026.py --picks out/study-inference-7nm/sweep/results.jsonl   # a study run's picks
                                                        # (or its designs/ folder) instead of the table below

Analytic tokens/s per chip (`tapeout.dse.objective.analytic`, the objective the study's sweep ranks
with: steady-state chunked-prefill batching, mean TPOT) at the study's SLOs and layouts
(src/tapeout/data/studies/inference-7nm.toml), for the study's picked designs, tapeout-n7 as specified,
the incumbents (H100, H20, Ascend 910C) and the B200 (the FP4 reference, not an incumbent), each as
deployed (its vendor's stack; the designs on `cann`, the study's assumption) and with the `ideal` stack:

1. DeepSeek-V3 chat, without and with multi-token prediction (`mtp:1`, the sourced 87.5 % acceptance);
2. DeepSeek-V3 reasoning (MLPerf DeepSeek-R1 SLO), without and with `mtp:1`;
3. Qwen2.5-72B chat with the study's 8-bit weights (fp8, else int8) and with fp4 weights (W4A4 where
   the chip has fp4 MACs and its stack runs them, weight-only with bf16 GEMMs elsewhere), with the same
   KV-cache dtype as the 8-bit run so that only the weights change;
4. Qwen2.5-72B on `long-context` traffic (RULER-style 76k-token prompts, 128-token answers) without KV
   offload and with the host and pool tiers, at the study's TPOT SLO and a 30 s TTFT (our choice: the
   study's 2 s is out of reach of a 76k-token prefill on every chip but the B200; the 2 s column shows it);
5. DeepSeek-V3 reasoning without KV offload and with the host and pool tiers (where KV capacity binds).

The designs are built from their knob values by the sweep's own builder (`tapeout.dse.design.point_chip`
and `physicals`, on tapeout-n7 with the study's design stack), not read from out/.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tapeout.chip import load_chip  # noqa: E402
from tapeout.dse.design import Infeasible, physicals, point_chip  # noqa: E402
from tapeout.dse.objective import analytic  # noqa: E402
from tapeout.dse.space import load_space  # noqa: E402
from tapeout.dse.study import DEPLOYED, with_stack  # noqa: E402
from tapeout.perf.api import dtypes_for  # noqa: E402
from tapeout.perf.stack import stack_for  # noqa: E402

STUDY = "inference-7nm"
# The study's picks (`tapeout study inference-7nm`: tapeout.dse.study.pick_designs on its 3,600-point sweep,
# as docs/study.md quotes them), as knob values of its space: 128x128 arrays with 8 HBM2e stacks and 7 links
# of 100 GB/s; the value pick is also the balanced one (the knee). `--picks` takes them from a study run.
SHARED = {"array": "128x128", "dram": "HBM2e", "dram_stacks": 8, "links": 7, "link_bytes_per_s": 100e9}
PICKS = {
    "tapeout-n7-throughput": {**SHARED, "cores": 32, "clock_hz": 1.6e9, "tdp_w": 400},
    "tapeout-n7-efficiency": {**SHARED, "cores": 16, "clock_hz": 1.0e9, "tdp_w": 300},
    "tapeout-n7-value": {**SHARED, "cores": 32, "clock_hz": 1.6e9, "tdp_w": 300},      # also "balanced"
}
INCUMBENTS = ("h100-sxm", "h20", "ascend-910c")
FP4_REFERENCE = "b200"          # Blackwell: fp4 MACs (not an incumbent of the study: not sold in China)
VIEWS = (DEPLOYED, "ideal")
LONG_TTFT_S = 30.0              # long-context TTFT SLO (our choice; the study's 2 s is shown beside it)


def picks_from(path: Path) -> dict[str, dict]:
    """{design name: knob values} of a study run: its sweep's results.jsonl (picked again with the study's
    own `pick_designs`), or its designs/ folder (each chip file's source note lists the knobs)."""
    if path.is_file():
        from tapeout.dse.pareto import pareto_front
        from tapeout.dse.study import pick_designs
        from tapeout.dse.sweep import SweepResult, read_records

        space = load_space(STUDY)
        recs = list(read_records(path).values())
        res = SweepResult(space, recs, pareto_front(recs, space.objectives), 0, len(recs), 0.0, path.parent)
        out = {e.name: e.params for e in pick_designs(space, res, int(space.study.get("picks", 4)))}
    else:
        out = {}
        for f in sorted(path.glob("*.toml")):
            m = re.search(r"with (.*?); area", f.read_text())
            if not m:
                raise SystemExit(f"{f}: no knob values in its source note")
            out[f.stem] = {k: _value(v) for k, _, v in (kv.partition("=") for kv in m.group(1).split(", "))}
    if not out:
        raise SystemExit(f"{path}: no picked designs (give a study's sweep/results.jsonl or designs/ folder)")
    return out


def _value(v: str):
    try:
        return int(v) if v.isdigit() else float(v)
    except ValueError:
        return v


def chips(picks: dict[str, dict]) -> list[tuple[str, object]]:
    """(name, chip) of every chip compared: the picks built from their knobs, the reference, the incumbents."""
    space = load_space(STUDY)
    base = with_stack(space.base, space.study.get("design_stack"))
    out = [(n, physicals(point_chip(base, p, n), base, space.constraints)[0]) for n, p in picks.items()]
    out.append((f"{base.name} (reference)", base))
    out += [(n, load_chip(n)) for n in (*INCUMBENTS, FP4_REFERENCE)]
    return out


def same_kv_fp4(wl, chip, stack):
    """fp4 weights with the KV-cache dtype the study's 8-bit run of this chip and stack uses."""
    st = stack_for(chip, stack)
    return dataclasses.replace(wl, weights=("fp4",), kv=dtypes_for(wl.dtype_for(chip, st), None, None, chip, st).kv)


def scenarios(wls: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    """(title, [(variant label, workload or fn(chip, stack) -> workload)]): the first variant is the baseline."""
    r = dataclasses.replace
    dsv3, reason, qwen = wls["deepseek-v3"], wls["deepseek-v3-reasoning"], wls["qwen2.5-72b"]
    long = r(qwen, traffic="long-context", label="qwen2.5-72b-long", slo_ttft_s=LONG_TTFT_S)
    return [
        ("DeepSeek-V3 chat: speculative decoding (MTP)", [("plain", dsv3), ("mtp:1", r(dsv3, speculative="mtp:1"))]),
        ("DeepSeek-V3 reasoning: speculative decoding (MTP)", [("plain", reason), ("mtp:1", r(reason, speculative="mtp:1"))]),
        ("Qwen2.5-72B chat: FP4 weights", [("fp8/int8", qwen), ("fp4", lambda c, s: same_kv_fp4(qwen, c, s))]),
        (f"Qwen2.5-72B long-context (TTFT {LONG_TTFT_S:.0f} s): KV offload",
         [("none", long), ("host", r(long, kv_offload="host")), ("pool", r(long, kv_offload="pool")),
          ("none, TTFT 2 s", r(long, slo_ttft_s=qwen.slo_ttft_s))]),
        ("DeepSeek-V3 reasoning: KV offload", [("none", reason), ("host", r(reason, kv_offload="host")),
                                                ("pool", r(reason, kv_offload="pool"))]),
    ]


def why(reason: str) -> str:
    """A short tag for an infeasible evaluation (the full reasons with --detail)."""
    return "SLO" if "SLO missed" in reason else "KV" if "KV cache holds" in reason \
        else "mem" if "no room" in reason else "x"


def evaluate(chip, wl, stack: str | None):
    try:
        return analytic(chip, wl, stack), None
    except Infeasible as e:
        return None, str(e)


def run(picks: dict[str, dict], detail: bool) -> None:
    t0 = time.perf_counter()
    wls = {w.name: w for w in load_space(STUDY).workloads}
    entries = chips(picks)
    for title, variants in scenarios(wls):
        labels = [v for v, _ in variants]
        print(f"\n### {title}\n")
        head = [f"{lab} ({'deployed' if view == DEPLOYED else view})" for view in VIEWS for lab in labels]
        print("| chip | " + " | ".join(head) + " |")
        print("|---" * (len(head) + 1) + "|")
        best: dict = {}
        for name, chip in entries:
            cells = []
            for view in VIEWS:
                stack = None if view == DEPLOYED else view
                base = None
                for i, (lab, wl) in enumerate(variants):
                    w = wl(chip, stack) if callable(wl) else wl
                    s, err = evaluate(chip, w, stack)
                    if s is None:
                        cells.append(f"— ({why(err)})")
                        if detail:
                            print(f"    {name} {view} {lab}: {err}")
                    else:
                        v = s.tok_s_per_chip
                        if i == 0:
                            base = v
                        num = f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
                        cells.append(num if i == 0 or not base else f"{num} ({v / base:.2f}x)")
                        if detail:
                            print(f"    {name} {view} {lab}: {v:.1f} tok/s/chip, batch {s.batch:.0f}, tp {s.tp} ep {s.ep}, "
                                  f"TPOT {s.tpot_s * 1e3:.1f} ms, TTFT {s.ttft_s:.2f} s, {s.weights}, {s.extra}")
                        key = (view, lab)
                        kind = "design" if name in picks else name
                        if kind == "design" and v > best.get((key, "design"), (0, ""))[0]:
                            best[(key, "design")] = (v, name)
                        best[(key, kind)] = (v, name) if kind != "design" else best[(key, "design")]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
        for view in VIEWS:
            for lab in labels:
                d = best.get(((view, lab), "design"))
                if d is None:
                    print(f"* {view}, {lab}: no design meets the SLO")
                    continue
                vs = ", ".join(f"{d[0] / best[((view, lab), n)][0]:.2f}x the {n}" for n in ("h100-sxm", "ascend-910c")
                               if ((view, lab), n) in best)
                print(f"* {view}, {lab}: best design {d[1]} ({d[0]:,.0f} tokens/s per chip): {vs or 'no incumbent meets the SLO'}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--picks", type=Path, help="a study run's sweep/results.jsonl or designs/ folder "
                    "(default: the knob table above)")
    ap.add_argument("--detail", action="store_true", help="print each evaluation's operating point and reasons")
    a = ap.parse_args(argv)
    run(picks_from(a.picks) if a.picks else PICKS, a.detail)


if __name__ == "__main__":
    main()
