"""`tapeout stacks`: the software stacks (data/stacks/*.toml), what each changes, and its sources."""
from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, print_json

stacks_app = typer.Typer(help="List and show the software stacks a chip can run (vendor stacks, ideal).",
                         invoke_without_command=True, no_args_is_help=False)


def _summary(s, deployed_on: list[str]) -> dict:
    from ..perf.stack import KERNELS

    return {"name": s.name, "vendor": s.vendor, "software": s.software, "impl": s.impl,
            "missing_kernels": [k for k in KERNELS if not s.has(k)],
            "formats": list(s.formats) if s.formats is not None else "all the chip has",
            "params": s.overrides, "deployed_on": deployed_on}


def _deployed() -> dict[str, list[str]]:
    from ..chip import load_chip, preset_names

    out: dict[str, list[str]] = {}
    for n in preset_names():
        out.setdefault(load_chip(n).chip.stack, []).append(n)
    return out


def _value(key: str, v: float) -> str:
    if not key.endswith("_s"):
        return f"{v:.3g}"
    if v < 1e-9:
        return "0"
    return f"{v * 1e3:.3g} ms" if v >= 1e-3 else f"{v * 1e6:.3g} us"


@stacks_app.callback()
def stacks_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """A table of every stack (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..perf.stack import load_stack, stack_names

    dep = _deployed()
    rows = [_summary(load_stack(n), dep.get(n, [])) for n in stack_names()]
    if json_out:
        print_json(rows)
        return
    t = Table(title=f"{len(rows)} software stacks (tapeout stacks show NAME: every value with its source)")
    for col in ("stack", "vendor", "matrix eff.", "DRAM eff.", "host/step", "missing kernels", "formats", "deployed on"):
        t.add_column(col)
    for r in rows:
        p = r["params"]
        t.add_row(r["name"], r["vendor"], _value("x", p["mma_efficiency"]) if "mma_efficiency" in p else "family",
                  _value("x", p["dram_efficiency"]) if "dram_efficiency" in p else "family",
                  _value("step_overhead_s", p.get("step_overhead_s", 0.0)), ", ".join(r["missing_kernels"]) or "-",
                  r["formats"] if isinstance(r["formats"], str) else ", ".join(r["formats"]),
                  ", ".join(r["deployed_on"]) or "-")
    console.print(t)


@stacks_app.command("show")
def stacks_show(name: str = typer.Argument(..., help="stack name (see `tapeout stacks`)"),
                json_out: bool = typer.Option(False, "--json")):
    """One stack: its software, kernels, formats and every parameter with its source."""
    from ..perf.stack import load_stack

    s = load_stack(name)
    if json_out:
        print_json({**_summary(s, _deployed().get(s.name, [])),
                    "sources": {k: s.cite(k) for k in s.quantities}, "description": s.description})
        return
    console.print(f"[bold]{s.name}[/] ({escape(s.vendor)}): {escape(s.software)}", highlight=False)
    console.print(escape(s.description), highlight=False)
    if s.inherit:
        console.print(f"inherits: {s.inherit}", highlight=False)
    summ = _summary(s, _deployed().get(s.name, []))
    console.print(f"kernel sequence: {s.impl}; missing fused kernels: {', '.join(summ['missing_kernels']) or 'none'}; "
                  f"native formats: {summ['formats'] if isinstance(summ['formats'], str) else ', '.join(summ['formats'])}",
                  highlight=False, soft_wrap=True)
    t = Table(title="parameters (others: the chip family's, data/perf/<family>.toml)")
    for col in ("parameter", "value", "source"):
        t.add_column(col)
    for k, q in s.quantities.items():
        t.add_row(k, _value(k, q.value), escape(s.cite(k)))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(stacks_app, name="stacks")
