"""`tapeout power | area | cost CHIP`: what a chip draws, how big it is and what it costs to make.

Design commands live here as top-level commands. Each is a plain function in COMMANDS
(name -> function); `register(app)` adds them all, so a new command (sweep, study) is one more
function and one more entry.
"""
from __future__ import annotations

from typing import Callable, Optional

import typer
from rich.table import Table

from .common import console, print_json, si

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
def power_cmd(chip: str = typer.Argument(..., help="preset name or path to a chip .toml"),
              json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """Idle and TDP power, DVFS parameters and the energy of each action (pJ at the max clock)."""
    from ..chip import load_chip
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
def area_cmd(chip: str = typer.Argument(..., help="preset name or path to a chip .toml"),
             spare_cores: Optional[float] = typer.Option(None, "--spare-cores", help="share of cores on the die left disabled (default: the kind's)"),
             json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """Silicon area by component (mm2), against the chip file's stated die area and the reticle."""
    from ..area import area_mm2
    from ..chip import load_chip
    from ..cost import reticle_mm2

    c = load_chip(chip)
    a = area_mm2(c, spare_core_fraction=spare_cores)
    reticle = reticle_mm2()
    if json_out:
        print_json({"chip": c.name, "area": a, "per_die_mm2": a.per_die_mm2, "stated_die_area_mm2": c.chip.die_area_mm2,
                    "reticle_mm2": reticle})
        return
    t = _table(f"{c.name}: silicon area ({c.chip.process}, {a.dies} die(s), {100 * a.spare_core_fraction:.0f}% spare cores)",
               ("component", "mm2", "share"))
    for k, v in a.components.items():
        if v:
            t.add_row(k, f"{v:.1f}", f"{100 * v / a.total_mm2:.1f}%")
    t.add_row("[bold]total[/]", f"[bold]{a.total_mm2:.0f}[/]", "100%")
    console.print(t)
    if c.chip.die_area_mm2:
        console.print(f"stated die area {c.chip.die_area_mm2:.0f} mm2: model {100 * (a.total_mm2 / c.chip.die_area_mm2 - 1):+.1f}%")
    over = a.per_die_mm2 > reticle
    console.print(f"per die {a.per_die_mm2:.0f} mm2 vs reticle {reticle:.0f} mm2: "
                  + ("[red]over: split into more dies (chip.dies)[/]" if over else "fits"))


# ----------------------------------------------------------------------------- cost

@command("cost")
def cost_cmd(chip: str = typer.Argument(..., help="preset name or path to a chip .toml"),
             volume: Optional[float] = typer.Option(None, "--volume", help="units to spread the design NRE over"),
             json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """Manufacturing cost by component (USD), with reported costs and prices where known."""
    from ..chip import load_chip
    from ..cost import cost_usd

    c = load_chip(chip)
    r = cost_usd(c, volume=volume)
    if json_out:
        print_json({"chip": c.name, "cost": r})
        return
    t = _table(f"{c.name}: manufacturing cost", ("component", "USD", "share"))
    for k, v in r.components.items():
        t.add_row(k, f"{v:,.0f}", f"{100 * v / r.total_usd:.1f}%")
    t.add_row("[bold]total[/]", f"[bold]{r.total_usd:,.0f}[/]", "100%")
    console.print(t)
    console.print(f"die: {r.die_area_mm2:.0f} mm2 x {r.dies} ({r.area_source}); wafer ${r.wafer_usd:,.0f}, "
                  f"{r.dies_per_wafer:.0f} dies/wafer, yield {100 * r.die_yield:.0f}%, ${r.die_usd:,.0f} per good die")
    if r.reported_cost_usd:
        console.print(f"reported manufacturing cost ${r.reported_cost_usd:,.0f}: model {100 * (r.total_usd / r.reported_cost_usd - 1):+.0f}%")
    if r.reported_price_usd:
        console.print(f"reported price ${r.reported_price_usd:,.0f} (a price, not a cost: {r.reported_price_usd / r.total_usd:.1f}x the modelled cost)")


def register(app: typer.Typer) -> None:
    for name, fn in COMMANDS.items():
        app.command(name)(fn)
