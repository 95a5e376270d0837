"""A design point: knob values applied to a base chip, and the physical checks every design must pass.

A knob is one entry of `KNOBS` (name -> function(chip, value, base) -> chip). Knobs change the
chip's own numbers; `derive` then recomputes what depends on them, so that a point stays
consistent with its parameters:

    peaks               dropped: the base file's quoted peaks no longer apply (Chip.peak_flops derives them)
    die_area_mm2        dropped: the area model (tapeout.area) gives the die of the new design
    idle_w              the base's idle power x (model area of the point / model area of the base):
                        static power (leakage, clock tree, idle I/O) grows with the silicon
    shared buffer B/s   the base's bytes per core-cycle x cores x clock
    vector lanes, SFUs  the base's per array column x the array's columns (unless `vector_lanes` is set)
    core SRAM B/cycle   the base's x (rows + cols) / (base rows + cols): the array's edge is fed every cycle
    DRAM                `dram` (type) x `dram_stacks` parts of data/studies/parts.toml

`physicals(chip, base, constraints)` returns area, cost and power of a design, or the reason it
cannot be built (over the reticle, over the TDP at the lowest clock, a memory type that cannot be
bought, ...): an infeasible point is recorded with its reason, never dropped.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, replace
from functools import lru_cache

from ..area import area_mm2
from ..chip import DRAM_TYPES, Chip, Peaks
from ..cost import ReticleError, cost_usd, reticle_mm2
from ..energy import Activity, action_energies, idle_w, power_w
from ..errors import TapeoutError
from ..sourced import table


class Infeasible(Exception):
    """A design point that cannot be built or cannot serve: carries the one-line reason."""


@lru_cache(maxsize=None)
def parts() -> dict:
    return table("studies/parts.toml")


# ----------------------------------------------------------------------------- knobs

def _cores(c: Chip, v, base: Chip) -> Chip:
    return replace(c, cores=replace(c.cores, count=int(v)))


def _array_shape(v) -> tuple[int, int]:
    if isinstance(v, str) and "x" in v:
        r, _, col = v.partition("x")
        if r.strip().isdigit() and col.strip().isdigit():
            return int(r), int(col)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    raise TapeoutError(f"array: {v!r}: write 'ROWSxCOLS', e.g. '128x128'")


def _array(c: Chip, v, base: Chip) -> Chip:
    """Rows x cols of each matrix unit; MACs per cycle of every dtype scale with rows x cols."""
    r, col = _array_shape(v)
    m0 = base.cores.matrix
    if not (m0.array_rows and m0.array_cols):
        raise TapeoutError(f"array: the base chip {base.name} states no cores.matrix.array_rows/array_cols")
    k = r * col / (m0.array_rows * m0.array_cols)
    mpc = {d: n * k for d, n in m0.macs_per_cycle.items()}
    return replace(c, cores=replace(c.cores, matrix=replace(c.cores.matrix, array_rows=r, array_cols=col,
                                                            macs_per_cycle=mpc)))


def _clock(c: Chip, v, base: Chip) -> Chip:
    return replace(c, cores=replace(c.cores, clock_hz=float(v), max_clock_hz=None))


def _sram(c: Chip, v, base: Chip) -> Chip:
    return replace(c, cores=replace(c.cores, sram=replace(c.cores.sram, bytes=float(v))))


def _buffer(c: Chip, v, base: Chip) -> Chip:
    return replace(c, shared_buffer=replace(c.shared_buffer, bytes=float(v)))


def _dram_type(c: Chip, v, base: Chip) -> Chip:
    if v not in DRAM_TYPES or v == "none":
        raise TapeoutError(f"dram: {v!r}: use one of {', '.join(t for t in DRAM_TYPES if t != 'none')}")
    return replace(c, dram=replace(c.dram, type=str(v)))


def _dram_stacks(c: Chip, v, base: Chip) -> Chip:
    return replace(c, dram=replace(c.dram, stacks=int(v)))


def _links(c: Chip, v, base: Chip) -> Chip:
    return replace(c, links=replace(c.links, chip_to_chip=replace(c.links.chip_to_chip, count=int(v))))


def _link_bw(c: Chip, v, base: Chip) -> Chip:
    return replace(c, links=replace(c.links, chip_to_chip=replace(c.links.chip_to_chip, bandwidth_bytes_per_s=float(v))))


def _topology(c: Chip, v, base: Chip) -> Chip:
    return replace(c, links=replace(c.links, chip_to_chip=replace(c.links.chip_to_chip, topology=str(v))))


def _tdp(c: Chip, v, base: Chip) -> Chip:
    return replace(c, chip=replace(c.chip, tdp_w=float(v)))


def _node(c: Chip, v, base: Chip) -> Chip:
    return replace(c, chip=replace(c.chip, process_node_nm=float(v)))


def _lanes(c: Chip, v, base: Chip) -> Chip:
    return replace(c, cores=replace(c.cores, vector=replace(c.cores.vector, lanes=int(v))))


# name -> (apply, what it sets); `link_bytes_per_s` is per link, one direction
KNOBS = {
    "cores": (_cores, "cores.count"),
    "array": (_array, "cores.matrix array_rows x array_cols ('128x128'); MACs/cycle scale with it"),
    "clock_hz": (_clock, "cores.clock_hz (the max clock; DVFS lowers it under the TDP)"),
    "core_sram_bytes": (_sram, "cores.sram.bytes (per core)"),
    "shared_buffer_bytes": (_buffer, "shared_buffer.bytes"),
    "dram": (_dram_type, "dram.type (bandwidth and capacity per stack from data/studies/parts.toml)"),
    "dram_stacks": (_dram_stacks, "HBM stacks, or 32-bit channels of GDDR/LPDDR"),
    "links": (_links, "links.chip_to_chip.count"),
    "link_bytes_per_s": (_link_bw, "bandwidth of one chip-to-chip link, one direction"),
    "link_topology": (_topology, "links.chip_to_chip.topology (default: the base's if links >= node - 1, else ring/torus)"),
    "tdp_w": (_tdp, "chip.tdp_w"),
    "process_node_nm": (_node, "chip.process_node_nm"),
    "vector_lanes": (_lanes, "cores.vector.lanes (default: scaled with the array's columns)"),
}
ORDER = tuple(KNOBS)


def check_knob(name: str, where: str) -> None:
    if name not in KNOBS:
        m = difflib.get_close_matches(name, KNOBS, n=1)
        raise TapeoutError(f"{where}: unknown knob {name!r}" + (f" (did you mean {m[0]!r}?)" if m else "")
                           + f"; knobs: {', '.join(KNOBS)}")


# ----------------------------------------------------------------------------- derived values

def node_size() -> int:
    """Chips one link fabric connects for a new design (data/network.toml domain.default)."""
    return int(table("network.toml")["domain"]["default"])


def _derive_links(c: Chip, base: Chip, params: dict) -> Chip:
    """Total link bandwidth = links x per-link bandwidth; topology from the link count if not given."""
    l0, link = base.links.chip_to_chip, c.links.chip_to_chip
    per_link = params.get("link_bytes_per_s", l0.bandwidth_bytes_per_s / l0.count if l0.count else 0.0)
    n = link.count
    topo = params.get("link_topology")
    if topo is None:
        full = l0.topology != "fully-connected" or n >= node_size() - 1
        topo = "none" if n == 0 else l0.topology if full else "torus" if n >= 4 else "ring"
    link = replace(link, bandwidth_bytes_per_s=n * per_link, topology=topo if n else "none")
    return replace(c, links=replace(c.links, chip_to_chip=link))


def _derive_dram(c: Chip) -> Chip:
    t = c.dram.type
    p = parts()
    if t not in p["bytes_per_s"]:
        raise Infeasible(f"dram {t}: no part in data/studies/parts.toml")
    n = c.dram.stacks
    return replace(c, dram=replace(c.dram, bytes=n * p["bytes"][t], bandwidth_bytes_per_s=n * p["bytes_per_s"][t]))


def _derive_core(c: Chip, base: Chip, params: dict) -> Chip:
    m0, m = base.cores.matrix, c.cores.matrix
    col = (m.array_cols or 1) / (m0.array_cols or 1)
    edge = ((m.array_rows or 1) + (m.array_cols or 1)) / ((m0.array_rows or 1) + (m0.array_cols or 1))
    v0 = base.cores.vector
    lanes = c.cores.vector.lanes if "vector_lanes" in params else max(1, round(v0.lanes * col))
    k = lanes / v0.lanes
    vec = replace(c.cores.vector, lanes=lanes, flops_per_cycle=v0.flops_per_cycle * k,
                  special_functions_per_cycle=v0.special_functions_per_cycle and v0.special_functions_per_cycle * k)
    sram = replace(c.cores.sram, bandwidth_bytes_per_cycle=base.cores.sram.bandwidth_bytes_per_cycle * edge)
    per_core_cycle = base.shared_buffer.bandwidth_bytes_per_s / (base.cores.count * base.max_clock_hz)
    buf = replace(c.shared_buffer, bandwidth_bytes_per_s=per_core_cycle * c.cores.count * c.max_clock_hz)
    return replace(c, cores=replace(c.cores, vector=vec, sram=sram), shared_buffer=buf)


def point_chip(base: Chip, params: dict, name: str) -> Chip:
    """The chip of one design point: `params` (knob -> value) applied to `base`, derived values redone."""
    c = base
    for k in ORDER:
        if k in params:
            c = KNOBS[k][0](c, params[k], base)
    c = _derive_core(c, base, params)
    c = _derive_links(c, base, params)
    if "dram" in params or "dram_stacks" in params:
        c = _derive_dram(c)
    info = replace(c.chip, name=name, die_area_mm2=None, transistors=None, price_usd=None,
                   full_name=f"design point {name} of a sweep over {base.name}")
    return replace(c, chip=info, peaks=Peaks(), path="")


# ----------------------------------------------------------------------------- physical checks

@dataclass(frozen=True)
class Constraints:
    max_die_mm2: float | None = None        # per die (the reticle is always checked)
    max_area_mm2: float | None = None       # all dies together
    max_tdp_w: float | None = None
    min_process_node_nm: float | None = None  # the most advanced node obtainable (7: no 5 nm)
    memory_types: tuple[str, ...] | None = None  # obtainable DRAM types; None: any
    max_dram_stacks: int | None = None
    max_cost_usd: float | None = None


def constraints_from(d: dict, where: str) -> Constraints:
    names = {f.name for f in dataclasses.fields(Constraints)}
    for k in d:
        if k not in names:
            m = difflib.get_close_matches(k, names, n=1)
            raise TapeoutError(f"{where}.{k}: unknown constraint" + (f" (did you mean {m[0]!r}?)" if m else "")
                               + f"; known: {', '.join(sorted(names))}")
    kw = dict(d)
    if "memory_types" in kw:
        kw["memory_types"] = tuple(kw["memory_types"])
    return Constraints(**kw)


_BASE_AREA: dict[int, tuple[Chip, float]] = {}


def _base_area(base: Chip) -> float:
    """Model area of the base chip (memoized per Chip object: chips hold dicts, so cannot be hashed)."""
    hit = _BASE_AREA.get(id(base))
    if hit is None or hit[0] is not base:

        hit = _BASE_AREA[id(base)] = (base, area_mm2(base).total_mm2)
    return hit[1]


def _idle_w(base: Chip, area: float) -> float:
    return idle_w(base) * area / _base_area(base)


def _check_rules(c: Chip, k: Constraints) -> None:
    if k.min_process_node_nm is not None and c.chip.process_node_nm < k.min_process_node_nm:
        raise Infeasible(f"process {c.chip.process_node_nm:g} nm: the most advanced node obtainable is "
                         f"{k.min_process_node_nm:g} nm")
    if k.memory_types is not None and c.dram.type not in k.memory_types:
        raise Infeasible(f"dram {c.dram.type}: not obtainable (constraints.memory_types: {', '.join(k.memory_types)})")
    if k.max_dram_stacks is not None and c.dram.stacks > k.max_dram_stacks:
        raise Infeasible(f"dram_stacks {c.dram.stacks} > {k.max_dram_stacks} (constraints.max_dram_stacks)")
    if k.max_tdp_w is not None and c.chip.tdp_w > k.max_tdp_w:
        raise Infeasible(f"TDP {c.chip.tdp_w:.0f} W > {k.max_tdp_w:.0f} W (constraints.max_tdp_w)")
    link, d = c.links.chip_to_chip, node_size()
    if link.topology == "fully-connected" and 0 < link.count < d - 1:
        raise Infeasible(f"links {link.count}: a fully-connected {d}-chip node needs {d - 1} links per chip")


def _power_floor(c: Chip) -> tuple[float, float, str]:
    """(watts, floor clock, dtype) of the matrix units at full rate in their fastest dtype at the lowest clock."""
    e = action_energies(c)
    d = max(c.cores.matrix.macs_per_cycle, key=c.cores.matrix.macs_per_cycle.get)
    f = e.floor_clock_hz
    macs = c.cores.count * c.macs_per_cycle(d) * f * 1e-3
    return power_w(c, Activity({d: macs}), 1e-3, f).total_w, f, d


def physicals(c: Chip, base: Chip, k: Constraints) -> tuple[Chip, dict]:
    """(the chip with its idle power set, {area, cost, power facts}) or Infeasible(reason)."""
    _check_rules(c, k)
    a = area_mm2(c)
    if a.per_die_mm2 > reticle_mm2():
        raise Infeasible(f"die {a.per_die_mm2:.0f} mm2 is over the {reticle_mm2():.0f} mm2 reticle")
    if k.max_die_mm2 is not None and a.per_die_mm2 > k.max_die_mm2:
        raise Infeasible(f"die {a.per_die_mm2:.0f} mm2 > {k.max_die_mm2:.0f} mm2 (constraints.max_die_mm2)")
    if k.max_area_mm2 is not None and a.total_mm2 > k.max_area_mm2:
        raise Infeasible(f"silicon {a.total_mm2:.0f} mm2 > {k.max_area_mm2:.0f} mm2 (constraints.max_area_mm2)")
    idle = _idle_w(base, a.total_mm2)
    if idle >= c.chip.tdp_w:
        raise Infeasible(f"idle power {idle:.0f} W (scaled with area from {base.name}) >= TDP {c.chip.tdp_w:.0f} W")
    c = replace(c, chip=replace(c.chip, idle_w=idle))
    w, f, d = _power_floor(c)
    if w > c.chip.tdp_w:
        raise Infeasible(f"over TDP at the minimum clock: full-rate {d} matrix work draws {w:.0f} W at "
                         f"{f / 1e9:.2f} GHz > {c.chip.tdp_w:.0f} W")
    try:
        cost = cost_usd(c)
    except ReticleError as e:  # pragma: no cover - the reticle was checked above
        raise Infeasible(str(e)) from None
    if k.max_cost_usd is not None and cost.total_usd > k.max_cost_usd:
        raise Infeasible(f"cost ${cost.total_usd:,.0f} > ${k.max_cost_usd:,.0f} (constraints.max_cost_usd)")
    facts = {"die_mm2": a.per_die_mm2, "area_mm2": a.total_mm2, "cost_usd": cost.total_usd, "die_yield": cost.die_yield,
             "tdp_w": c.chip.tdp_w, "idle_w": idle, "peak_power_floor_w": w,
             "peak_fp8_flops": c.peak_flops("fp8") if c.supports("fp8") else 0.0,
             "peak_bf16_flops": c.peak_flops("bf16") if c.supports("bf16") else 0.0,
             "dram_bytes": c.dram.bytes, "dram_bytes_per_s": c.dram.bandwidth_bytes_per_s,
             "link_bytes_per_s": c.links.chip_to_chip.bandwidth_bytes_per_s}
    return c, facts


# ----------------------------------------------------------------------------- export

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int):
        return str(v)
    return repr(float(v)) if math.isfinite(v) else "nan"


def _section(obj, prefix: str, out: list[str]) -> None:
    scalars, subs = [], []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            subs.append((f.name, v))
        elif isinstance(v, dict):
            subs.append((f.name, v))
        elif v is not None:
            scalars.append(f"{f.name} = {_toml_value(v)}")
    if scalars:
        out += [f"\n[{prefix}]", *scalars]
    for name, v in subs:
        if isinstance(v, dict):
            out += [f"\n[{prefix}.{name}]", *(f"{k} = {_toml_value(x)}" for k, x in v.items())]
        else:
            _section(v, f"{prefix}.{name}", out)


def chip_toml(c: Chip, note: str, ref: str = "docs/sweep.md") -> str:
    """A chip file for a design point (loads with `tapeout chips show FILE`): every section sourced
    as derived from the sweep, with `note` saying which point it is."""
    out = ["# A design point written by tapeout sweep/study: a design, not a product.", "schema_version = 1"]
    for f in ("chip", "cores", "shared_buffer", "dram", "links"):
        _section(getattr(c, f), f, out)
    out.append("\n[sources]")
    for f in ("chip", "cores", "shared_buffer", "dram", "links"):
        out.append(f'"{f}" = {{ ref = "{ref}", confidence = "derived", note = {_toml_value(note)} }}')
    return "\n".join(out) + "\n"


def source_note(base: Chip, params: dict) -> str:
    kv = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{base.name} with {kv}; area, idle power and DRAM derived by tapeout.dse.design"


__all__ = ["KNOBS", "Constraints", "Infeasible", "point_chip", "physicals", "chip_toml"]
