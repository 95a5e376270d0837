"""`tapeout power | area | cost CHIP`: what a chip draws, how big it is and what it costs to make.

Design commands live here as top-level commands. Each is a plain function in COMMANDS
(name -> function); `register(app)` adds them all, so a new command (sweep, study) is one more
function and one more entry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from ..area import area_mm2
from ..chip import load_chip
from ..cost import cost_usd, reticle_mm2
from .common import at_least, console, output_path, print_json, si

COMMANDS: dict[str, Callable] = {}


def command(name: str):
    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = fn
        return fn
    return deco


def _table(title: str, cols: tuple[str, ...]) -> Table:
    t = Table(title=title)
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


_CHIP = typer.Argument(..., help="preset name or path to a chip .toml")
_JSON = typer.Option(False, "--json", help="machine-readable output")
_SPARE = typer.Option(None, "--spare-cores", help="share of cores on the die left disabled (default: the kind's)")
_VOLUME = typer.Option(None, "--volume", help="units to spread the design NRE over")

# ----------------------------------------------------------------------------- power

def _peak_examples(chip) -> list[dict]:
    """Power at the max clock and under the TDP for 1 ms of peak matrix work and of full-bandwidth DRAM."""
    from ..energy import Activity, power_w, sustained_clock_hz

    out = []
    dtypes = [d for d in ("bf16", "fp8", "int8", "fp16") if chip.supports(d)][:2] or list(chip.cores.matrix.macs_per_cycle)[:1]
    f = chip.max_clock_hz
    for d in dtypes:
        a = Activity({d: chip.cores.count * chip.macs_per_cycle(d) * f * 1e-3})
        out.append(_example(chip, f"{d} matrix at peak", a, 1.0, power_w, sustained_clock_hz))
    if chip.dram.type != "none":
        a = Activity(dram_bytes=chip.dram.bandwidth_bytes_per_s * 1e-3, shared_buffer_bytes=chip.dram.bandwidth_bytes_per_s * 1e-3)
        out.append(_example(chip, "DRAM at full bandwidth", a, 0.0, power_w, sustained_clock_hz))
    return out


def _example(chip, name, a, cf, power_w, sustained_clock_hz) -> dict:
    p = power_w(chip, a, 1e-3)
    f = sustained_clock_hz(chip, a, 1e-3, cf)
    return {"workload": name, "uncapped_w": p.total_w, "sustained_clock_hz": f,
            "sustained_fraction_of_max_clock": f / chip.max_clock_hz}


@command("power")
def power_cmd(chip: str = _CHIP, json_out: bool = _JSON):
    """Idle and TDP power, DVFS parameters and the energy of each action (pJ at the max clock)."""
    from ..energy import action_energies

    c = load_chip(chip)
    e = action_energies(c)
    examples = _peak_examples(c)
    if json_out:
        print_json({"chip": c.name, "energies": e, "examples": examples})
        return
    t = _table(f"{c.name}: power ({e.basis})", ("quantity", "value"))
    for k, v in (("TDP", f"{e.tdp_w:.0f} W"), ("idle", f"{e.idle_w:.0f} W"), ("max clock", si(e.max_clock_hz, "Hz")),
                 ("clock floor under the TDP", si(e.floor_clock_hz, "Hz")), ("DVFS alpha (P ~ f^alpha)", f"{e.alpha:.2f}")):
        t.add_row(k, v)
    console.print(t)
    a = _table("energy per action at the max clock", ("action", "pJ", "unit"))
    for d, pj in e.mac_pj.items():
        a.add_row(f"{d} MAC", f"{pj:.3g}", "per MAC")
    for k, v, u in (("vector flop", e.vector_pj_per_flop, "per flop"), ("core SRAM", e.sram_pj_per_byte, "per byte"),
                    ("L2 / global buffer", e.shared_buffer_pj_per_byte, "per byte"),
                    (f"DRAM device ({c.dram.type})", e.dram_pj_per_byte, "per byte"),
                    ("DRAM on-chip path", e.memory_path_pj_per_byte, "per byte"), ("chip-to-chip link", e.link_pj_per_byte, "per byte")):
        a.add_row(k, f"{v:.3g}", u)
    console.print(a)
    x = _table("examples (1 ms of work at the max clock)", ("workload", "uncapped W", "clock under TDP", "of max"))
    for r in examples:
        x.add_row(r["workload"], f"{r['uncapped_w']:.0f}", si(r["sustained_clock_hz"], "Hz"), f"{100 * r['sustained_fraction_of_max_clock']:.0f}%")
    console.print(x)


# ----------------------------------------------------------------------------- area

@command("area")
def area_cmd(chip: str = _CHIP, spare_cores: Optional[float] = _SPARE, json_out: bool = _JSON):
    """Silicon area by component (mm2), against the chip file's stated die area and the reticle."""
    c = load_chip(chip)
    a, reticle = area_mm2(c, spare_core_fraction=spare_cores), reticle_mm2()
    _show(json_out, {"chip": c.name, "area": a, "per_die_mm2": a.per_die_mm2, "stated_die_area_mm2": c.chip.die_area_mm2,
                     "reticle_mm2": reticle}, lambda: _print_area(c, a, reticle))


def _print_area(c, a, reticle: float) -> None:
    _breakdown(f"{c.name}: silicon area ({c.chip.process}, {a.dies} die(s), {100 * a.spare_core_fraction:.0f}% spare cores)",
               "mm2", a.components, a.total_mm2, "{:.1f}")
    if c.chip.die_area_mm2:
        console.print(f"stated die area {c.chip.die_area_mm2:.0f} mm2: model {100 * (a.total_mm2 / c.chip.die_area_mm2 - 1):+.1f}%")
    over = a.per_die_mm2 > reticle
    console.print(f"per die {a.per_die_mm2:.0f} mm2 vs reticle {reticle:.0f} mm2: "
                  + ("[red]over: split into more dies (chip.dies)[/]" if over else "fits"))


def _show(as_json: bool, data: dict, show: Callable[[], None]) -> None:
    """Print `data` as JSON, or call `show` to print the tables."""
    print_json(data) if as_json else show()


def _breakdown(title: str, unit: str, parts: dict, total: float, fmt: str) -> None:
    """A table of the non-zero components, each with its share, and the total."""
    t = _table(title, ("component", unit, "share"))
    for k, v in parts.items():
        if v:
            t.add_row(k, fmt.format(v), f"{100 * v / total:.1f}%")
    t.add_row("[bold]total[/]", f"[bold]{fmt.format(total)}[/]", "100%")
    console.print(t)


# ----------------------------------------------------------------------------- cost

@command("cost")
def cost_cmd(chip: str = _CHIP, volume: Optional[float] = _VOLUME, json_out: bool = _JSON):
    """Manufacturing cost by component (USD), with reported costs and prices where known."""
    c = load_chip(chip)
    r = cost_usd(c, volume=volume)
    _show(json_out, {"chip": c.name, "cost": r}, lambda: _print_cost(c, r))


def _print_cost(c, r) -> None:
    _breakdown(f"{c.name}: manufacturing cost", "USD", r.components, r.total_usd, "{:,.0f}")
    console.print(f"die: {r.die_area_mm2:.0f} mm2 x {r.dies} ({r.area_source}); wafer ${r.wafer_usd:,.0f}, "
                  f"{r.dies_per_wafer:.0f} dies/wafer, yield {100 * r.die_yield:.0f}%, ${r.die_usd:,.0f} per good die")
    if r.reported_cost_usd:
        console.print(f"reported manufacturing cost ${r.reported_cost_usd:,.0f}: model {100 * (r.total_usd / r.reported_cost_usd - 1):+.0f}%")
    if r.reported_price_usd:
        console.print(f"reported price ${r.reported_price_usd:,.0f} (a price, not a cost: {r.reported_price_usd / r.total_usd:.1f}x the modelled cost)")


# ----------------------------------------------------------------------------- sweep

def _progress(label: str):
    """A rich progress bar and the callback(done, total) that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    # no refresh thread (auto_refresh=False): worker processes are forked while the bar is shown
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, auto_refresh=False)
    state = {"task": None, "t0": None, "start": None}

    def update(done: int, total: int) -> None:
        import time

        if state["task"] is None:
            state["task"] = bar.add_task(label, total=total, completed=done, rate="")
            state["t0"], state["start"] = time.perf_counter(), done
        dt = time.perf_counter() - state["t0"]
        rate = f"{(done - state['start']) / dt * 60:,.0f} points/min" if dt > 0.5 else ""
        bar.update(state["task"], completed=done, total=total, rate=rate)
        bar.refresh()
    return bar, update


def _fmt(metric: str, v) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    if metric.endswith("cost_usd"):
        return f"${v:,.0f}"
    if metric.endswith(("_mm2", "tdp_w", "power_w", "tok_s_per_chip", "tok_s_per_kusd")):
        return f"{v:,.0f}"
    if metric.endswith("_bytes"):
        return f"{v / 2**20:,.0f} MiB"
    return f"{v:,.4g}" if abs(v) < 1e5 else si(v)


SHORT = {"tok_s_per_chip": "tok/s/chip", "tok_per_j": "tok/J", "tok_s_per_kusd": "tok/s/$1k", "usd_per_mtok": "$/Mtok",
         "cost_usd": "cost", "die_mm2": "die mm2", "area_mm2": "mm2", "clock_hz": "clock", "dram_stacks": "stacks",
         "link_bytes_per_s": "link B/s", "core_sram_bytes": "SRAM/core", "shared_buffer_bytes": "buffer",
         "process_node_nm": "nm", "vector_lanes": "lanes", "link_topology": "topology", "power_w": "W"}


def _short(name: str) -> str:
    w, _, m = name.rpartition(".")
    return (w.split("-")[0] + ":" if w else "") + SHORT.get(m, m)


def _records_table(title: str, recs: list, knobs: list[str], metrics: list[str]) -> Table:
    """One row per record: the knobs that differ between the rows, then the metrics."""
    from rich import box

    knobs = [k for k in knobs if len({str(r["params"].get(k)) for r in recs}) > 1]
    t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    for i, c in enumerate(("#", *(_short(k) for k in knobs), *(_short(m) for m in metrics))):
        t.add_column(c, justify="left" if i == 0 else "right", no_wrap=True)
    for i, r in enumerate(recs, 1):
        t.add_row(str(i), *(_fmt(k, r["params"].get(k)) for k in knobs), *(_fmt(m, r["metrics"].get(m)) for m in metrics))
    return t


def _print_wide(t) -> None:
    """Print a wide table whole: a terminal wraps it at its width; a pipe or file gets 132 columns."""
    if console.is_terminal:
        console.print(t)
    else:
        from rich.console import Console

        Console(highlight=False, width=max(console.width, 132), file=console.file).print(t)


def print_sweep(res, top: int = 15) -> None:
    """The sweep's summary: counts, infeasibility reasons, the front and the ranked table."""
    from ..dse.pareto import ranked
    from ..dse.sweep import reasons

    space = res.space
    knobs = [k for k, vals in space.knobs if len(vals) > 1]
    metrics = list(dict.fromkeys([m for m, _ in space.objectives] + ["cost_usd", "die_mm2"]))
    console.print(f"{space.name}: {len(res.records):,} of {space.size:,} points "
                  f"({res.new:,} evaluated now, {res.reused:,} from {res.out_dir / 'results.jsonl'}), "
                  f"{len(res.feasible):,} feasible, {len(res.front)} on the Pareto front"
                  + (f"; {res.points_per_minute:,.0f} points/min" if res.new else ""))
    why = reasons(res.records)
    if why:
        t = _table("infeasible points", ("reason (numbers as N)", "points"))
        for k, n in list(why.items())[:8]:
            t.add_row(k, f"{n:,}")
        console.print(t)
    objs = ", ".join(("max " if s > 0 else "min ") + m for m, s in space.objectives)
    _print_wide(_records_table(f"Pareto front ({objs}): {len(res.front)} designs, first {top}",
                               res.front[:top], knobs, metrics))
    sign = -1 if space.rank_by in space.minimize else 1
    _print_wide(_records_table(f"ranked by {space.rank_by}, first {top}", ranked(res.records, space.rank_by, sign)[:top],
                               knobs, metrics))


@command("sweep")
def sweep_cmd(space: str = typer.Argument(..., help="SPACE.toml, or a study name (inference-7nm)"),
              out: Optional[str] = typer.Option(None, "--out", help="output folder (default out/sweep-NAME)"),
              workers: Optional[int] = typer.Option(None, "--workers", help="local processes (default: the CPUs)"),
              ray: Optional[str] = typer.Option(None, "--ray", help="run on a Ray cluster: ADDRESS, or 'local'"),
              evaluator: Optional[str] = typer.Option(None, "--evaluator", help="analytic (fast) or simulated (the serving simulator)"),
              sample: Optional[int] = typer.Option(None, "--sample", help="evaluate N points drawn from the space"),
              seed: int = typer.Option(0, "--seed", help="seed of --sample"),
              full: bool = typer.Option(False, "--full", help="use the space file's \\[full.knobs] table"),
              top: int = typer.Option(15, "--top", help="rows of the front and ranked tables"),
              plots: bool = typer.Option(True, "--plots/--no-plots", help="write pareto.png (needs matplotlib)"),
              json_out: bool = typer.Option(False, "--json", help="machine-readable summary")):
    """Explore a design space: evaluate every point (appending to results.jsonl as each finishes, so a
    rerun resumes), then print and write the Pareto front, a ranked table and plots."""
    from ..dse.space import load_space
    from ..dse.sweep import run_sweep, write_tables

    output_path(out, "--out", folder=True)
    at_least(1, workers=workers, sample=sample, top=top)
    at_least(0, seed=seed)
    sp = load_space(space, "full" if full else None)
    if evaluator is not None:
        sp = sp.with_evaluator(evaluator)
    bar, update = _progress(f"sweep {sp.name}")
    try:
        with bar:
            res = run_sweep(sp, out, workers=workers, ray=ray, sample=sample, seed=seed, progress=None if json_out else update)
    except KeyboardInterrupt:
        from ..dse.sweep import default_out

        where = Path(out) if out else default_out(sp)
        console.print(f"[yellow]interrupted[/]: finished points are in {where / 'results.jsonl'}; "
                      "run the same command again to resume")
        raise typer.Exit(130) from None
    files = write_tables(res, top=None)
    if plots and res.feasible:
        from ..dse.plots import pareto_plot

        files["plot"] = pareto_plot(res.records, res.front, sp.objectives, res.out_dir / "pareto.png",
                                    color_by=_color_knob(sp), title=f"{sp.name}: {len(res.feasible):,} feasible designs")
    if json_out:
        print_json({"space": sp.name, "points": len(res.records), "evaluated": res.new, "reused": res.reused,
                    "points_per_minute": res.points_per_minute, "feasible": len(res.feasible),
                    "front": res.front, "files": {k: str(v) for k, v in files.items()}})
        return
    print_sweep(res, top)
    console.print("wrote " + ", ".join(str(v) for v in files.values()))


def _color_knob(sp) -> Optional[str]:
    varied = [k for k, vals in sp.knobs if len(vals) > 1]
    return "cores" if "cores" in varied else (varied[0] if varied else None)


# ----------------------------------------------------------------------------- study

@command("study")
def study_cmd(name: str = typer.Argument("inference-7nm", help="a study in tapeout/data/studies (inference-7nm) or a space file with a \\[study] table"),
              out: Optional[str] = typer.Option(None, "--out", help="output folder (default out/study-NAME)"),
              full: bool = typer.Option(False, "--full", help="the larger space (\\[full.knobs]) and every layout in the simulator"),
              workers: Optional[int] = typer.Option(None, "--workers", help="local processes (default: the CPUs)"),
              ray: Optional[str] = typer.Option(None, "--ray", help="run the sweep on a Ray cluster: ADDRESS, or 'local'"),
              requests: Optional[int] = typer.Option(None, "--requests", help="requests per serving-simulator run (default: the study's)"),
              plots: bool = typer.Option(True, "--plots/--no-plots", help="plots in the report (needs matplotlib)")):
    """Run a study: sweep the design space, pick the best designs, serve them and the incumbents in the
    serving simulator, and write an HTML report and a Markdown summary."""
    from ..dse.study import run_study

    output_path(out, "--out", folder=True)
    at_least(1, workers=workers, requests=requests)
    bars: dict = {}
    from rich.progress import Progress

    with Progress(console=console, transient=False, auto_refresh=False) as prog:   # no thread: workers fork
        def update(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(stage, total=total)
            prog.update(bars[stage], completed=done, total=total)
            prog.refresh()

        res = run_study(name, out, full=full, workers=workers, ray=ray, requests=requests, progress=update, plots=plots)
    from ..dse.report import headline

    for wl in res.space.workloads:
        from rich import box

        t = Table(title=f"{wl.name}: serving simulator (p99 TTFT <= {wl.slo_ttft_s:g} s, TPOT <= {wl.slo_tpot_s * 1e3:g} ms)",
                  box=box.SIMPLE_HEAD)
        for i, c in enumerate(("chip", "kind", "tok/s/chip", "tok/J", "tok/s/$1k", "$/Mtok", "deployment")):
            t.add_column(c, justify="left" if i in (0, 1, 6) else "right", no_wrap=True)
        for e in res.entries:
            s = res.simulated.get((e.name, wl.name)) or {}
            if "tok_s_per_chip" in s:
                t.add_row(e.name, e.kind, f"{s['tok_s_per_chip']:,.0f}", f"{s['tok_per_j']:.2f}", f"{s['tok_s_per_kusd']:,.0f}",
                          f"{s['usd_per_mtok']:.3f}", f"{s['tp'] * s['ep']} chips: tp {s['tp']} x ep {s['ep']}, {s['weights']}")
            else:
                t.add_row(e.name, e.kind, "-", "-", "-", "-", (s.get("infeasible") or "")[:60])
        _print_wide(t)
        for m, x in headline(res, wl).items():
            console.print(f"  {m}: {x['design']} {_fmt(m, x['design_value'])} vs {x['incumbent']} "
                          f"{_fmt(m, x['incumbent_value'])} ({x['ratio']:.2f}x)")
    console.print(f"study {res.space.name}: {res.seconds:.0f} s; wrote {res.files['report']} and {res.files['summary']}")


def register(app: typer.Typer) -> None:
    for name, fn in COMMANDS.items():
        app.command(name)(fn)
