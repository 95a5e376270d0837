"""Energy and power of a workload on a chip: counted actions x energy per action, plus static power.

    power = idle_w + (E_core(f) + E_io) / seconds
    E_core(f) = E_core(f_max) * (f / f_max)^(alpha - 1)     # MACs, vector flops, SRAM, L2, on-chip DRAM path
    E_io = dram_bytes * e_dram_device + link_bytes * e_link  # off-chip I/O: not in the core clock domain

Dynamic energy per action ~ C V^2 and V rises with f, so each core-domain action costs less at a
lower clock; compute-bound work at clock f then draws (f / f_max)^alpha of its max-clock dynamic
power. `sustained_clock_hz` lowers the clock until the average power fits the TDP.

Energies per action come from data tables, every number with its source (src/tapeout/data/energy/):
- ops_45nm.toml: bare MAC / flop / SRAM energies at 45 nm (Horowitz, ISSCC 2014),
- nodes.toml: the energy factor of each process node (foundry iso-speed power claims),
- memory.toml: DRAM pJ/bit by type, link pJ/bit,
- kinds.toml: per-kind overheads (systolic NPUs vs SIMT GPUs), idle fraction, DVFS alpha,
- fit-hopper.toml: effective H100 values fitted on measured board power (benchmarks/calibrate_power.py).
GPUs scale the fitted H100 values by node; other kinds build up from the bare energies.

    >>> from tapeout.chip import load_chip
    >>> h100 = load_chip("h100-sxm")
    >>> act = Activity(macs={"bf16": 8192**3})
    >>> 1e9 < sustained_clock_hz(h100, act, 1.3e-3, 1.0) < h100.max_clock_hz
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Mapping

from .chip import load_chip
from .errors import TapeoutError
from .sourced import interp_loglog, load_table, values

CORE_COMPONENTS = ("mac", "vector", "sram", "shared_buffer", "memory_path")
IO_COMPONENTS = ("dram", "link")
FIT_FILES = {"hopper": "energy/fit-hopper.toml"}   # family -> fitted table; GPUs of other families scale "hopper"
REFERENCE_GPU_FIT = "hopper"
PJ = 1e-12


@dataclass(frozen=True)
class Activity:
    """What a workload does, counted (not rates). Counting conventions:

    macs: dtype -> multiply-accumulates on the matrix units (a GEMM M x N x K is M*N*K MACs);
    vector_flops: vector-unit flops (elementwise, softmax, norms; an FMA is 2);
    sram_bytes: bytes read + written in core-local SRAM / shared memory;
    shared_buffer_bytes: bytes read + written in the L2 / global buffer (on a GPU every DRAM byte
        also passes through L2 and counts here too);
    dram_bytes: bytes read + written in DRAM; link_bytes: bytes sent over chip-to-chip links.
    """
    macs: Mapping[str, float] = field(default_factory=dict)
    vector_flops: float = 0.0
    sram_bytes: float = 0.0
    shared_buffer_bytes: float = 0.0
    dram_bytes: float = 0.0
    link_bytes: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            for k, x in (v.items() if f.name == "macs" else [(f.name, v)]):
                if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0):
                    raise TapeoutError(f"Activity.{f.name}{'' if k == f.name else '.' + k}: must be a finite count >= 0, got {x!r}")

    def __add__(self, other: "Activity") -> "Activity":
        macs = dict(self.macs)
        for d, n in other.macs.items():
            macs[d] = macs.get(d, 0.0) + n
        return Activity(macs, *(getattr(self, f) + getattr(other, f) for f in _SCALARS))

    def scaled(self, k: float) -> "Activity":
        return Activity({d: n * k for d, n in self.macs.items()}, *(getattr(self, f) * k for f in _SCALARS))


_SCALARS = ("vector_flops", "sram_bytes", "shared_buffer_bytes", "dram_bytes", "link_bytes")


@dataclass(frozen=True)
class ActionEnergies:
    """Energy per action on one chip at its max clock (pJ), with the basis they were derived on."""
    mac_pj: dict[str, float]
    vector_pj_per_flop: float
    sram_pj_per_byte: float
    shared_buffer_pj_per_byte: float
    memory_path_pj_per_byte: float
    dram_pj_per_byte: float
    link_pj_per_byte: float
    idle_w: float
    tdp_w: float
    alpha: float
    max_clock_hz: float
    floor_clock_hz: float
    basis: str


@dataclass(frozen=True)
class PowerBreakdown:
    static_w: float
    dynamic_w: dict[str, float]   # mac, vector, sram, shared_buffer, memory_path, dram, link
    total_w: float
    clock_hz: float
    seconds: float

    @property
    def energy_j(self) -> float:
        return self.total_w * self.seconds


# ----------------------------------------------------------------------------- data

@lru_cache(maxsize=None)
def _tables() -> dict:
    return {name: values(load_table(f"energy/{name}.toml")) for name in ("ops_45nm", "nodes", "memory", "kinds")}


@lru_cache(maxsize=None)
def _fit(family: str) -> dict:
    """The fitted table of a GPU family, with `chip` (the Chip it was fitted on) added."""
    raw = load_table(FIT_FILES[family])
    return {**values(raw), "chip": load_chip(raw["meta"]["chip"])}


def node_factor(node_nm: float) -> float:
    """Dynamic energy per operation at `node_nm` relative to 45 nm (nodes.toml)."""
    table = {float(k): v for k, v in _tables()["nodes"]["factor"].items()}
    return interp_loglog(table, float(node_nm), "chip.process_node_nm (energy/nodes.toml)")


def bare_sram_pj_per_byte(size_bytes: float) -> float:
    """Access energy per byte of an SRAM array of `size_bytes` at 45 nm: Horowitz's 8 KB / 32 KB /
    1 MB points interpolated log-log, clamped below 8 KB, banks of 1 MB plus wires beyond."""
    ops = _tables()["ops_45nm"]
    pts = {float(k): v for k, v in ops["sram_pj_per_byte"].items()}
    lo, hi = min(pts), max(pts)
    if size_bytes <= lo:
        return pts[lo]
    if size_bytes <= hi:
        return interp_loglog(pts, size_bytes, "sram size")
    return pts[hi] + ops["sram_wire_pj_per_byte_per_sqrt_mib"] * (math.sqrt(size_bytes / hi) - 1.0)


def _ref_mpc(chip) -> float:
    for d in ("bf16", "fp16"):
        if chip.supports(d):
            return chip.macs_per_cycle(d)
    return max(chip.cores.matrix.macs_per_cycle.values())


def _gpu_macs(chip, fit: dict, scale: float) -> dict[str, float]:
    """GPU MAC energies: the fitted bf16 value, node-scaled; other dtypes by the chip's own throughput
    ratio: e(d) = e(bf16) * (MACs/cycle of bf16 / MACs/cycle of d)^gamma, gamma fitted from bf16 vs fp8."""
    ref_chip = fit["chip"]
    e16, e8 = fit["mac_pj"]["bf16"], fit["mac_pj"]["fp8"]
    ratio = ref_chip.macs_per_cycle("fp8") / ref_chip.macs_per_cycle("bf16")
    gamma = math.log(e16 / e8) / math.log(ratio)
    ref = _ref_mpc(chip)
    return {d: e16 * scale * (ref / m) ** gamma for d, m in chip.cores.matrix.macs_per_cycle.items() if m > 0}


def fixed_energies(chip) -> ActionEnergies:
    """The per-action energies that do not depend on a power fit (the fitted fields are left 0)."""
    t = _tables()
    kind, nf = chip.chip.kind, node_factor(chip.chip.process_node_nm)
    ops, kinds, mem = t["ops_45nm"], t["kinds"], t["memory"]
    idle = chip.chip.idle_w if chip.chip.idle_w is not None else kinds["idle_fraction"][kind] * chip.chip.tdp_w
    nfc = nf * kinds["clock_overhead"][kind]
    return ActionEnergies(
        mac_pj={}, vector_pj_per_flop=ops["vector_pj_per_flop"] * nfc * kinds["vector_overhead"][kind],
        sram_pj_per_byte=bare_sram_pj_per_byte(chip.cores.sram.bytes) * nfc,
        shared_buffer_pj_per_byte=bare_sram_pj_per_byte(chip.shared_buffer.bytes) * nfc if chip.shared_buffer.bytes else 0.0,
        memory_path_pj_per_byte=0.0,
        dram_pj_per_byte=mem["dram_pj_per_bit"].get(chip.dram.type, 0.0) * 8.0,
        link_pj_per_byte=mem["link_pj_per_bit"] * 8.0,
        idle_w=float(idle), tdp_w=chip.chip.tdp_w, alpha=0.0, max_clock_hz=chip.max_clock_hz,
        floor_clock_hz=kinds["clock_floor_fraction"] * chip.max_clock_hz, basis="")


def _build(chip) -> ActionEnergies:
    kinds = _tables()["kinds"]
    kind, nf = chip.chip.kind, node_factor(chip.chip.process_node_nm)
    fit = _fit(chip.chip.family) if chip.chip.family in FIT_FILES else _fit(REFERENCE_GPU_FIT)
    fit_chip = fit["chip"]
    scale = nf / node_factor(fit_chip.chip.process_node_nm)
    same_die = chip.chip.family in FIT_FILES
    if same_die:   # same silicon and V-f curve: a lower max clock sits at a lower voltage
        scale *= (chip.max_clock_hz / fit_chip.max_clock_hz) ** (fit["alpha"] - 1.0)
    path_gpu = fit["memory_path_pj_per_byte"] * scale
    if kind == "gpu":
        macs, path, alpha = _gpu_macs(chip, fit, scale), path_gpu, fit["alpha"]
        basis = (f"fitted on {fit_chip.name}" + (f", at its {chip.max_clock_hz / 1e9:.3g} GHz max clock" if chip is not fit_chip else "")
                 if same_die else
                 f"{fit_chip.name} fit scaled by node ({chip.chip.process_node_nm:g} vs {fit_chip.chip.process_node_nm:g} nm)")
    else:
        bare = _tables()["ops_45nm"]["mac_pj"]
        k = nf * kinds["mac_overhead"][kind] * kinds["clock_overhead"][kind]
        macs = {d: bare[d] * k for d, m in chip.cores.matrix.macs_per_cycle.items() if m > 0}
        path, alpha = path_gpu * kinds["memory_path_vs_gpu"][kind], kinds["alpha"][kind]
        v = voltage_factor(chip, fit["alpha"])  # the V-f curve measured on real silicon (the H100 fit)
        basis = (f"bottom-up: 45 nm energies x node factor {nf:.3f} x {kind} overheads (kinds.toml) x "
                 f"{v:.2f} for a {chip.max_clock_hz / 1e9:.3g} GHz design clock (nodes.toml nominal_clock_hz)")
        fixed = fixed_energies(chip)
        return replace(fixed, mac_pj={d: e * v for d, e in macs.items()}, vector_pj_per_flop=fixed.vector_pj_per_flop * v,
                       sram_pj_per_byte=fixed.sram_pj_per_byte * v, shared_buffer_pj_per_byte=fixed.shared_buffer_pj_per_byte * v,
                       memory_path_pj_per_byte=path * v if chip.dram.type != "none" else 0.0, alpha=alpha, basis=basis)
    return replace(fixed_energies(chip), mac_pj=macs, memory_path_pj_per_byte=path if chip.dram.type != "none" else 0.0,
                   alpha=alpha, basis=basis)


VOLTAGE_FACTOR_FLOOR = 0.5  # below ~half the nominal energy the supply is at its minimum voltage


def voltage_factor(chip, alpha: float) -> float:
    """Core-domain energy per action of a design clocked at its max clock, relative to the node's
    nominal operating point: (f_max / f_nominal)^(alpha - 1), alpha the exponent of a measured
    voltage-frequency curve (energy per action ~ V^2)."""
    table = {float(k): v for k, v in _tables()["nodes"]["nominal_clock_hz"].items()}
    node = min(max(float(chip.chip.process_node_nm), min(table)), max(table))
    f_nom = interp_loglog(table, node, "chip.process_node_nm (energy/nodes.toml nominal_clock_hz)")
    return max(VOLTAGE_FACTOR_FLOOR, (chip.max_clock_hz / f_nom) ** (alpha - 1.0))


_CACHE: dict[int, tuple] = {}


def action_energies(chip) -> ActionEnergies:
    """The per-action energies of `chip` at its max clock (cached per Chip object)."""
    hit = _CACHE.get(id(chip))
    if hit is not None and hit[0] is chip:
        return hit[1]
    if len(_CACHE) > 4096:
        _CACHE.clear()
    e = _build(chip)
    _CACHE[id(chip)] = (chip, e)
    return e


# ----------------------------------------------------------------------------- model

def _split(chip, a: Activity, e: ActionEnergies) -> dict[str, float]:
    """Energy (J) of each component at the max clock."""
    mac = 0.0
    for d, n in a.macs.items():
        if n:
            pj = e.mac_pj.get(d)
            if pj is None:
                raise TapeoutError(f"Activity.macs.{d}: chip {chip.name} has no {d} matrix support "
                                   f"(it has {', '.join(e.mac_pj) or 'none'})")
            mac += n * pj
    return {"mac": mac * PJ, "vector": a.vector_flops * e.vector_pj_per_flop * PJ,
            "sram": a.sram_bytes * e.sram_pj_per_byte * PJ,
            "shared_buffer": a.shared_buffer_bytes * e.shared_buffer_pj_per_byte * PJ,
            "memory_path": a.dram_bytes * e.memory_path_pj_per_byte * PJ,
            "dram": a.dram_bytes * e.dram_pj_per_byte * PJ, "link": a.link_bytes * e.link_pj_per_byte * PJ}


def _clock(e: ActionEnergies, clock_hz: float | None) -> float:
    f = e.max_clock_hz if clock_hz is None else float(clock_hz)
    if not 0 < f <= e.max_clock_hz * (1 + 1e-9):
        raise TapeoutError(f"clock_hz {f:g}: must be in (0, max clock {e.max_clock_hz:g}]")
    return f


def power_w(chip, activity: Activity, seconds: float, clock_hz: float | None = None) -> PowerBreakdown:
    """Average power (uncapped) if `activity` takes `seconds` at `clock_hz` (default: max clock)."""
    if not seconds > 0:
        raise TapeoutError(f"seconds: must be > 0, got {seconds!r}")
    e = action_energies(chip)
    f = _clock(e, clock_hz)
    v2 = (f / e.max_clock_hz) ** (e.alpha - 1.0)
    parts = _split(chip, activity, e)
    dyn = {k: (j * v2 if k in CORE_COMPONENTS else j) / seconds for k, j in parts.items()}
    return PowerBreakdown(e.idle_w, dyn, e.idle_w + sum(dyn.values()), f, seconds)


def energy_j(chip, activity: Activity, seconds: float, clock_hz: float | None = None) -> float:
    """Energy (J) of `activity` taking `seconds` at `clock_hz`: static x seconds + dynamic energy."""
    return power_w(chip, activity, seconds, clock_hz).energy_j


def idle_w(chip) -> float:
    """Board power of the idle chip: the chip file's idle_w, else the kind's idle fraction of TDP."""
    return action_energies(chip).idle_w


def sustained_clock_hz(chip, activity: Activity, seconds_at_max_clock: float, compute_fraction: float) -> float:
    """The clock at which `chip` runs `activity` within its TDP.

    The work takes `seconds_at_max_clock` at the max clock; `compute_fraction` of that time scales
    with 1/clock, the rest (memory-bound) does not. Returns the max clock when the power fits,
    otherwise the clock where average power == TDP, never below the floor (kinds.toml)."""
    e = action_energies(chip)
    if not seconds_at_max_clock > 0 or not 0.0 <= compute_fraction <= 1.0:
        raise TapeoutError(f"sustained_clock_hz: need seconds_at_max_clock > 0 and 0 <= compute_fraction <= 1, "
                           f"got {seconds_at_max_clock!r}, {compute_fraction!r}")
    parts = _split(chip, activity, e)
    ec = parts["mac"] + parts["vector"] + parts["sram"] + parts["shared_buffer"] + parts["memory_path"]
    eio = parts["dram"] + parts["link"]
    budget = (e.tdp_w - e.idle_w) * seconds_at_max_clock
    r = _solve_ratio(ec, eio, budget, compute_fraction, e.alpha - 1.0, e.floor_clock_hz / e.max_clock_hz)
    return r * e.max_clock_hz


def _solve_ratio(ec: float, eio: float, budget: float, cf: float, k: float, lo: float) -> float:
    """Largest r = f/f_max in [lo, 1] with ec r^k + eio <= budget (cf/r + 1 - cf); g is increasing in r."""
    def g(r: float) -> float:
        return ec * r ** k + eio - budget * (cf / r + 1.0 - cf)

    if g(1.0) <= 0.0:
        return 1.0
    if budget <= 0.0 or g(lo) >= 0.0:
        return lo
    a, b, r = lo, 1.0, 1.0
    for _ in range(60):
        gr = g(r)
        if abs(gr) <= 1e-12 * (ec + eio + budget):
            break
        a, b = (r, b) if gr < 0 else (a, r)
        d = ec * k * r ** (k - 1.0) + budget * cf / (r * r)
        rn = r - gr / d if d > 0 else 0.5 * (a + b)
        r = rn if a < rn < b else 0.5 * (a + b)
        if b - a < 1e-10:
            break
    return r


def sustained_power(chip, activity: Activity, seconds_at_max_clock: float, compute_fraction: float) -> PowerBreakdown:
    """`power_w` at the sustained clock, with the time stretched by the slower clock."""
    f = sustained_clock_hz(chip, activity, seconds_at_max_clock, compute_fraction)
    r = f / chip.max_clock_hz
    t = seconds_at_max_clock * (compute_fraction / r + 1.0 - compute_fraction)
    return power_w(chip, activity, t, f)
