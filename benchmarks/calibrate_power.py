"""Fit the H100's effective energies on its measured board power; write src/tapeout/data/energy/fit-hopper.toml.

    .venv/bin/python benchmarks/calibrate_power.py            # fit, print, write the data file
    .venv/bin/python benchmarks/calibrate_power.py --dry-run  # fit and print only

Model (src/tapeout/energy.py), for each measured entry i with duration t_i at SM clock f_i:

    P_i = idle + [ (e_bf16 m16_i + e_fp8 m8_i + e_path D_i + F_i) (f_i / f_max)^(alpha-1) + IO_i ] / t_i

m16, m8: bf16 / fp8 MACs; D: DRAM bytes; F: the core-domain energy fixed by the bottom-up tables
(vector flops, shared memory and L2 bytes at 4N); IO: the DRAM device energy (HBM3 pJ/bit) — all
counted by benchmarks/power_check.py from the shapes. Idle is the measured 129.7 W.

Unknowns, all at the max clock (1980 MHz):
  e_bf16, e_fp8  effective energy per tensor-core MAC: the multiplier plus everything the SM spends
                 to feed it (register file and shared-memory operand reads, instruction issue, clock
                 tree) and the rise of leakage under load above idle;
  e_path         on-chip energy per DRAM byte beyond the HBM device: memory controller, crossbar,
                 L2 slices and the SMs' load/store path;
  alpha          DVFS exponent: compute-bound dynamic power ~ (f / f_max)^alpha.
For a fixed alpha the model is linear in the energies: weighted least squares on relative error
(rows divided by the measured power), alpha by a grid search over [1.5, 3.5]. Leave-one-out errors
show how well each entry is predicted when it is not in the fit.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from power_check import entries  # noqa: E402

from tapeout.chip import load_chip  # noqa: E402
from tapeout.energy import fixed_energies  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "src/tapeout/data/energy/fit-hopper.toml"
ALPHAS = np.round(np.arange(1.5, 3.5001, 0.01), 2)


def _rows(chip, xs):
    """Per entry: (features [m16, m8, D] in J/pJ units, target, measured W) for the linear solve at a given alpha."""
    e = fixed_energies(chip)
    out = []
    for x in xs:
        a = x.activity
        fixed = 1e-12 * (a.vector_flops * e.vector_pj_per_flop + a.sram_bytes * e.sram_pj_per_byte
                         + a.shared_buffer_bytes * e.shared_buffer_pj_per_byte)
        io = 1e-12 * (a.dram_bytes * e.dram_pj_per_byte + a.link_bytes * e.link_pj_per_byte)
        feats = 1e-12 * np.array([a.macs.get("bf16", 0.0), a.macs.get("fp8", 0.0), a.dram_bytes])
        out.append((feats, fixed, io, x.seconds, x.clock_hz / chip.max_clock_hz, x.watts))
    return out, e.idle_w


def solve(rows, idle: float, alpha: float):
    A, b = [], []
    for feats, fixed, io, t, r, w in rows:
        v = r ** (alpha - 1.0)
        A.append(feats * v / t / w)
        b.append(((w - idle) - (io + fixed * v) / t) / w)
    A, b = np.array(A), np.array(b)
    used = A.any(axis=0)
    x = np.zeros(3)
    x[used] = np.linalg.lstsq(A[:, used], b, rcond=None)[0]
    return x, A @ x - b      # energies (pJ), relative residuals


def fit(rows, idle: float):
    best = min(((float(np.sum(solve(rows, idle, a)[1] ** 2)), a) for a in ALPHAS), key=lambda t: t[0])
    x, res = solve(rows, idle, best[1])
    return x, float(best[1]), res


def predict(x, alpha, row, idle):
    feats, fixed, io, t, r, w = row
    v = r ** (alpha - 1.0)
    return idle + ((feats @ x + fixed) * v + io) / t


def main(argv: list[str]) -> int:
    chip = load_chip("h100-sxm")
    xs = [x for x in entries() if x.name != "idle"]
    rows, idle = _rows(chip, xs)
    x, alpha, res = fit(rows, idle)
    if np.any(x <= 0):
        print(f"fit gave a non-positive energy {x}: check the counts", file=sys.stderr)
        return 1
    print(f"alpha = {alpha:.2f};  e_bf16 = {x[0]:.3f} pJ/MAC, e_fp8 = {x[1]:.3f} pJ/MAC, e_path = {x[2]:.1f} pJ/B (at 1980 MHz)")
    print(f"{'entry':32s} {'meas W':>7s} {'fit W':>7s} {'err':>6s} {'leave-one-out W':>16s} {'err':>6s}")
    loo = {}
    for i, (xi, row) in enumerate(zip(xs, rows)):
        fit_w = predict(x, alpha, row, idle)
        others = rows[:i] + rows[i + 1:]
        if xi.activity.macs.get("fp8"):
            lo_txt = f"{'(only fp8 entry)':>16s} {'':>6s}"
        else:
            xo, ao, _ = fit(others, idle)
            lw = predict(xo, ao, row, idle)
            loo[xi.name] = lw / row[5] - 1
            lo_txt = f"{lw:16.0f} {100 * loo[xi.name]:+5.1f}%"
        print(f"{xi.name:32s} {row[5]:7.0f} {fit_w:7.0f} {100 * (fit_w / row[5] - 1):+5.1f}% {lo_txt}")
    if "--dry-run" not in argv:
        OUT.write_text(_toml(x, alpha, xs, res, loo))
        print(f"wrote {OUT.relative_to(OUT.parents[4])}")
    return 0


def _toml(x, alpha, xs, res, loo) -> str:
    fitted = "; ".join(f"{e.name} {100 * r:+.1f}%" for e, r in zip(xs, res))
    loo_txt = "; ".join(f"{k} {100 * v:+.1f}%" for k, v in loo.items())
    q = lambda key, v, unit, note: (f'[{key}]\nvalue = {v:.6g}\nunit = "{unit}"\nref = "benchmarks/calibrate_power.py"\n'
                                    f'confidence = "fitted"\nnote = "{note}"\n')
    return "\n".join([
        "# Written by benchmarks/calibrate_power.py: do not edit by hand, rerun the script.",
        "# Effective H100 energies at the max clock (1980 MHz), fitted on measured board power.",
        "[meta]", 'chip = "h100-sxm"', 'family = "hopper"',
        'calibration = "src/tapeout/data/calibration/h100-sxm.json (power entries, measured 2026-11-27)"',
        f'written = "{datetime.date.today().isoformat()}"',
        f'entries = "{", ".join(e.name for e in xs)}"',
        f'fit_residuals = "{fitted}"', f'leave_one_out = "{loo_txt}"', "",
        "[references]", 'CAL = "src/tapeout/data/calibration/h100-sxm.json"', "",
        q("mac_pj.bf16", x[0], "pJ/MAC", "tensor-core bf16 MAC with its operand delivery, issue, clock tree and load-dependent leakage, at 1980 MHz"),
        q("mac_pj.fp8", x[1], "pJ/MAC", "as bf16, for fp8 (two fp8 MACs per bf16 slot)"),
        q("memory_path_pj_per_byte", x[2], "pJ/B", "on-chip energy per DRAM byte beyond the HBM device: controller, crossbar, L2, SM load/store path"),
        q("alpha", alpha, "", "DVFS exponent: compute-bound dynamic power ~ (f/f_max)^alpha; grid search 1.5..3.5"),
    ])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
