"""Serving predictions against published results (docs/validation.md): MLPerf Inference v4.1
Llama-2-70B (8x H100 / 8x H200, Offline and Server) and Huawei CloudMatrix384 DeepSeek-R1.

    .venv/bin/python benchmarks/validation.py              # every row (~2-4 min on 2 cores)
    .venv/bin/python benchmarks/validation.py --quick      # fewer requests per run (~40 s)
    .venv/bin/python benchmarks/validation.py --rows h100-offline,cm-decode --explain
    .venv/bin/python benchmarks/validation.py --at-max-clock   # what-if: no power cap on the clock
    .venv/bin/python benchmarks/validation.py --mac-energy-scale 0.7   # what-if: 30 % less energy per MAC
    .venv/bin/python benchmarks/validation.py --rows h100-offline,h200-offline --siblings  # + the same round's
                                                           # results at 500 / 1,000 W and on a 4-GPU board
    .venv/bin/python benchmarks/validation.py --collectives-at-cap   # what-if: all-reduces lend no clock
    .venv/bin/python benchmarks/validation.py --alpha 2.5 --siblings  # what-if: a steeper V-f curve, refitted
    .venv/bin/python benchmarks/validation.py --published  # other vendors' published results: every chip
                                                           # in-sample and leave-one-chip-out, every row (~5 min)

Published figures and the setups behind them: src/tapeout/data/serve/validation.toml.
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np


def _v():
    from tapeout.serve.data import table

    return table("validation")


def mlperf_kw(gpu: str, scenario: str) -> dict:
    v = _v()["mlperf"]
    cfg = v[gpu]
    chip = {"h100": "h100-sxm", "h200": "h200-sxm"}[gpu]
    seqs = int(cfg[f"max_seqs_{scenario}"])
    return dict(model="llama-2-70b", chip=chip, chips=8, tp=int(cfg["tp"]), weights="fp8", kv="fp8", impl="fused",
                workload="mlperf-llama2", scheduler="chunked", max_seqs=seqs, seed=0, engine="trtllm",
                max_batched_tokens=int(v["max_batched_tokens"]), memory_utilization=v["kv_memory_fraction"],
                slo_ttft=v["slo"]["ttft_s"], slo_tpot=v["slo"]["tpot_s"])


def mlperf_offline(gpu: str, quick: bool, requests=None, sibling: str | None = None) -> dict:
    """MLPerf Offline issues one query of all its samples at once (the 24,576-sample set looped) and
    reports tokens / total time: here as many requests as NVIDIA's run issued (its samples_per_query),
    one pass over the set with --quick. `sibling`: a same-round result with one thing changed
    (validation.toml mlperf.siblings: the power limit, or a 4-GPU board's NVLink wiring)."""
    from tapeout.serve.api import serve

    kw = mlperf_kw(gpu, "offline")
    v = _v()["mlperf"]
    n = int(v["samples"]) if quick else int(v[gpu]["offline_samples"])
    published = v[f"{gpu}-offline"]["tokens_per_s"]
    if sibling:
        s = v["siblings"][sibling]
        chip, tp, seqs = offline_setup(f"sibling-{sibling}")
        kw.update(chip=chip, chips=int(s["chips"]), tp=tp, max_seqs=seqs)
        n = int(v["samples"]) if quick else int(s["offline_samples"])
        published = s["tokens_per_s"]
    r = serve(kw.pop("model"), kw.pop("chip"), requests=requests or n, offline=True, record_steps=False, **kw)
    m = r.metrics
    # Little's law on the published row: with every replica's batch full, a step takes max_seqs sequences
    # over the replica's published tokens/s (compare with the simulated TPOT p50)
    published_step = kw["max_seqs"] * (kw["chips"] // kw["tp"]) / published
    return {"predicted": m["throughput_tok_s"], "steady_tok_s": m["steady_tok_s"], "requests": m["requests"],
            "simulated_s": m["makespan_s"],
            "tpot_p50_ms": m["tpot_s"]["p50"] * 1e3, "published_step_ms": published_step * 1e3,
            "preemptions": m["preemptions"], "kv_tokens_per_replica": r.memory["all"]["kv_tokens"]}


def mlperf_server(gpu: str, quick: bool) -> dict:
    from tapeout.serve.api import max_rate

    kw = mlperf_kw(gpu, "server")
    rate, r = max_rate(kw.pop("model"), kw.pop("chip"), requests=8000 if quick else 30000, percentile=99,
                       iterations=4 if quick else 6, **kw)
    m = r.metrics
    return {"predicted": m["steady_tok_s"], "max_rate_req_s": rate, "ttft_p99_ms": m["ttft_s"]["p99"] * 1e3,
            "ttft_mean_ms": m["ttft_s"]["mean"] * 1e3, "tpot_p99_ms": m["tpot_s"]["p99"] * 1e3,
            "tpot_mean_ms": m["tpot_s"]["mean"] * 1e3, "e2e_mean_s": m["e2e_s"]["mean"]}


def prompt_sensitivity(gpu: str) -> dict:
    """Offline prediction (one pass over 24,576 samples) with the MLPerf set's mean input length
    (222.33 tokens, benchmarks/workload_lengths.py) and with 300 and 400 tokens (400: the guess this
    repository used before the per-sample lengths were found)."""
    from tapeout.serve.data import table
    from tapeout.serve.workload import Request, _clipped_lognormal

    w = table("workloads")["mlperf-llama2"]
    out = {}
    for mean in (w["prompt_mean"], 300, 400):
        rng = np.random.default_rng(0)
        n = int(_v()["mlperf"]["samples"])
        p = _clipped_lognormal(rng, n, mean, w["prompt_cv"], w["prompt_min"], w["prompt_max"])
        o = _clipped_lognormal(rng, n, w["output_mean"], w["output_cv"], w["output_min"], w["output_max"])
        reqs = [Request(i, 0.0, int(p[i]), int(o[i])) for i in range(n)]
        out[mean] = mlperf_offline(gpu, True, requests=reqs)["predicted"]
    return out


def cm_prefill(quick: bool) -> dict:
    """A prefill pool saturated with 4K-token prompts (output 1: prefill only), tokens/s per NPU."""
    from tapeout.serve.api import serve

    v = _v()["cloudmatrix"]
    n_npu, prompt = int(v["prefill_npus"]), int(v["prompt_tokens"])
    r = serve("deepseek-r1", "ascend-910c", chips=n_npu, ep=n_npu, weights="int8", kv="int8", requests=400 if quick else 1600,
              offline=True, workload=f"fixed:{prompt}:1", scheduler="continuous", max_batched_tokens=prompt * n_npu,
              record_steps=False)
    m = r.metrics
    return {"predicted": m["input_tokens"] / m["makespan_s"] / n_npu, "ttft_p50_s": m["ttft_s"]["p50"]}


def cm_decode() -> dict:
    """Decode step at the paper's operating point (96 sequences per NPU, 4K context, EP over 160 NPUs),
    and the largest batch per NPU whose step stays under the TPOT bound."""
    from tapeout.serve.steptime import Parallel, StepTimer

    v = _v()["cloudmatrix"]
    npus, ctx, tpot = int(v["decode_npus"]), int(v["prompt_tokens"]), v["decode_tpot_s"]
    t = StepTimer("deepseek-r1", "ascend-910c", Parallel(ep=npus), weights="int8", kv="int8")
    b = int(v["decode_batch_per_npu"])
    sec, _ = t.step((0, 0, 0), b * npus, b * npus * ctx)

    def best(bound):            # largest per-NPU batch with step time < bound, and its tokens/s
        lo, hi = 0, 4096
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if t.step((0, 0, 0), mid * npus, mid * npus * ctx)[0] < bound else (lo, mid)
        return lo, (lo / t.step((0, 0, 0), lo * npus, lo * npus * ctx)[0] if lo else 0.0)

    b50, tok50 = best(tpot)
    b15, tok15 = best(v["decode_tpot_strict_s"])
    return {"predicted": b / sec, "tpot_ms_at_paper_batch": sec * 1e3, "max_batch_under_tpot": b50,
            "tokens_per_s_at_max_batch": tok50, "max_batch_under_15ms": b15, "tokens_per_s_under_15ms": tok15,
            "published_under_15ms": v["decode_tokens_per_s_per_npu_strict"]}


def explain() -> dict:
    """Where the time goes in the steps that dominate each row (per-kernel breakdown from run_batch)."""
    from tapeout.llm.kernels import Batch
    from tapeout.perf.api import run_batch

    cases = {
        # MLPerf shapes: mean prompt 222 tokens, a decode's mean context 222 + 294 / 2 = ~370
        "h100 tp2 decode 896x370": ("llama-2-70b", "h100-sxm", Batch(decode=(370,) * 896), dict(tp=2, weights="fp8", kv="fp8")),
        "h100 tp2 prefill 18x222": ("llama-2-70b", "h100-sxm", Batch(prefill=((222, 0),) * 18), dict(tp=2, weights="fp8", kv="fp8")),
        "h200 tp1 decode 806x370": ("llama-2-70b", "h200-sxm", Batch(decode=(370,) * 806), dict(weights="fp8", kv="fp8")),
        "h200 tp1 prefill 18x222": ("llama-2-70b", "h200-sxm", Batch(prefill=((222, 0),) * 18), dict(weights="fp8", kv="fp8")),
        "910c decode 96x4096 ep160": ("deepseek-r1", "ascend-910c", Batch(decode=(4096,) * 96), dict(ep=160, weights="int8", kv="int8")),
        "910c prefill 4096 ep16": ("deepseek-r1", "ascend-910c", Batch(prefill=((4096, 0),)), dict(ep=16, weights="int8", kv="int8")),
    }
    from tapeout import load_chip

    out = {}
    for name, (model, chip, batch, kw) in cases.items():
        st = run_batch(model, chip, batch, **kw)
        at_max = run_batch(model, chip, batch, clock_hz=load_chip(chip).max_clock_hz, **kw).seconds  # no power cap
        out[name] = {"ms": st.seconds * 1e3, "clock_ghz": st.clock_hz / 1e9, "ms_at_max_clock": at_max * 1e3,
                     "by_kind_ms": {k: round(v * 1e3, 2) for k, v in st.by_kind().items()},
                     "by_bound_ms": {k: round(v * 1e3, 2) for k, v in st.by_bound().items()}}
    return out


def use_max_clock() -> None:
    """What-if: time every step at the chip's max clock instead of the power-capped clock the
    performance model solves for (swaps the seam's run_batch; the serving layer is unchanged)."""
    import tapeout.perf.api as api
    from tapeout import load_chip

    run = api.run_batch

    def run_batch(model, chip, batch, **kw):
        return run(model, chip, batch, **{**kw, "clock_hz": load_chip(chip).max_clock_hz})

    api.run_batch = run_batch


def offline_setup(key: str) -> tuple:
    """(chip as the system installs it, tp, max_seqs) of an Offline row: a headline row or a sibling."""
    from tapeout.board import as_installed

    if key.startswith("sibling-"):
        s = _v()["mlperf"]["siblings"][key[len("sibling-"):]]
        peers = int(s["link_peers"]) if "link_peers" in s else None
        return as_installed(s["chip"], power_limit_w=s.get("power_limit_w"), link_peers=peers), int(s["tp"]), int(s["max_seqs"])
    kw = mlperf_kw(key.split("-")[0], "offline")
    return as_installed(kw["chip"]), kw["tp"], kw["max_seqs"]


def mixed_step(key: str) -> dict:
    """The row's typical Offline step (its batch decoding at ~400 cached tokens, three 222-token prompts
    admitted): the clock the model solves and the share of the step in collectives."""
    from tapeout.llm.kernels import Batch
    from tapeout.perf.api import run_batch

    chip, tp, seqs = offline_setup(key)
    st = run_batch("llama-2-70b", chip, Batch(decode=(400,) * seqs, prefill=((222, 0),) * 3), tp=tp, weights="fp8", kv="fp8")
    return {"clock_ghz": st.clock_hz / 1e9, "collective_share": st.by_kind().get("comm", 0.0) / st.seconds}


def _label(key: str) -> str:
    if key.startswith("sibling-"):
        return _v()["mlperf"]["siblings"][key[len("sibling-"):]]["label"]
    return {"h100-offline": "H100 DGX, TP2", "h200-offline": "H200 at 700 W"}[key]


def plot_offline_rows(results: dict, path: str) -> None:
    """predicted / published of every Offline row against the clock the model solves for its typical
    step (left) and the share of that step in collectives (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    rows = [(k, r, mixed_step(k)) for k, r in results.items() if k.endswith("offline") or k.startswith("sibling-")]
    for ax, x, label in ((axes[0], "clock_ghz", "clock the model solves for the step (GHz)"),
                         (axes[1], "collective_share", "share of the step in collectives")):
        ax.axhspan(0.85, 1.15, color="0.92", zorder=0)
        ax.axhline(1.0, color="0.5", lw=0.8)
        for key, r, m in rows:
            ax.scatter(m[x], r["ratio"], s=60, color="tab:red" if "h100" in key else "tab:blue", zorder=3)
            ax.annotate(_label(key), (m[x], r["ratio"]), textcoords="offset points", xytext=(6, -3), fontsize=8)
        ax.set_xlabel(label)
        ax.margins(x=0.35)
    axes[0].set_ylabel("predicted / published tokens/s (grey: within 15 %)")
    fig.suptitle("MLPerf v4.1 Llama-2-70B Offline: predicted / published on H200 (blue) and H100 (red) systems", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def collectives_at_cap() -> None:
    """What-if: collectives draw the step's power, so their time lends the other kernels no clock (the
    step's clock is solved over its other kernels only). The same round's 4-GPU HGX result points this
    way (docs/validation.md); no measurement of a GPU's power during an all-reduce backs it."""
    import tapeout.perf.step as step

    solve = step._sustained_clock

    def without_collectives(chip, p, kernels, costs, launch):
        kept = [(k, c) for k, c in zip(kernels, costs) if k.kind != "comm"]
        if not kept:
            return solve(chip, p, kernels, costs, launch)
        return solve(chip, p, [k for k, _ in kept], [c for _, c in kept], launch)

    step._sustained_clock = without_collectives


def refit_alpha(alpha: float) -> None:
    """What-if: the H100 power entries refitted at a given DVFS exponent (benchmarks/calibrate_power.py's
    linear solve at that alpha, instead of its grid search's best), for every chip of the family."""
    import calibrate_power
    from power_check import entries

    import tapeout.energy as en
    from tapeout.chip import load_chip

    rows, idle = calibrate_power._rows(load_chip("h100-sxm"), [x for x in entries() if x.name != "idle"])
    e, _ = calibrate_power.solve(rows, idle, alpha)
    fit = en._fit

    def refit(family):
        d = fit(family)
        return {**d, "alpha": alpha, "mac_pj": {**d["mac_pj"], "bf16": float(e[0]), "fp8": float(e[1])},
                "memory_path_pj_per_byte": float(e[2])}

    en._fit = refit
    en._CACHE.clear()


def scale_mac_energy(k: float) -> None:
    """What-if: every chip's energy per MAC x k (the power-capped clock rises as k falls). The H100 fit's
    GEMM power points used Gaussian random operands; GEMM power depends on the operands' values by up
    to ~40 % (Gregersen, Patel, Choukse, 'Input-Dependent Power Usage in GPUs', SC24 workshops,
    arXiv:2409.18324): this shows what such a difference would do, it is not a fitted correction."""
    from dataclasses import replace

    import tapeout.energy as en

    build = en._build
    en._build = lambda chip: (lambda e: replace(e, mac_pj={d: v * k for d, v in e.mac_pj.items()}))(build(chip))
    en._CACHE.clear()


def _sibling_rows() -> dict:
    """The same round's Offline results with one thing changed (validation.toml mlperf.siblings)."""
    gpu = {"h100-sxm": "h100", "h200-sxm": "h200"}
    return {f"sibling-{k}": (f"MLPerf v4.1 Llama-2-70B Offline, {s['description']}",
                             partial(mlperf_offline, gpu[s["chip"]], sibling=k), ("mlperf", "siblings", k, "tokens_per_s"), "tok/s")
            for k, s in _v()["mlperf"]["siblings"].items()}


ROWS = {
    "h100-offline": ("MLPerf v4.1 Llama-2-70B Offline, 8x H100-SXM (TP2 x4, FP8)", lambda q: mlperf_offline("h100", q),
                     ("mlperf", "h100-offline", "tokens_per_s"), "tok/s"),
    "h100-server": ("MLPerf v4.1 Llama-2-70B Server, 8x H100-SXM (TP2 x4, FP8)", lambda q: mlperf_server("h100", q),
                    ("mlperf", "h100-server", "tokens_per_s"), "tok/s"),
    "h200-offline": ("MLPerf v4.1 Llama-2-70B Offline, 8x H200-SXM (TP1 x8, FP8)", lambda q: mlperf_offline("h200", q),
                     ("mlperf", "h200-offline", "tokens_per_s"), "tok/s"),
    "h200-server": ("MLPerf v4.1 Llama-2-70B Server, 8x H200-SXM (TP1 x8, FP8)", lambda q: mlperf_server("h200", q),
                    ("mlperf", "h200-server", "tokens_per_s"), "tok/s"),
    **_sibling_rows(),
    "cm-prefill": ("CloudMatrix384 DeepSeek-R1 prefill per 910C (INT8, EP16)", cm_prefill,
                   ("cloudmatrix", "prefill_tokens_per_s_per_npu"), "tok/s/NPU"),
    "cm-decode": ("CloudMatrix384 DeepSeek-R1 decode per 910C (INT8, EP160, TPOT < 50 ms)", lambda q: cm_decode(),
                  ("cloudmatrix", "decode_tokens_per_s_per_npu"), "tok/s/NPU"),
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(k for k in ROWS if not k.startswith("sibling-")),
                    help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--siblings", action="store_true",
                    help="add the same round's Offline results with one thing changed (power limit, 4-GPU board)")
    ap.add_argument("--alpha", type=float, default=None,
                    help="what-if: the H100 power entries refitted at this DVFS exponent (fitted: 1.92)")
    ap.add_argument("--collectives-at-cap", action="store_true",
                    help="what-if: collectives lend the other kernels no clock (solved without them)")
    ap.add_argument("--plot", default=None, help="with --siblings: plot every Offline row's ratio against the "
                                                 "share of its step in collectives (PNG)")
    ap.add_argument("--quick", action="store_true", help="fewer requests per simulation")
    ap.add_argument("--explain", action="store_true", help="per-kernel breakdown of the dominant steps")
    ap.add_argument("--sensitivity", action="store_true", help="offline H100/H200 at the MLPerf set's mean input, 300 and 400 tokens")
    ap.add_argument("--at-max-clock", action="store_true", help="what-if: steps at the max clock (no power cap)")
    ap.add_argument("--mac-energy-scale", type=float, default=None,
                    help="what-if: energy per MAC x this factor (data-dependent GEMM power), not a fit")
    ap.add_argument("--published", action="store_true",
                    help="only the other vendors' published results (src/tapeout/data/calibration/published.json): "
                         "per chip in-sample and leave-one-chip-out, every row (benchmarks/calibrate_stacks.py --report)")
    ap.add_argument("--json", action="store_true")
    return ap


def run_row(key: str, quick: bool) -> dict:
    """One row run and printed as a table line: its prediction, the published figure and their ratio."""
    title, fn, path, unit = ROWS[key]
    t0 = time.perf_counter()
    res = fn(quick)
    pub = _v()
    for p in path:
        pub = pub[p]
    res.update(published=pub, ratio=res["predicted"] / pub, seconds=time.perf_counter() - t0)
    detail = ", ".join(f"{k} {x:.4g}" if isinstance(x, float) else f"{k} {x}" for k, x in res.items()
                       if k not in ("predicted", "published", "ratio", "seconds"))
    print(f"| {title} | {pub:,.0f} {unit} | {res['predicted']:,.0f} {unit} | {res['ratio']:.2f} | {detail} |", flush=True)
    return res


def main() -> None:
    ap = _parser()
    args = ap.parse_args()
    if args.published:
        import calibrate_stacks

        calibrate_stacks.main(["--report", "--rows"])
        return
    if args.at_max_clock:
        use_max_clock()
    if args.mac_energy_scale is not None:
        scale_mac_energy(args.mac_energy_scale)
    if args.collectives_at_cap:
        collectives_at_cap()
    if args.alpha is not None:
        refit_alpha(args.alpha)
    results = {}
    rows = args.rows.split(",") + ([k for k in ROWS if k.startswith("sibling-")] if args.siblings else [])
    unknown = [k for k in rows if k not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    print("| row | published | predicted | predicted / published | details |\n|---|---:|---:|---:|---|")
    for key in rows:
        results[key] = run_row(key, args.quick)
    if args.sensitivity:
        results["sensitivity"] = {g: prompt_sensitivity(g) for g in ("h100", "h200")}
        print("\nOffline tok/s (one pass) vs the mean input length:", results["sensitivity"])
    if args.explain:
        results["explain"] = explain()
        for k, e in results["explain"].items():
            print(f"\n{k}: {e['ms']:.1f} ms at {e['clock_ghz']:.2f} GHz ({e['ms_at_max_clock']:.1f} ms at the max clock); "
                  f"by kind {e['by_kind_ms']}; by bound {e['by_bound_ms']}")
    if args.plot:
        plot_offline_rows(results, args.plot)
        print(f"plot -> {args.plot}")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
