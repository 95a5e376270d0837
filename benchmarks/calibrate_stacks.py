"""Fit each vendor's software stack on its published results, and check how the fit transfers.

    python benchmarks/calibrate_stacks.py                 # fit, write data/stacks/*.toml, print the tables
    python benchmarks/calibrate_stacks.py --dry-run       # fit and print, write nothing
    python benchmarks/calibrate_stacks.py --report        # no fit: the shipped stacks, in-sample and leave-one-chip-out

A stack is a few parameters with a physical meaning (tapeout/stack.py): the achieved fraction of
matrix peak inside a GEMM tile (`mma_efficiency`) and an attention tile (`attention_mma_efficiency`), of DRAM bandwidth when
streaming weights, activations and the KV cache (`dram_efficiency`, the tiled and KV variants tied
to it), of the link model's collective bandwidth (`comm_efficiency`), the fixed software cost of a collective (`comm_latency_s`) and the host time per engine step
(`step_overhead_s`). Each is fitted on the published rows of the chips that run the stack
(src/tapeout/data/calibration/published.json, predicted by `tapeout validate`'s engine), minimizing
the squared log ratio predicted/published with a soft-L1 loss and a weak prior towards the ideal
stack (so a parameter the rows say nothing about stays at the silicon's value).

Not fitted on: the held-out chips (their published results judge the stacks fitted on their
siblings) and the Hanguang 800, whose ResNet-50 result the simulated NPU predicts with no fitted
parameter. Leave-one-chip-out: each chip's rows predicted by its stack fitted on the other chips
that run it, or, where it is the stack's only chip, by one stack pooled over every other vendor's analytical (static, decode, prefill) rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import tapeout.validate as V  # noqa: E402
from tapeout.stack import load_stack  # noqa: E402
from tapeout.validate import predict_row, summarize  # noqa: E402

PUBLISHED = ROOT / "src/tapeout/data/calibration/published.json"
STACKS = ROOT / "src/tapeout/data/stacks"
HELD_OUT = ("mi325x", "gaudi3", "trainium2", "ascend-910b")   # their results judge the fit: never fitted on
NOT_FITTED = ("hanguang-800",)                               # predicted from the simulated chip alone
MARK = "# ---- fitted by benchmarks/calibrate_stacks.py: do not edit by hand, rerun the script"

# free parameter: (lower, upper, transform); a transform makes the search space unbounded and even
FREE = {
    "mma_efficiency": (0.15, 1.0),
    "attention_mma_efficiency": (0.1, 1.0),
    "dram_efficiency": (0.3, 0.98),
    "comm_efficiency": (0.05, 1.0),
    "comm_latency_s": (0.0, 400e-6),
    "step_overhead_s": (0.0, 40e-3),
    "comm_message_s": (0.0, 10e-6),
}
TIED = {"tiled_dram_efficiency": ("dram_efficiency", 0.85 / 0.9),
        "kv_dram_efficiency": ("dram_efficiency", 1.0)}
IDEAL = {"mma_efficiency": 0.9, "attention_mma_efficiency": 0.75, "dram_efficiency": 0.9, "comm_efficiency": 1.0, "comm_latency_s": 0.0,
         "step_overhead_s": 0.0, "comm_message_s": 0.0}
TIME_SCALE = {"comm_latency_s": 20e-6, "step_overhead_s": 1e-3, "comm_message_s": 1e-6}   # prior width of the times
PRIOR = 0.05      # weight of the prior residuals against one row's log ratio
NFEV = 15         # least-squares iterations where rows are simulated (each: every row predicted 4 times)
GENERATIONS = 15  # differential-evolution generations where every row is analytical


def overrides(values: dict) -> dict:
    out = dict(values)
    for k, (src, ratio) in TIED.items():
        out[k] = min(1.0, values[src] * ratio)
    return out


def with_values(stack, values: dict):
    return dataclasses.replace(stack, name=f"{stack.name}*", overrides={**stack.overrides, **overrides(values)})


def log_ratios(rows, stack, values) -> np.ndarray:
    s = with_values(stack, values)
    out = []
    for r in rows:
        p = predict_row(r, stack=s)["predicted"]
        out.append(math.log(max(p, 1e-9) / r["published"]) if p else math.log(1e-3))
    return np.array(out)


def _x(values):
    return np.array([values[k] for k in FREE])


FIT_WAVES, FIT_MIN_REQUESTS = 3, 1000   # offline run size inside a fit (validate's: 8 waves, >= 2,000 requests)


class fast_sims:
    """During a fit, offline rows simulate fewer requests and server rows (a bisection of many
    simulations each) are left out of the objective; every figure printed afterwards uses validate's
    full sizes and every row. Three waves of max_seqs requests per replica stay within ~3 % of the full
    run on the MLPerf rows; one wave does not (ramp-up and drain dominate it: -20 % on MI300X with
    MLPerf's ~220-token prompts)."""
    def __enter__(self):
        self.saved = V.OFFLINE_WAVES, V.OFFLINE_MIN_REQUESTS
        V.OFFLINE_WAVES, V.OFFLINE_MIN_REQUESTS = FIT_WAVES, FIT_MIN_REQUESTS

    def __exit__(self, *exc):
        V.OFFLINE_WAVES, V.OFFLINE_MIN_REQUESTS = self.saved
        V.clear_memo()


CHEAP = ("static", "latency", "decode", "prefill")   # analytical scenarios: milliseconds a row


def fit(rows, stack, start: dict | None = None) -> dict:
    """The stack's free parameters minimizing mean |log(predicted/published)| plus a weak prior towards
    IDEAL: a global search (differential evolution) where every row is analytical, else least squares
    (soft-L1) on four of them with fewer simulated requests (fast_sims)."""
    with fast_sims():
        rows = [r for r in rows if r["scenario"] != "server"]
        if all(r["scenario"] in CHEAP for r in rows):
            return _global(rows, stack)
        return _local(rows, stack, start, SIMULATED_FREE_BY_STACK.get(stack.name, SIMULATED_FREE))


def _bounds():
    return np.array([b[0] for b in FREE.values()]), np.array([b[1] for b in FREE.values()])


def _prior(x) -> np.ndarray:
    scale = np.array([TIME_SCALE.get(k, 0.1) for k in FREE])
    return PRIOR * (x - _x(IDEAL)) / scale


def _global(rows, stack) -> dict:
    from scipy.optimize import differential_evolution

    def objective(x):
        return float(np.mean(np.abs(log_ratios(rows, stack, dict(zip(FREE, x)))))) + float(np.mean(np.abs(_prior(x))))
    lo, hi = _bounds()
    de = differential_evolution(objective, list(zip(lo, hi)), maxiter=GENERATIONS, popsize=10, seed=0,
                                polish=False, init="sobol", tol=1e-6)
    return dict(zip(FREE, de.x))


SIMULATED_FREE = ("mma_efficiency", "dram_efficiency", "comm_latency_s", "step_overhead_s")
# ROCm's rows split cleanly: the TP1 MLPerf replicas run no collective and pin the matrix, DRAM and host terms;
# the TP8 static 405B batches (a step that grows linearly with the batch from batch 1, where the GEMMs are
# still weight-bound: the all-reduce payload, batch x hidden, is what grows) pin the collective bandwidth and
# latency, so both are free here
SIMULATED_FREE_BY_STACK = {"rocm-vllm": ("mma_efficiency", "dram_efficiency", "comm_efficiency", "comm_latency_s",
                                         "step_overhead_s")}


def _local(rows, stack, start: dict | None, free=SIMULATED_FREE) -> dict:
    """Least squares on `free`, the rest at `start` or the prior. Where rows are simulated, on the four
    parameters such rows constrain best (matrix and DRAM efficiency, collective latency, host time per
    step): the attention and collective-bandwidth terms stay at the prior (a simulated row costs
    seconds; a search over all six would take hours)."""
    from scipy.optimize import least_squares

    fixed = {**IDEAL, **(start or {})}
    lo = np.array([FREE[k][0] for k in free])
    hi = np.array([FREE[k][1] for k in free])
    scale = np.array([TIME_SCALE.get(k, 0.1) for k in free])

    def values(x):
        return {**fixed, **dict(zip(free, x))}

    def resid(x):
        return np.concatenate([log_ratios(rows, stack, values(x)), _prior(_x(values(x)))])
    guess = {"mma_efficiency": 0.7, "attention_mma_efficiency": 0.6, "dram_efficiency": 0.8, "comm_efficiency": 0.7,
             "comm_latency_s": 20e-6, "step_overhead_s": 1e-3, "comm_message_s": 0.5e-6}
    starts = [guess] + ([{**guess, "comm_efficiency": COMM_LOW_START}] if "comm_efficiency" in free else [])
    best = None
    for g in starts:     # the collective bandwidth has two basins (links near peak, or a library far below it)
        x0 = np.clip(np.array([g[k] for k in free]), lo + 1e-9, hi - 1e-9)
        r = least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, x_scale=scale, diff_step=0.1,
                          max_nfev=NFEV)
        best = r if best is None or r.cost < best.cost else best
    return values(best.x)


COMM_LOW_START = 0.25   # a second start for comm_efficiency: a collective library at a quarter of the links


def rows_by_stack(rows) -> dict[str, list]:
    """Fittable rows grouped by the stack their chip deploys (a row's own `stack` field wins)."""
    from tapeout.stack import stack_for

    out: dict[str, list] = {}
    for r in rows:
        if r["chip"] in HELD_OUT or r["chip"] in NOT_FITTED:
            continue
        try:
            name = r.get("stack") or stack_for(r["chip"]).name
        except Exception:  # noqa: BLE001 - a chip this tapeout does not know: validate reports it
            continue
        if name not in ("nvidia-trtllm", "ideal"):      # NVIDIA's stack is fitted on measurements, not here
            out.setdefault(name, []).append(r)
    return out


def write_stack(name: str, values: dict, rows: list, result: str) -> None:
    """Replace the fitted block of data/stacks/<name>.toml (everything after MARK) with `values`."""
    path = STACKS / f"{name}.toml"
    text = path.read_text().split(MARK)[0].rstrip() + "\n\n" + MARK + "\n"
    ids = ", ".join(r["id"] for r in rows)
    when = datetime.date.today().isoformat()
    for k, v in overrides(values).items():
        how = (f"tied to {TIED[k][0]} x {TIED[k][1]:.3f}" if k in TIED else
               f"fitted on {len(rows)} published rows ({ids}); {result}")
        text += (f"[params.{k}]\nvalue = {v:.6g}\nref = \"benchmarks/calibrate_stacks.py\"\nconfidence = \"fitted\"\n"
                 f"note = \"{how}; {when}\"\n")
    path.write_text(text)


def _line(s: dict) -> str:
    return f"{s['n']:3d} {s['geomean']:8.2f} {s['mape_pct']:7.1f}%"


def leave_one_chip_out(groups: dict, fitted: dict) -> dict[str, list]:
    """Each chip's rows predicted by its stack fitted without them (or pooled over the other vendors)."""
    out = {}
    chips = sorted({r["chip"] for rows in groups.values() for r in rows})
    for chip in chips:
        name = next(n for n, rows in groups.items() if any(r["chip"] == chip for r in rows))
        mine = [r for r in groups[name] if r["chip"] == chip]
        siblings = [r for r in groups[name] if r["chip"] != chip]
        train = siblings or [r for n, rows in groups.items() for r in rows if r["chip"] != chip and r["scenario"] in CHEAP]
        stack = load_stack(name)
        with fast_sims():   # the pooled stack: a local fit of all six (its rows are analytical)
            values = fit(train, stack) if siblings else _local(train, stack, None, tuple(FREE))
        out[chip] = [predict_row(r, stack=with_values(stack, values)) for r in mine]
        out[chip + "_how"] = "siblings" if siblings else "pooled"
    return out


def print_rows(rows, groups, fitted) -> None:
    """Every published row with the shipped (or just fitted) stack: the held-out chips' and the
    Hanguang's too, which no fit saw."""
    print(f"\n{'row':7s} {'chip':12s} {'scenario':9s} {'model':15s} {'published':>10s} {'predicted':>10s} {'ratio':>6s}  used in fit")
    fitted_ids = {r["id"] for rs in groups.values() for r in rs}
    for r in rows:
        stack = next((load_stack(n) for n, rs in groups.items() if r in rs), None)
        p = predict_row(r, stack=with_values(stack, fitted[stack.name]) if stack else None)
        pred = f"{p['predicted']:10.4g}" if p["predicted"] else f"{'-':>10s}"
        ratio = f"{p['ratio']:6.2f}" if p.get("ratio") else "     -"
        why = "yes" if r["id"] in fitted_ids else ("held out" if r["chip"] in HELD_OUT else
                                                     "no (predicted from the simulated chip)" if r["chip"] in NOT_FITTED else "no")
        print(f"{r['id']:7s} {r['chip']:12s} {r['scenario']:9s} {r['model']:15s} {r['published']:10.4g} {pred} {ratio}  "
              f"{why}{'' if p['predicted'] else ': ' + str(p.get('reason'))[:80]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="fit and print; write nothing")
    ap.add_argument("--report", action="store_true", help="no fit: print the shipped stacks' figures")
    ap.add_argument("--stacks", default="", help="comma-separated stacks to fit (default: all with rows)")
    ap.add_argument("--no-loco", action="store_true", help="skip the leave-one-chip-out refits")
    ap.add_argument("--rows", action="store_true", help="also list every published row's prediction")
    a = ap.parse_args(argv)
    rows = json.loads(PUBLISHED.read_text())["results"]
    groups = rows_by_stack(rows)
    if a.stacks:
        groups = {k: v for k, v in groups.items() if k in a.stacks.split(",")}
    t0 = time.perf_counter()
    fitted = {}
    for name, rs in groups.items():
        stack = load_stack(name)
        if a.report:
            fitted[name] = {k: stack.overrides.get(k, IDEAL[k]) for k in FREE}
            continue
        fitted[name] = fit(rs, stack)
        res = summarize([predict_row(r, stack=with_values(stack, fitted[name])) for r in rs])["all"]
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in fitted[name].items())
              + f"  ({res['n']} rows, geomean {res['geomean']:.2f}, MAPE {res['mape_pct']:.1f}%)", flush=True)
        if not a.dry_run:
            write_stack(name, fitted[name], rs, f"in-sample geomean {res['geomean']:.2f}, MAPE {res['mape_pct']:.1f}%")
    loco = {} if a.no_loco else leave_one_chip_out(groups, fitted)
    print(f"\nchip           stack             in-sample: n  geomean    MAPE   leave-one-chip-out: geomean    MAPE  "
          f"(fitted on)")
    for name, rs in groups.items():
        stack = load_stack(name)
        for chip in sorted({r["chip"] for r in rs}):
            ins = summarize([predict_row(r, stack=with_values(stack, fitted[name])) for r in rs if r["chip"] == chip])["all"]
            lo = summarize(loco[chip])["all"] if chip in loco else None
            lo_txt = f"{lo['geomean']:8.2f} {lo['mape_pct']:7.1f}%  ({loco[chip + '_how']})" if lo else "-"
            print(f"{chip:14s} {name:16s} {_line(ins)}   {lo_txt}")
    if a.rows:
        print_rows(rows, groups, fitted)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
