"""Plots of a sweep and of the study (matplotlib, imported here only).

`pareto_plot`: one panel per pair of objectives (the first against each other one): every feasible
point in grey, the Pareto front in colour (by a knob), named chips (incumbents, picks) marked.
`bars`: one group of bars per metric, one bar per chip, for each workload.
`stack_bars`: tokens/s per chip as deployed vs with the ideal stack, a pair of bars per chip.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TapeoutError

LABELS = {
    "tok_s_per_chip": "output tokens/s per chip at the SLO",
    "tok_per_j": "tokens per joule (tok/s per W)",
    "tok_s_per_kusd": "tokens/s per chip per $1k of chip cost",
    "usd_per_mtok": "$ per million tokens",
    "cost_usd": "chip manufacturing cost ($)",
    "die_mm2": "die area (mm2)",
    "power_w": "average chip power (W)",
}
MARKERS = "s^Dvp*hX<>"


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TapeoutError("plots need matplotlib: pip install 'tapeout[plot]' (or turn plots off)") from None
    return plt


def label(metric: str) -> str:
    w, _, m = metric.rpartition(".")
    return (f"{w}: " if w else "") + LABELS.get(m, m)


def _xy(records, a: str, b: str):
    pts = [(r["metrics"].get(a), r["metrics"].get(b)) for r in records]
    pts = [(x, y) for x, y in pts if isinstance(x, (int, float)) and isinstance(y, (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def pareto_plot(records: list[dict], front: list[dict], objectives, path: Path, *, color_by: str | None = None,
                marks: dict[str, dict] | None = None, title: str = "") -> Path:
    """Scatter of the first objective against each other one; `marks`: {label: record} drawn as named points."""
    plt = _plt()
    feas = [r for r in records if r.get("feasible")]
    names = [m for m, _ in objectives]
    pairs = [(names[0], other) for other in names[1:]] or [(names[0], names[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 4.2), squeeze=False, sharey=True)
    colors = _colors(front, color_by)
    for ax, (a, b) in zip(axes[0], pairs):
        x, y = _xy(feas, b, a)
        ax.scatter(x, y, s=6, c="#c8c8c8", label=f"feasible designs ({len(feas):,})", rasterized=True)
        fx, fy = _xy(front, b, a)
        sc = ax.scatter(fx, fy, s=22, c=colors["values"], cmap="viridis", edgecolors="black", linewidths=0.4,
                        label=f"Pareto front ({len(front)})")
        for i, (name, rec) in enumerate((marks or {}).items()):
            mx, my = _xy([rec], b, a)
            if mx:
                ax.scatter(mx, my, s=80, marker=MARKERS[i % len(MARKERS)], edgecolors="black", linewidths=0.8,
                           c=[f"C{(i + 1) % 10}"], zorder=5, label=name)
        ax.set_xlabel(label(b))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(label(pairs[0][0]))
    if colors["label"] and len(front):
        fig.colorbar(sc, ax=axes[0].tolist(), label=f"front colour: {colors['label']}", shrink=0.8, pad=0.02)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=min(5, len(labels)),
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _num(v) -> float:
    """A knob value as a number for colouring: array shapes as MACs per core."""
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and "x" in v:
        a, _, b = v.partition("x")
        if a.isdigit() and b.isdigit():
            return float(int(a) * int(b))
    return 0.0


def _colors(front, color_by):
    if not color_by:
        return {"values": "C0", "label": ""}
    vals = [_num(r["params"].get(color_by, r["metrics"].get(color_by))) for r in front]
    return {"values": vals, "label": color_by + (" (MACs per core)" if color_by == "array" else "")}


def bars(rows: dict[str, dict[str, float]], metrics: list[str], path: Path, *, title: str = "",
         highlight: tuple[str, ...] = ()) -> Path:
    """rows: {chip label: {metric: value}}; one panel per metric, one bar per chip."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.6), squeeze=False)
    names = list(rows)
    for ax, m in zip(axes[0], metrics):
        vals = [rows[n].get(m) or 0.0 for n in names]
        cols = ["#d62728" if n in highlight else "#7f7f7f" for n in names]
        top = sorted(vals)[-2] * 1.8 if len(vals) > 1 and sorted(vals)[-1] > 4 * sorted(vals)[-2] > 0 else None
        ax.barh(range(len(names)), [min(v, top) if top else v for v in vals], color=cols)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(LABELS.get(m, m), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        for i, v in enumerate(vals):   # an outlier is drawn to the edge and labelled with its value
            txt = (f"{v:,.0f}" if v >= 100 else f"{v:.3g}") + (" (off scale)" if top and v > top else "")
            ax.text(min(v, top) if top else v, i, " " + txt, va="center", fontsize=7,
                    ha="right" if top and v > top else "left", color="white" if top and v > top else "black")
        if top:
            ax.set_xlim(0, top)
        else:
            ax.margins(x=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def stack_bars(groups: dict[str, dict[str, tuple]], path: Path, *, labels: tuple[str, str] = ("as deployed", "ideal stack"),
               title: str = "") -> Path:
    """groups: {panel (workload): {chip: (deployed, ideal)}}; per chip a pair of bars, labelled with the
    ratio ideal / deployed (the software moat). A missing value (None) is an empty bar marked "-"."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 0.5 + 0.45 * max(map(len, groups.values()))),
                             squeeze=False)
    for ax, (panel, rows) in zip(axes[0], groups.items()):
        names = list(rows)
        for j, (lab, col) in enumerate(zip(labels, ("#7f7f7f", "#3b6ea5"))):
            vals = [rows[n][j] or 0.0 for n in names]
            ax.barh([i + (j - 0.5) * 0.38 for i in range(len(names))], vals, height=0.38, color=col, label=lab)
        for i, n in enumerate(names):
            d, ide = rows[n]
            txt = f" {ide / d:.2f}x" if d and ide else " -"
            ax.text(max(d or 0, ide or 0), i, txt, va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(LABELS["tok_s_per_chip"], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=2, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def scatter_check(pairs: dict[str, tuple[float, float]], path: Path, *, xlabel: str, ylabel: str, title: str = "") -> Path:
    """Named points (x, y) with the y = x line: e.g. analytic vs simulated throughput."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    xs = [v[0] for v in pairs.values()]
    ys = [v[1] for v in pairs.values()]
    chips = list(dict.fromkeys(n.split(" / ")[0] for n in pairs))
    groups = list(dict.fromkeys(n.split(" / ")[-1] for n in pairs))
    for n, (x, y) in pairs.items():
        c, g = n.split(" / ")[0], n.split(" / ")[-1]
        ax.scatter([x], [y], s=40, c=[f"C{chips.index(c) % 10}"], marker=MARKERS[groups.index(g) % len(MARKERS)],
                   edgecolors="black", linewidths=0.4)
    for c in chips:
        ax.scatter([], [], c=[f"C{chips.index(c) % 10}"], s=30, label=c)
    for g in groups:
        ax.scatter([], [], c="white", edgecolors="black", marker=MARKERS[groups.index(g) % len(MARKERS)], s=30, label=g)
    hi = max(xs + ys + [1.0]) * 1.1
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="y = x")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
