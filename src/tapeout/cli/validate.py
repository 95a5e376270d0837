"""`tapeout validate`: predict published inference results row by row and score the predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _stats_table(title: str, groups: dict) -> Table:
    t = Table(title=title)
    t.add_column(title.split()[-1])
    for col in ("rows", "geomean pred/pub", "MAPE %", "worst row", "its ratio"):
        t.add_column(col, justify="right")
    for name, s in groups.items():
        w = s["worst"] or {}
        t.add_row(name, str(s["n"]), _ratio(s["geomean"]), "-" if s["mape_pct"] is None else f"{s['mape_pct']:.0f}",
                  str(w.get("id", "-")), _ratio(w.get("ratio")))
    return t


def _rows_table(rows: list[dict]) -> Table:
    t = Table(title="rows (predicted and published in the row's metric)")
    for col in ("id", "chip", "scenario", "published", "predicted", "ratio", "stack", "tp/pp/ep"):
        t.add_column(col, justify="right" if col in ("published", "predicted", "ratio") else "left")
    num = lambda x: "-" if not isinstance(x, (int, float)) else (f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}")  # noqa: E731
    for r in rows:
        lay = r.get("layout") or {}
        t.add_row(str(r.get("id", "-")), str(r.get("chip")), str(r.get("scenario")), num(r.get("published")),
                  num(r.get("predicted")), _ratio(r.get("ratio")), str(r.get("stack") or "-"),
                  f"{lay['tp']}/{lay['pp']}/{lay['ep']}" if lay else "-")
    return t


def _select(rows: list, ids: str | None, chip: str | None) -> list:
    from ..errors import TapeoutError

    if ids:
        want = [s.strip() for s in ids.split(",") if s.strip()]
        have = {r.get("id") for r in rows if isinstance(r, dict)}
        missing = [i for i in want if i not in have]
        if missing:
            raise TapeoutError(f"--rows: no row with id {', '.join(missing)}")
        rows = [r for r in rows if isinstance(r, dict) and r.get("id") in want]
    if chip:
        rows = [r for r in rows if isinstance(r, dict) and r.get("chip") == chip]
    return rows


def validate_cmd(
    file: Path = typer.Argument(..., help="rows of published results (JSON: {meta, results: [...]} or a list)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write every row back with predicted, ratio, stack, layout"),
    stack: Optional[str] = typer.Option(None, "--stack", help="software stack for rows that name none (default: the chip's)"),
    rows: Optional[str] = typer.Option(None, "--rows", help="only these row ids, comma-separated"),
    chip: Optional[str] = typer.Option(None, "--chip", "-c", help="only rows on this chip"),
    show_rows: bool = typer.Option(True, "--show-rows/--no-show-rows", help="print the per-row table"),
):
    """Predict every row of FILE in its published unit; per-chip and per-stack geomean, MAPE, worst row."""
    from ..perf.stack import load_stack
    from ..validate import load_rows, summarize, validate_rows, write_results
    from .serve import _progress

    if stack is not None:
        load_stack(stack)          # a bad --stack is one error before any row is read
    meta, data = load_rows(file)
    data = _select(data, rows, chip)
    prog, task = _progress(len(data), "predicting")
    with prog:
        def step(i, n, r):
            prog.update(task, completed=i, description=f"predicting {r.get('id', i)}")
        results = validate_rows(data, stack=stack, progress=step)
    summary = summarize(results)
    if show_rows:
        console.print(_rows_table(results))
    for r in results:
        if r.get("predicted") is None:
            console.print(f"[yellow]not predicted[/] {r.get('id', '-')}: {r.get('reason')}")
        elif r.get("warning"):
            console.print(f"[dim]{r.get('id', '-')}: {r['warning']}[/]")
    console.print(_stats_table("by chip", summary["by_chip"]))
    console.print(_stats_table("by stack", summary["by_stack"]))
    a = summary["all"]
    mape = "-" if a["mape_pct"] is None else f"{a['mape_pct']:.0f} %"
    console.print(f"all: {a['n']} predicted, {summary['unpredicted']} not; geomean {_ratio(a['geomean'])}, MAPE {mape}")
    if out:
        write_results(out, meta, results, summary)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
