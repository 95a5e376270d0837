"""`tapeout chips`: list, show, diff and check chip description files."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .common import console, gib, print_json, si

chips_app = typer.Typer(help="List, show, compare and validate chip description files.",
                        invoke_without_command=True, no_args_is_help=False)


def _peak(chip, dtype: str) -> str:
    return si(chip.peak_flops(dtype)) if chip.supports(dtype) else "-"


@chips_app.callback()
def chips_list(ctx: typer.Context,
               json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """A table of every preset (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..chip import load_chip, preset_names

    chips = [load_chip(n) for n in preset_names()]
    if json_out:
        print_json([_summary(c) for c in chips])
        return
    t = Table(title=f"{len(chips)} chip presets (dense peaks; balance = bf16 FLOP per DRAM byte)")
    for col in ("name", "vendor", "kind", "node", "bf16", "fp8", "int8", "memory", "bandwidth", "TDP", "balance"):
        t.add_column(col, justify="left" if col in ("name", "vendor", "kind", "node") else "right")
    for c in chips:
        t.add_row(c.name, c.chip.vendor, c.chip.kind, c.chip.process, _peak(c, "bf16"), _peak(c, "fp8"),
                  _peak(c, "int8"), gib(c.memory_bytes) + ("" if c.dram.type != "none" else " SRAM"),
                  si(c.dram.bandwidth_bytes_per_s or c.shared_buffer.bandwidth_bytes_per_s, "B/s"),
                  f"{c.chip.tdp_w:.0f} W", f"{c.machine_balance('bf16') if c.supports('bf16') else c.machine_balance('int8'):.0f}")
    console.print(t)


def _summary(c) -> dict:
    return {"name": c.name, "vendor": c.chip.vendor, "kind": c.chip.kind, "process": c.chip.process,
            "peak_flops": {d: c.peak_flops(d) for d in c.cores.matrix.macs_per_cycle},
            "memory_bytes": c.memory_bytes, "dram_bandwidth_bytes_per_s": c.dram.bandwidth_bytes_per_s,
            "tdp_w": c.chip.tdp_w, "machine_balance_bf16": c.machine_balance("bf16") if c.supports("bf16") else None}


@chips_app.command("show")
def chips_show(chip: str = typer.Argument(..., help="preset name or path to a chip .toml"),
               json_out: bool = typer.Option(False, "--json")):
    """The full spec of one chip, every number with its source and confidence."""
    from ..chip import load_chip

    c = load_chip(chip)
    if json_out:
        print_json({"spec": c.flat(), "derived": _derived(c), "references": c.references,
                    "sources": {k: vars(s) for k, s in c.sources.items()}})
        return
    t = Table(title=f"{c.chip.full_name or c.name}  ({c.path})")
    for col in ("key", "value", "confidence", "source"):
        t.add_column(col)
    for key, val in c.flat().items():
        if val is None:
            continue
        s = c.source_of(key)
        t.add_row(key, _fmt(val), s.confidence if s else "", (s.ref + (f": {s.note}" if s.note else "")) if s else "")
    console.print(t)
    d = Table(title="derived (computed from the file)")
    d.add_column("quantity"); d.add_column("value", justify="right")
    for k, v in _derived(c).items():
        d.add_row(k, _fmt(v))
    console.print(d)
    r = Table(title="references")
    r.add_column("id"); r.add_column("reference")
    for k, v in c.references.items():
        r.add_row(k, v)
    console.print(r)


def _derived(c) -> dict:
    out = {f"peak_{d}_per_s": c.peak_flops(d) for d in c.cores.matrix.macs_per_cycle}
    out["vector_fp32_flops_per_s"] = c.vector_flops()
    out["total_sram_bytes"] = c.total_sram_bytes
    for d in ("bf16", "int8"):
        if c.supports(d):
            out[f"machine_balance_{d}_flop_per_byte"] = c.machine_balance(d)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"
    return str(v)


@chips_app.command("diff")
def chips_diff(a: str = typer.Argument(..., help="first chip (preset or path)"),
               b: str = typer.Argument(..., help="second chip (preset or path)")):
    """The keys where two chips differ, with the ratio b / a for numbers."""
    from ..chip import load_chip

    ca, cb = load_chip(a), load_chip(b)
    fa, fb = {**ca.flat(), **_derived(ca)}, {**cb.flat(), **_derived(cb)}
    t = Table(title=f"{ca.name} vs {cb.name}")
    for col in ("key", ca.name, cb.name, "b / a"):
        t.add_column(col, justify="left" if col == "key" else "right")
    n = 0
    for key in dict.fromkeys([*fa, *fb]):
        va, vb = fa.get(key), fb.get(key)
        if va == vb:
            continue
        n += 1
        ratio = f"{vb / va:.2f}x" if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va else ""
        t.add_row(key, _fmt(va) if va is not None else "-", _fmt(vb) if vb is not None else "-", ratio)
    console.print(t if n else f"{ca.name} and {cb.name} have the same spec")


@chips_app.command("check")
def chips_check(paths: list[str] = typer.Argument(..., help="chip .toml files to validate")):
    """Validate chip files: one line per file, exit 1 if any is broken."""
    from ..chip import load_chip
    from ..errors import ChipFileError

    bad = 0
    for p in paths:
        try:
            c = load_chip(p)
        except ChipFileError as e:
            bad += 1
            console.print(f"[red]FAIL[/] {e}", soft_wrap=True)
            continue
        console.print(f"[green]ok[/]   {p}: {c.name}, {si(c.peak_flops('bf16') or c.peak_flops('int8'))}FLOP/s, "
                      f"{gib(c.memory_bytes)}, {len(c.sources)} sources", soft_wrap=True)
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(chips_app, name="chips")
