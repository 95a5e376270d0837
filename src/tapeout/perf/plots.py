"""Plots of the performance model (matplotlib, imported only here)."""
from __future__ import annotations

from pathlib import Path

from ..chip import load_chip
from ..plotting import pyplot
from .api import estimate




def roofline_plot(model, chip, out: Path, **kw) -> Path:
    """Each kernel of the prefill and decode steps at its arithmetic intensity and achieved FLOP/s."""
    plt = pyplot()
    c = load_chip(chip)
    r = estimate(model, c, check_memory=False, **kw)
    dtype = r.settings["activations"] if r.settings["activations"] in ("fp8", "int8") else "bf16"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for step, color, marker in ((r.prefill, "tab:red", "o"), (r.decode, "tab:blue", "s")):
        pts = [(kt.kernel.flops / max(kt.kernel.bytes_read + kt.kernel.bytes_written, 1),
                kt.kernel.flops * kt.kernel.count / kt.seconds, kt.seconds, kt.kernel.name)
               for kt in step.kernels if kt.kernel.flops > 0 and kt.seconds > 0]
        total = sum(p[2] for p in pts) or 1
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=[20 + 600 * p[2] / total for p in pts],
                   c=color, marker=marker, alpha=0.6, label=f"{'prefill' if step is r.prefill else 'decode'} "
                   f"(clock {step.clock_hz / 1e9:.2f} GHz)")
        for x, y, t, name in sorted(pts, key=lambda p: -p[2])[:4]:
            ax.annotate(name, (x, y), fontsize=7, alpha=0.8)
    bw = c.dram.bandwidth_bytes_per_s or c.shared_buffer.bandwidth_bytes_per_s
    for clk, style in ((c.max_clock_hz, "-"), (r.prefill.clock_hz, ":")):
        peak = c.peak_flops(dtype, clk)
        xs = [0.1, peak / bw, 1e5]
        ax.plot(xs, [min(peak, x * bw) for x in xs], "k" + style, lw=1,
                label=f"roofline {dtype} at {clk / 1e9:.2f} GHz ({peak / 1e12:.0f} TFLOP/s, {bw / 1e12:.2f} TB/s)")
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / DRAM byte)"); ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"{r.model} on {c.name}: batch {r.batch}, prompt {r.prompt} (marker area = share of step time)")
    ax.legend(fontsize=8, loc="lower right"); ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
