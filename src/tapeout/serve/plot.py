"""Latency-throughput plot of a rate sweep (matplotlib, imported only here)."""
from __future__ import annotations

from pathlib import Path

from ..plotting import pyplot




def sweep_plot(results, out: str | Path, title: str = "") -> Path:
    """p50/p99 TTFT and TPOT against output tokens/s per chip, one point per request rate, SLOs dashed."""
    plt = pyplot()
    x = [r.metrics["throughput_tok_s_per_chip"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "ttft_s", "TTFT (s)"), (axes[1], "tpot_s", "TPOT (ms)")):
        scale = 1e3 if key == "tpot_s" else 1.0
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ax.plot(x, [r.metrics[key][q] * scale for r in results], style, label=q)
        slo = results[0].metrics["slo"][key]
        ax.axhline(slo * scale, color="tab:red", lw=1, ls=":", label=f"SLO {slo * scale:g}")
        for xi, r in zip(x, results):
            ax.annotate(f"{r.settings['rate']:.3g}/s", (xi, r.metrics[key]["p99"] * scale), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel("output tokens/s per chip")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    s = results[0].settings
    fig.suptitle(title or f"{s['model']} on {s['chips']}x {s['chip']} (tp={s['tp']}, {s['scheduler']})")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
