"""The study's report: report.html (plots embedded as base64 PNGs), summary.md (PNGs next to it),
results.json (every number of the report) and the picked designs as chip files.

Every chip is evaluated with each of the study's stack views (`deployed`: its own stack; `ideal`:
the silicon with a mature stack); the headline and the main tables use the headline view, the
software-stack table and plot show both and the moat (ideal / deployed tokens/s per chip)."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from .evaluate import AGGREGATED
from .study import DEPLOYED, stack_of

METRIC_COLS = (("tok_s_per_chip", "tok/s per chip"), ("tok_per_j", "tok/J"), ("tok_s_per_kusd", "tok/s per $1k"),
               ("usd_per_mtok", "$/Mtok"), ("usd_per_mtok_price", "$/Mtok at price"), ("power_w", "W per chip"))


# ----------------------------------------------------------------------------- numbers

def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _ok(d: dict | None) -> bool:
    return bool(d) and "infeasible" not in d


def _layout(d: dict) -> str:
    return f"{d['tp'] * d['ep']} chips: tp {d['tp']}" + (f" x ep {d['ep']}" if d["ep"] > 1 else "")


def _stack_label(res, view: str) -> str:
    """A stack view in words: `deployed` names the designs' assumed stack."""
    if view != DEPLOYED:
        return f"the {view} stack"
    ds = {e.chip.chip.stack for e in res.entries if e.kind == "design"}
    return "as deployed (each incumbent on its vendor's stack" + (f"; our designs on {', '.join(sorted(ds))}, assumed"
                                                                   if ds else "") + ")"


def moat_views(res) -> tuple[str, str] | None:
    """(base view, ideal view) of the moat, ideal / base tokens/s per chip; None without both."""
    base = res.headline_stack if res.headline_stack != "ideal" else next((v for v in res.views if v != "ideal"), None)
    return (base, "ideal") if base and "ideal" in res.views else None


def moat(res, name: str, wl, source: str = "simulated") -> float | None:
    """Tokens/s per chip of `name` on `wl` with the ideal stack over the base (deployed) one."""
    mv = moat_views(res)
    if not mv:
        return None
    b, i = (res.results(source, v).get((name, wl.name)) for v in mv)
    return i["tok_s_per_chip"] / b["tok_s_per_chip"] if _ok(b) and _ok(i) and b["tok_s_per_chip"] > 0 else None


def headline(res, wl, view: str | None = None) -> dict:
    """Best design vs best incumbent on one workload (simulated, stack `view`: default the headline's),
    with ratios per metric."""
    sim = res.results("simulated", view)
    rows = {e.name: sim.get((e.name, wl.name)) for e in res.entries}
    def best(kind, metric, sign=1):
        cands = [(sign * rows[e.name][metric], e.name) for e in res.entries
                 if e.kind == kind and _ok(rows[e.name])]
        return max(cands)[1] if cands else None
    out = {}
    for metric, _ in METRIC_COLS[:3]:
        d, i = best("design", metric), best("incumbent", metric)
        if d and i:
            out[metric] = {"design": d, "design_value": rows[d][metric], "incumbent": i,
                           "incumbent_value": rows[i][metric], "ratio": rows[d][metric] / rows[i][metric]}
    return out


def _sentences(res) -> list[str]:
    out = [f"Software: every chip {_stack_label(res, res.headline_stack)} in the headline and the tables"
           + (f"; the software-stack table adds {' and '.join(_stack_label(res, v) for v in res.views if v != res.headline_stack)}."
              if len(res.views) > 1 else ".")]
    for wl in res.space.workloads:
        h = headline(res, wl)
        if not h:
            continue
        parts = []
        for metric, label in METRIC_COLS[:3]:
            x = h.get(metric)
            if x:
                parts.append(f"{label} {_num(x['design_value'])} ({x['design']}) vs {_num(x['incumbent_value'])} "
                             f"({x['incumbent']}), {x['ratio']:.2f}x")
        out.append(f"**{wl.name}** (TTFT <= {wl.slo_ttft_s:g} s, TPOT <= {wl.slo_tpot_s * 1e3:g} ms at p99): best design vs "
                   "best incumbent: " + "; ".join(parts) + ".")
        out += _moat_sentence(res, wl)
    return out


def _moat_sentence(res, wl) -> list[str]:
    mv = moat_views(res)
    x = headline(res, wl, mv[1]).get("tok_s_per_chip") if mv else None
    if not x:
        return []
    ranges = []
    for kind, label in (("design", "designs"), ("reference", "reference"), ("incumbent", "incumbents")):
        ms = sorted(m for e in res.entries if e.kind == kind and (m := moat(res, e.name, wl)) is not None)
        if ms:
            ranges.append(f"{label} {ms[0]:.2f}x" + (f"-{ms[-1]:.2f}x" if len(ms) > 1 else ""))
    return [f"{wl.name} with the ideal stack everywhere: tok/s per chip {_num(x['design_value'])} ({x['design']}) vs "
            f"{_num(x['incumbent_value'])} ({x['incumbent']}), {x['ratio']:.2f}x; the software moat (ideal / deployed "
            f"tok/s per chip): {', '.join(ranges)}."]


# ----------------------------------------------------------------------------- tables

def workload_table(res, wl) -> tuple[list[str], list[list[str]]]:
    """One row per chip with the headline stack (simulated), its analytic throughput, and the moat."""
    mv = moat_views(res)
    users = wl.measure == "concurrency"
    head = ["chip", "kind", "stack", "deployment", "weights", *[c for _, c in METRIC_COLS], "p99 TTFT s", "p99 TPOT ms",
            *(["users (concurrency)"] if users else []), "analytic tok/s per chip"]
    head += ["tok/s per chip, ideal stack", "moat (ideal / deployed)"] if mv else []
    rows = []
    for e in res.entries:
        s, a = res.simulated.get((e.name, wl.name)), res.analytic.get((e.name, wl.name))
        stack = stack_of(e, res.headline_stack)
        tail = [_num(s.get("concurrency")) if _ok(s) else "-"] if users else []
        tail += [_num(a.get("tok_s_per_chip")) if _ok(a) else "-"]
        tail += [_num(_tok_s(res, e.name, wl, mv[1])), _ratio(moat(res, e.name, wl))] if mv else []
        if not _ok(s):
            why = (s or a or {}).get("infeasible", "not evaluated")
            rows.append([e.name, e.kind, stack, _short_reason(why), "-", *["-"] * len(METRIC_COLS), "-", "-", *tail])
            continue
        rows.append([e.name, e.kind, stack, _layout(s), s["weights"], *[_num(s.get(m)) for m, _ in METRIC_COLS],
                     _num(s["ttft_s"]), _num(s["tpot_s"] * 1e3), *tail])
    return head, rows


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def stack_table(res) -> tuple[list[str], list[list[str]]]:
    """Per chip: its deployed stack and, per workload, simulated tok/s per chip in every stack view and the moat."""
    mv = moat_views(res)
    head = ["chip", "kind", "stack as deployed"]
    for wl in res.space.workloads:
        head += [f"{wl.name}: {'as deployed' if v == DEPLOYED else v}" for v in res.views]
        head += [f"{wl.name}: moat"] if mv else []
    rows = []
    for e in res.entries:
        r = [e.name, e.kind, e.chip.chip.stack]
        for wl in res.space.workloads:
            for v in res.views:
                d = res.results("simulated", v).get((e.name, wl.name))
                r.append(_num(d["tok_s_per_chip"]) if _ok(d) else "-")
            r += [_ratio(moat(res, e.name, wl))] if mv else []
        rows.append(r)
    return head, rows


BEST_BY = (("tok_s_per_chip", "tok/s per chip"), ("tok_s_per_kusd", "tok/s per $1k"))


def sweep_best_table(res) -> tuple[list[str], list[list[str]]]:
    """Per workload and metric, the sweep's best design for that workload alone (analytic, the designs'
    stack): its knob values, and that value against the best of the designs the ranked workloads picked.
    Where the rows differ, the workloads want different chips."""
    knobs = [k for k, v in res.space.knobs if len(v) > 1]
    picks = [e for e in res.entries if e.kind == "design"]
    head = ["workload", "best for", *knobs, "value", "best pick (value, its share)"]
    feas = res.sweep.feasible
    rows = []
    for wl in res.space.workloads:
        for metric, label in BEST_BY:
            key = f"{wl.name}.{metric}"
            cands = [r for r in feas if isinstance(r["metrics"].get(key), (int, float))]
            if not cands:
                continue
            best = max(cands, key=lambda r: (r["metrics"][key], r["id"]))
            v = best["metrics"][key]
            got = [(res.analytic.get((e.name, wl.name)) or {}).get(metric) for e in picks]
            p = max(((x, e.name) for x, e in zip(got, picks) if x), default=None)
            rows.append([wl.name, label, *[_knob(best["params"].get(k)) for k in knobs], _num(v),
                         f"{p[1]}: {_num(p[0])}, {p[0] / v:.0%}" if p else "-"])
    return head, rows


def _knob(v) -> str:
    return _num(v / 1e9) + " G" if isinstance(v, float) and v >= 1e6 else _num(v) if not isinstance(v, str) else v


def _short_reason(r: str) -> str:
    return ("does not fit: " + r.split("use more chips")[0].split(":", 2)[-1].strip(" ;")) if "no room" in r else r[:90]


def design_table(res) -> tuple[list[str], list[list[str]]]:
    head = ["chip", "role", "cores", "array", "clock GHz", "bf16 PFLOP/s", "8-bit P(FL)OP/s", "memory", "TB/s",
            "links GB/s", "TDP W", "die mm2", "cost $", "price $"]
    rows = []
    for e in res.entries:
        c, f = e.chip, e.facts
        m = c.cores.matrix
        arr = f"{m.array_rows}x{m.array_cols}" if m.array_rows else "-"
        eight = next((f"{c.peak_flops(d) / 1e15:.3g} {d}" for d in ("fp8", "int8") if c.supports(d)), "-")
        rows.append([e.name, ", ".join(e.roles) or e.kind, str(c.cores.count), arr, f"{c.max_clock_hz / 1e9:.2f}",
                     _num(f["peak_bf16_flops"] / 1e15) if f["peak_bf16_flops"] else "-", eight,
                     f"{c.dram.stacks} x {c.dram.type}, {c.dram.bytes / 2**30:.0f} GiB",
                     f"{c.dram.bandwidth_bytes_per_s / 1e12:.2f}", f"{c.links.chip_to_chip.bandwidth_bytes_per_s / 1e9:.0f}",
                     f"{c.chip.tdp_w:.0f}", f"{f['die_mm2']:.0f}" + (f" x {c.chip.dies}" if c.chip.dies > 1 else ""),
                     f"{f['cost_usd']:,.0f}", _num(f.get("price_usd")) if f.get("price_usd") else "-"])
    return head, rows


def md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(head, rows, highlight: set[str] = frozenset()) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for r in rows:
        cls = ' class="design"' if r[0] in highlight else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ----------------------------------------------------------------------------- plots

def _aggregate(res, name: str, source: dict) -> dict | None:
    """Geometric means over the ranked workloads, as the sweep's axes are (None if one is infeasible)."""
    ds = [source.get((name, wl.name)) for wl in res.space.workloads if wl.ranked]
    if not all(_ok(d) for d in ds):
        return None
    return {m: math.exp(sum(math.log(d[m]) for d in ds) / len(ds)) for m in AGGREGATED}


def make_plots(res) -> dict[str, Path]:
    from .plots import bars, pareto_plot, scatter_check, stack_bars

    out, files = res.out_dir, {}
    marks = {}
    for e in res.entries:
        agg = _aggregate(res, e.name, res.analytic)
        if agg:
            marks[e.name] = {"metrics": {**agg, **e.facts}, "params": e.params}
    objs = [(m, s) for m, s in res.space.objectives]
    files["pareto"] = pareto_plot(res.sweep.records, res.sweep.front, objs, out / "pareto.png", color_by="cores",
                                  marks=marks, title=f"{res.space.name}: designs (analytic, geometric mean of the workloads)")
    for wl in res.space.workloads:
        rows = {e.name: res.simulated[(e.name, wl.name)] for e in res.entries if _ok(res.simulated.get((e.name, wl.name)))}
        slug = wl.name.replace(".", "_")
        files[f"bars_{slug}"] = bars(rows, [m for m, _ in METRIC_COLS[:4]], out / f"bars_{slug}.png",
                                     title=f"{wl.name}: serving simulator, p99 TTFT <= {wl.slo_ttft_s:g} s and TPOT <= "
                                           f"{wl.slo_tpot_s * 1e3:g} ms",
                                     highlight=tuple(e.name for e in res.entries if e.kind == "design"))
    mv = moat_views(res)
    if mv:
        groups = {wl.name: {e.name: tuple(_tok_s(res, e.name, wl, v) for v in mv) for e in res.entries}
                  for wl in res.space.workloads}
        files["stacks"] = stack_bars(groups, out / "stacks.png", labels=("as deployed" if mv[0] == DEPLOYED else mv[0],
                                                                        "ideal stack"),
                                     title="tokens/s per chip: as deployed vs ideal stack (serving simulator)")
    pairs = {f"{e.name} / {_short(wl)}": (res.analytic[(e.name, wl.name)]["tok_s_per_chip"],
                                                     res.simulated[(e.name, wl.name)]["tok_s_per_chip"])
             for e in res.entries for wl in res.space.workloads
             if _ok(res.analytic.get((e.name, wl.name))) and _ok(res.simulated.get((e.name, wl.name)))}
    if pairs:
        files["check"] = scatter_check(pairs, out / "check.png", xlabel="analytic tok/s per chip (steady state, mean TPOT)",
                                       ylabel="simulated tok/s per chip (max rate, p99 SLO)",
                                       title="the sweep's objective vs the serving simulator")
    return files


def _short(wl) -> str:
    """A workload in a plot label: its model's family, and its traffic unless chat."""
    return wl.name.split("-")[0] + ("" if wl.traffic == "chat" else f" {wl.traffic}")


def _tok_s(res, name: str, wl, view: str) -> float | None:
    d = res.results("simulated", view).get((name, wl.name))
    return d["tok_s_per_chip"] if _ok(d) else None


# ----------------------------------------------------------------------------- documents

def _setup_lines(res) -> list[str]:
    sp, sw = res.space, res.sweep
    cons = ", ".join(f"{k} = {' / '.join(v) if isinstance(v, tuple) else f'{v:g}'}"
                     for k, v in vars(sp.constraints).items() if v is not None)
    lines = [f"Base design **{sp.base.name}**; constraints: {cons} (and the reticle).",
        f"Sweep: {len(sw.records):,} design points (" + ", ".join(f"{k}: {len(v)}" for k, v in sp.knobs if len(v) > 1)
        + f"), {len(sw.feasible):,} feasible, {len(sw.front)} on the Pareto front "
          f"({', '.join(('max ' if s > 0 else 'min ') + m for m, s in sp.objectives)})."]
    for wl in sp.workloads:
        p, o = wl.lengths()
        lines.append(f"{wl.name}: traffic {wl.traffic} (mean prompt {p:.0f}, output {o:.0f} tokens), SLO TTFT <= "
                     f"{wl.slo_ttft_s:g} s and TPOT <= {wl.slo_tpot_s * 1e3:g} ms, layouts (tp, ep) "
                     f"{', '.join(f'{t}x{e}' for t, e in wl.layouts)}, weights {' / '.join(wl.weights)}, "
                     f"at most {wl.max_seqs} sequences per replica." + _measure_text(wl)
                     + ("" if wl.ranked else " Reported, not ranked: the sweep picks designs on the other workloads."))
    return lines


def _measure_text(wl) -> str:
    """How the serving simulator measures a workload's throughput, in words."""
    if wl.measure != "concurrency":
        return ""
    a, b = wl.window_s()
    return (f" Measured as the largest closed-loop concurrency (users each sending the next request when the answer "
            f"ends) meeting the p99 SLO in the steady state: tokens, energy and latencies counted from {a:,.0f} s to "
            f"{b:,.0f} s ({wl.warmup_lifetimes:g} request lifetimes of warm-up, then {wl.window_lifetimes:g}; a "
            "lifetime is the mean output at the TPOT SLO).")


def check_ratios(res) -> list[float]:
    """analytic / simulated tokens/s per chip over every (chip, workload) both evaluated."""
    out = []
    for e in res.entries:
        for wl in res.space.workloads:
            a, s = res.analytic.get((e.name, wl.name)), res.simulated.get((e.name, wl.name))
            if _ok(a) and _ok(s) and s["tok_s_per_chip"] > 0:
                out.append(a["tok_s_per_chip"] / s["tok_s_per_chip"])
    return sorted(out)


def _check_line(res) -> str:
    r = check_ratios(res)
    if not r:
        return ""
    return (f"Analytic / simulated tokens/s per chip over {len(r)} (chip, workload) pairs: median {r[len(r) // 2]:.2f}, "
            f"range {r[0]:.2f}-{r[-1]:.2f}.")


def _reasons_lines(res) -> list[str]:
    from .sweep import reasons

    return [f"{n:,} points: {k}" for k, n in list(reasons(res.sweep.records).items())[:6]]


def results_json(res) -> dict:
    """Every number: `analytic` and `simulated` with the headline stack, `by_stack` with every view."""
    flat = lambda d: {f"{k[0]}|{k[1]}": v for k, v in d.items()}  # noqa: E731
    return {"study": res.space.name, "seconds": res.seconds,
            "sweep": {"points": len(res.sweep.records), "feasible": len(res.sweep.feasible), "front": len(res.sweep.front)},
            "entries": [{"name": e.name, "kind": e.kind, "roles": list(e.roles), "params": e.params,
                         "point_id": e.point_id, "facts": e.facts, "stack": e.chip.chip.stack} for e in res.entries],
            "headline_stack": res.headline_stack,
            "analytic": flat(res.analytic), "simulated": flat(res.simulated),
            "by_stack": {v: {src: flat(res.results(src, v)) for src in ("analytic", "simulated")} for v in res.views},
            "moat": {f"{e.name}|{wl.name}": moat(res, e.name, wl) for e in res.entries for wl in res.space.workloads},
            "headline": {wl.name: headline(res, wl) for wl in res.space.workloads},
            "sweep_best": [dict(zip(*[sweep_best_table(res)[0]], r)) for r in sweep_best_table(res)[1]],
            "headline_by_stack": {v: {wl.name: headline(res, wl, v) for wl in res.space.workloads} for v in res.views}}


def _runtime(res) -> str:
    parts = [f"{k} {v['seconds']:.0f} s" for k, v in res.timing.items()]
    fresh = sum(v["seconds"] for v in res.timing.values())
    w = max((v.get("workers", 1) for v in res.timing.values()), default=1)
    return (f"This run: {res.seconds:.0f} s; a rerun reuses the stages in {res.out_dir}. Computing every stage "
            f"took ~{fresh:.0f} s on {w} worker processes ({', '.join(parts)}).")


def write_markdown(res, plots: dict, command: str) -> Path:
    lines = [f"# Study {res.space.name}", "", res.space.study.get("question", ""), "", "## Headline", ""]
    lines += [f"- {s}" for s in _sentences(res)] + ["", "## Setup", ""] + [f"- {s}" for s in _setup_lines(res)]
    lines += ["", "## Designs and incumbents", "", md_table(*design_table(res))]
    if len(res.views) > 1:
        lines += ["", "## Software stacks: as deployed and ideal", "", STACKS_TEXT, "", md_table(*stack_table(res))]
        lines += ["", "![tokens/s per chip: as deployed vs ideal stack](stacks.png)"] if "stacks" in plots else []
    for wl in res.space.workloads:
        lines += ["", f"## {wl.name}", "", md_table(*workload_table(res, wl))]
        slug = wl.name.replace(".", "_")
        if f"bars_{slug}" in plots:
            lines += ["", f"![{wl.name}](bars_{slug}.png)"]
    lines += ["", "## Which design each workload wants (the sweep, analytic)", "", BEST_TEXT, "", md_table(*sweep_best_table(res))]
    for key, title in (("pareto", "The design space"), ("check", "Analytic objective vs serving simulator")):
        if key in plots:
            lines += ["", f"## {title}", "", f"![{title}]({plots[key].name})"]
    lines += ["", _check_line(res)]
    lines += ["", "## Infeasible points", ""] + [f"- {s}" for s in _reasons_lines(res)]
    lines += ["", "## Caveats", ""] + [f"- {s}" for s in res.space.study.get("notes", [])]
    lines += ["", "## Reproduce", "", f"    {command}", "", _runtime(res) + " Method and assumptions: docs/study.md."]
    p = res.out_dir / "summary.md"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


STACKS_TEXT = ("Output tokens/s per chip at the SLO in the serving simulator, each chip with its deployed stack (its "
               "chip file's `chip.stack`; the designs with the study's assumed stack) and with the ideal stack (the "
               "silicon with a mature kernel library, every fused kernel and native format, no host time per step). "
               "The moat is ideal / deployed: what the silicon loses to its software today.")


BEST_TEXT = ("For each workload alone, the sweep's best design point by the analytic objective (with the designs' "
             "stack) and its knob values, against the best of the picked designs on that workload (analytic, and its "
             "share of the best). Where two workloads' rows differ, they want different chips.")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.design td{background:#fff4f0}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.lead{font-size:1.05em;background:#f7f9fc;padding:.6em 1em;border-left:4px solid #3b6ea5}
code{background:#f3f3f3;padding:1px 4px}.muted{color:#666;font-size:.9em}"""


def _img(path: Path, alt: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _md_inline(s: str) -> str:
    parts = html.escape(s).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def write_html(res, plots: dict, command: str) -> Path:
    designs = {e.name for e in res.entries if e.kind == "design"}
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>tapeout study {res.space.name}</title>"
         f"<style>{CSS}</style></head><body>", f"<h1>tapeout study: {html.escape(res.space.name)}</h1>",
         f"<p>{html.escape(res.space.study.get('question', ''))}</p>", "<div class='lead'><ul>"]
    h += [f"<li>{_md_inline(s)}</li>" for s in _sentences(res)] + ["</ul></div>", "<h2>Setup</h2><ul>"]
    h += [f"<li>{_md_inline(s)}</li>" for s in _setup_lines(res)] + ["</ul>"]
    h += ["<h2>Designs and incumbents</h2>", html_table(*design_table(res), highlight=designs)]
    if len(res.views) > 1:
        h += ["<h2>Software stacks: as deployed and ideal</h2>", f"<p>{_md_inline(STACKS_TEXT)}</p>",
              html_table(*stack_table(res), highlight=designs)]
        h += [_img(plots["stacks"], "tokens/s per chip: as deployed vs ideal stack")] if "stacks" in plots else []
    for wl in res.space.workloads:
        h += [f"<h2>{html.escape(wl.name)}</h2>", html_table(*workload_table(res, wl), highlight=designs)]
        slug = wl.name.replace(".", "_")
        if f"bars_{slug}" in plots:
            h.append(_img(plots[f"bars_{slug}"], wl.name))
    h += ["<h2>Which design each workload wants (the sweep, analytic)</h2>", f"<p>{_md_inline(BEST_TEXT)}</p>",
          html_table(*sweep_best_table(res))]
    for key, title in (("pareto", "The design space"), ("check", "Analytic objective vs serving simulator")):
        if key in plots:
            h += [f"<h2>{title}</h2>", _img(plots[key], title)]
    h.append(f"<p>{html.escape(_check_line(res))}</p>")
    h += ["<h2>Infeasible points</h2><ul>"] + [f"<li>{html.escape(s)}</li>" for s in _reasons_lines(res)] + ["</ul>"]
    h += ["<h2>Caveats</h2><ul>"] + [f"<li>{_md_inline(s)}</li>" for s in res.space.study.get("notes", [])] + ["</ul>"]
    h += [f"<h2>Reproduce</h2><p><code>{html.escape(command)}</code></p><p class='muted'>{html.escape(_runtime(res))} "
          "Method and assumptions: docs/study.md.</p></body></html>"]
    p = res.out_dir / "report.html"
    p.write_text("\n".join(h), encoding="utf-8")
    return p


def write_report(res, plots: bool = True) -> dict[str, Path]:
    from .study import export_designs

    res.out_dir.mkdir(parents=True, exist_ok=True)
    command = res.space.study.get("command", f"tapeout study {res.space.name}")
    figs = make_plots(res) if plots else {}
    files = dict(figs)
    (res.out_dir / "results.json").write_text(json.dumps(results_json(res), indent=1, default=float), encoding="utf-8")
    files["results"] = res.out_dir / "results.json"
    files["designs"] = res.out_dir / "designs"
    export_designs(res)
    files["summary"] = write_markdown(res, figs, command)
    files["report"] = write_html(res, figs, command)
    return files


__all__ = ["write_report", "headline"]
