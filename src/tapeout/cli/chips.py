"""`tapeout chips`: list, show, diff and check chip description files.

Every command that takes a chip accepts a preset name (`h100-sxm`) or a path to a `.toml` file.
"""
from __future__ import annotations

import re
from typing import Optional

import typer
from rich import box
from rich.table import Table

from .common import console, print_json, si

chips_app = typer.Typer(help="List, show, compare and validate chip description files.",
                        invoke_without_command=True, no_args_is_help=False)

ASSUMED = "*"      # marks a figure that rests on an assumption rather than a published number
FP16_ONLY = "†"    # marks a 16-bit peak that is fp16 because the chip has no bf16


# ----------------------------------------------------------------------------- formatting

def _node(c) -> str:
    """A short process label: 'TSMC 4N' -> '4N', 'SMIC N+1' -> 'N+1', '7 nm' -> '7nm'."""
    for pat in (r"\b\d+NP?\b", r"\bN\+?\d+\+?", r"\b(\d+)\s*nm\b"):
        m = re.search(pat, c.chip.process)
        if m:
            return m.group(0).replace(" ", "")
    return f"{c.chip.process_node_nm:g}nm" + (ASSUMED if _assumed(c, "chip.process_node_nm") else "")


def _assumed(c, key: str) -> bool:
    s = c.source_of(key)
    return s is not None and s.confidence == "assumed"


def _half(c) -> str | None:
    """The 16-bit float dtype of the chip's headline peak: bf16, else fp16, else none."""
    return next((d for d in ("bf16", "fp16") if c.supports(d)), None)


def _peak_cell(c, dtype: str | None) -> str:
    if dtype is None or not c.supports(dtype):
        return "-"
    v = c.peak_flops(dtype) / 1e12
    text = f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    stated = dtype in c.peaks.stated() and not _assumed(c, f"peaks.{dtype}")
    return text + ("" if stated else ASSUMED) + (FP16_ONLY if dtype == "fp16" else "")


def _size(nbytes: float) -> str:
    """Compact binary size: 80G, 219M."""
    return f"{nbytes / 2**30:.0f}G" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f}M"


def _balance_dtype(c) -> str:
    return _half(c) or ("int8" if c.supports("int8") else next(iter(c.cores.matrix.macs_per_cycle)))


def _fmt(key: str, v) -> str:
    """A value with the unit its key names: 1.83e9 for clock_hz -> '1.83 GHz'."""
    if v is None:
        return "-"
    if isinstance(v, str) or isinstance(v, bool):
        return str(v)
    if isinstance(v, tuple):                          # a list field, e.g. cores.matrix.epilogue.ops
        return ", ".join(map(str, v))
    for suffix, fn in _UNITS:
        if key.endswith(suffix):
            return fn(v)
    return f"{v:,}" if isinstance(v, int) and v >= 100_000 else f"{v:.6g}"


def _binary(v: float) -> str:
    for p, u in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= p:
            return f"{v / p:.4g} {u}"
    return f"{v:g} B"


_UNITS = (
    ("bandwidth_bytes_per_cycle", lambda v: f"{v:g} B/cycle"),
    ("_bytes_per_s", lambda v: si(v, "B/s")),
    ("_flops_per_s", lambda v: si(v, "FLOP/s")),
    ("_ops_per_s", lambda v: si(v, "OP/s")),
    ("_flop_per_byte", lambda v: f"{v:.0f} FLOP/B"),
    ("bytes", _binary),
    ("_hz", lambda v: f"{v / 1e9:.4g} GHz"),
    ("_w", lambda v: f"{v:g} W"),
    ("_mm2", lambda v: f"{v:g} mm²"),
    ("_nm", lambda v: f"{v:g} nm"),
    ("latency_s", lambda v: f"{v * 1e6:g} µs"),
    ("_usd", lambda v: f"${v:,.0f}"),
    ("transistors", lambda v: f"{v / 1e9:g} billion"),
)


# ----------------------------------------------------------------------------- list

def _order(c):
    return (c.chip.vendor == "tapeout", c.chip.vendor != "NVIDIA", c.chip.vendor.lower(), c.chip.launch_year, c.name)


def _row(c) -> list[str]:
    mem = c.memory_bytes
    bw = c.dram.bandwidth_bytes_per_s or c.shared_buffer.bandwidth_bytes_per_s
    bal = c.machine_balance(_balance_dtype(c))
    return [c.name, c.chip.vendor, _node(c), _peak_cell(c, _half(c)), _peak_cell(c, "fp8"), _peak_cell(c, "int8"),
            _size(mem) + ("s" if c.dram.type == "none" else ""), f"{bw / 1e12:.2f}" if bw < 1e13 else f"{bw / 1e12:.0f}",
            f"{c.chip.tdp_w:.0f}" + (ASSUMED if _assumed(c, "chip.tdp_w") else ""), f"{bal:.0f}"]


def _list_table(chips) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0, 0, 1))
    heads = ("name", "vendor", "node", "bf16", "fp8", "int8", "mem", "TB/s", "TDP", "F/B")
    for h in heads:
        t.add_column(h, justify="left" if h in ("name", "vendor", "node") else "right", no_wrap=True,
                     max_width=10 if h == "vendor" else None, overflow="ellipsis")
    for i, c in enumerate(chips):
        t.add_row(*_row(c), end_section=i + 1 < len(chips) and chips[i + 1].chip.vendor == "tapeout" != c.chip.vendor)
    return t


LEGEND = (f"Dense peaks in TFLOP/s (int8: TOP/s); mem in GiB (M: MiB; s: on-chip SRAM, no DRAM); TB/s of DRAM "
          f"(SRAM where none); TDP in W; F/B = bf16 FLOP per byte of that bandwidth (fp16, else int8). "
          f"{ASSUMED} rests on an assumption, {FP16_ONLY} fp16 (no bf16). `tapeout chips show NAME` gives every source.")


@chips_app.callback()
def chips_list(ctx: typer.Context,
               json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """A table of every preset (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..chip import load_chip, preset_names

    chips = sorted((load_chip(n) for n in preset_names()), key=_order)
    if json_out:
        print_json([_summary(c) for c in chips])
        return
    console.print(f"[bold]{len(chips)} chips[/]")
    console.print(_list_table(chips))
    console.print(LEGEND, style="dim")


def _summary(c) -> dict:
    bal = _balance_dtype(c)
    return {"name": c.name, "vendor": c.chip.vendor, "kind": c.chip.kind, "family": c.chip.family,
            "process": c.chip.process, "peak_flops": {d: c.peak_flops(d) for d in c.cores.matrix.macs_per_cycle},
            "memory_bytes": c.memory_bytes, "dram_type": c.dram.type,
            "dram_bandwidth_bytes_per_s": c.dram.bandwidth_bytes_per_s, "tdp_w": c.chip.tdp_w,
            "machine_balance": {"dtype": bal, "flop_per_byte": c.machine_balance(bal)}}


# ----------------------------------------------------------------------------- show

def _derived(c) -> dict:
    """Quantities computed from the file (never stored in it)."""
    out = {f"peak_{d}_{'ops' if d.startswith('int') else 'flops'}_per_s": c.peak_flops(d)
           for d in c.cores.matrix.macs_per_cycle}
    out["vector_fp32_flops_per_s"] = c.vector_flops()
    out["total_sram_bytes"] = c.total_sram_bytes
    out["model_memory_bytes"] = c.memory_bytes
    for d in dict.fromkeys((_balance_dtype(c), "fp8", "int8")):
        if c.supports(d):
            out[f"machine_balance_{d}_flop_per_byte"] = c.machine_balance(d)
    return out


def _spec_table(c) -> tuple[Table, list[str]]:
    """The spec grouped by section, each value with its confidence and a numbered source note."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0, 0, 1))
    for col in ("key", "value", "confidence", "source"):
        t.add_column(col, no_wrap=col != "value", overflow="fold", max_width=28 if col == "value" else None)
    notes: dict[tuple, int] = {}
    section = None
    for key, val in c.flat().items():
        if val is None:
            continue
        sec, _, leaf = key.rpartition(".")
        if sec != section:
            section = sec
            t.add_row(f"[bold]{sec}[/]", "", "", "")
        s = c.source_of(key)
        ref = ""
        if s is not None:
            ref = s.ref if not s.note else f"{s.ref} [{notes.setdefault((s.ref, s.note), len(notes) + 1)}]"
        style = {"assumed": "yellow", "derived": "cyan"}.get(s.confidence, "") if s else ""
        t.add_row("  " + leaf, _fmt(key, val), s.confidence if s else "", ref, style=style)
    return t, [f"[{i}] {ref}: {note}" for (ref, note), i in notes.items()]


@chips_app.command("show")
def chips_show(chip: str = typer.Argument(..., help="preset name or path to a chip .toml"),
               json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """The full spec of one chip, every number with its source and confidence."""
    from ..chip import load_chip

    c = load_chip(chip)
    if json_out:
        print_json({"spec": c.flat(), "derived": _derived(c), "references": c.references,
                    "sources": {k: vars(s) for k, s in c.sources.items()}})
        return
    console.print(f"[bold]{c.chip.full_name or c.name}[/]  ({c.path})", soft_wrap=True)
    t, notes = _spec_table(c)
    console.print(t)
    console.print("[bold]notes[/]")
    for n in notes:
        console.print(n, markup=False)
    d = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0, 0, 1))
    d.add_column("derived from the file")
    d.add_column("value", justify="right")
    for k, v in _derived(c).items():
        d.add_row(k, _fmt(k, v))
    console.print(d)
    console.print("[bold]references[/]")
    for k, v in c.references.items():
        console.print(f"{k}: {v}", markup=False)


# ----------------------------------------------------------------------------- diff

@chips_app.command("diff")
def chips_diff(a: str = typer.Argument(..., help="first chip (preset or path)"),
               b: str = typer.Argument(..., help="second chip (preset or path)"),
               json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """The keys (and derived quantities) where two chips differ, with the ratio b / a for numbers."""
    from ..chip import load_chip

    ca, cb = load_chip(a), load_chip(b)
    fa, fb = {**ca.flat(), **_derived(ca)}, {**cb.flat(), **_derived(cb)}
    rows = [(k, fa.get(k), fb.get(k)) for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]
    if json_out:
        print_json([{"key": k, "a": va, "b": vb} for k, va, vb in rows])
        return
    if not rows:
        console.print(f"{ca.name} and {cb.name} have the same spec")
        return
    t = Table(title=f"{ca.name} vs {cb.name}", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("key", ca.name, cb.name, "b / a"):
        t.add_column(col, justify="left" if col == "key" else "right", no_wrap=col in ("key", "b / a"),
                     overflow="fold", max_width=None if col == "key" else 22)
    for k, va, vb in rows:
        num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        t.add_row(k, _fmt(k, va), _fmt(k, vb), f"{vb / va:.2f}x" if num and va else "")
    console.print(t)


# ----------------------------------------------------------------------------- check

@chips_app.command("check")
def chips_check(paths: Optional[list[str]] = typer.Argument(
        None, help="chip .toml files or preset names to validate (default: every preset)")):
    """Validate chip files: one line per file (`FILE: KEY: REASON` when broken); exit 2 if any is broken."""
    from ..chip import load_chip, preset_names
    from ..errors import ChipFileError

    bad = 0
    for p in paths or preset_names():
        try:
            c = load_chip(p)
        except ChipFileError as e:
            bad += 1
            console.print(str(e), markup=False, highlight=False, soft_wrap=True)
            continue
        half = _balance_dtype(c)
        console.print(f"{p}: ok ({c.name}: {si(c.peak_flops(half), 'OP/s' if half.startswith('int') else 'FLOP/s')} {half}, "
                      f"{_binary(c.memory_bytes)} {c.dram.type if c.dram.type != 'none' else 'SRAM'}, "
                      f"{len(c.sources)} sources)", markup=False, highlight=False, soft_wrap=True)
    if bad:   # a broken file is the user's error: the same exit code as every other one
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(chips_app, name="chips")
