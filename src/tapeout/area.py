"""Silicon area of a chip, component by component, from sourced block areas per node.

    die area = (matrix + vector + core SRAM + L2/global buffer + per-core extras of the kind
                + DRAM PHYs + chip-to-chip SerDes + PCIe + die-to-die) / (1 - other_fraction[kind])

- matrix: cores x the largest of (MACs/cycle x area per MAC) over the dtypes (narrow dtypes share
  the wide multipliers), vector: cores x fp32 lanes; both scaled by the node's logic area factor;
- SRAM: bytes x bit cell / array efficiency (GPU caches with tags vs NPU scratchpads);
- per-core extras of the kind: what a core holds beyond the schema's units. A GPU SM carries a
  256 KiB register file, FP64 lanes, and SIMT control (warp schedulers, instruction caches, load/
  store, texture, special functions); an NPU core a scalar unit, instruction buffers and DMA;
- PHYs and SerDes do not shrink with the node (analog, bump-limited);
- other_fraction: network-on-chip, global control, clocking, power grid and white space;
- spares: big GPU dies ship with some SMs, L2 slices and a memory interface fused off for yield,
  so the die holds more than the product enables (kinds.toml).

Data: src/tapeout/data/area/{nodes,blocks,kinds}.toml, every number with its source.

    >>> from tapeout.chip import load_chip
    >>> 600 < area_mm2(load_chip("h100-sxm")).total_mm2 < 1000
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import TapeoutError
from .sourced import interp_loglog, load_table, values

MIB = 2.0**20
COMPONENTS = ("matrix", "vector", "core_sram", "shared_buffer", "core_extras", "dram_phy",
              "chip_links", "host_pcie", "die_to_die", "extra_blocks", "other")


@dataclass(frozen=True)
class AreaBreakdown:
    components: dict[str, float]   # mm2 over all dies, keys COMPONENTS
    total_mm2: float               # silicon of all compute dies
    dies: int
    node_nm: float
    spare_core_fraction: float

    @property
    def per_die_mm2(self) -> float:
        return self.total_mm2 / self.dies


@lru_cache(maxsize=None)
def _tables() -> dict:
    return {n: values(load_table(f"area/{n}.toml")) for n in ("nodes", "blocks", "kinds")}


def _node(table: dict, nm: float, what: str) -> float:
    return interp_loglog({float(k): v for k, v in table.items()}, float(nm), f"chip.process_node_nm ({what})")


def logic_factor(node_nm: float) -> float:
    """Area of a logic block at `node_nm` relative to 7 nm."""
    return _node(_tables()["nodes"]["logic_area_factor"], node_nm, "area/nodes.toml logic_area_factor")


def sram_mm2_per_mib(node_nm: float, style: str) -> float:
    """mm2 per MiB of SRAM at `node_nm`, style 'cache' (tags, banks) or 'scratchpad'."""
    t = _tables()
    cell = _node(t["nodes"]["sram_bitcell_um2"], node_nm, "area/nodes.toml sram_bitcell_um2")
    return cell * 8 * MIB * 1e-6 / t["blocks"]["sram_array_efficiency"][style]


def _kind(chip) -> dict:
    """The per-kind values of area/kinds.toml for `chip`, plus its core architecture's extras."""
    k = _tables()["kinds"]
    kind = chip.chip.kind
    out = {key: (tab[kind] if isinstance(tab, dict) and kind in tab else tab) for key, tab in k.items()}
    arch = k["family_architecture"].get(chip.chip.family, k["kind_architecture"][kind])
    out["architecture"], out["extras"] = arch, k["core_extras"][arch]
    return out


def _dram_units(chip, b: dict) -> tuple[float, float]:
    """(number of PHY units, mm2 each) for the chip's DRAM: HBM stacks or 32-bit channels."""
    t = chip.dram.type
    if t == "none":
        return 0.0, 0.0
    fam = "HBM" if t.startswith("HBM") else "GDDR" if t.startswith("GDDR") else "LPDDR"
    per = b["dram_phy_mm2_per_stack"]["HBM"] if fam == "HBM" else b["dram_phy_mm2_per_channel"][fam]
    rate = (b["dram_bytes_per_s_per_stack"] if fam == "HBM" else b["dram_bytes_per_s_per_channel"])[fam]
    n = chip.dram.stacks or max(1.0, round(chip.dram.bandwidth_bytes_per_s / rate))
    return float(n), per


def _fraction(name: str, v: float) -> float:
    if not 0.0 <= v < 1.0:
        raise TapeoutError(f"{name}: must be in [0, 1), got {v!r}")
    return float(v)


def _core_extras_mm2(chip, k: dict, sram: float, lf: float) -> float:
    """Per-core area beyond the named units: register file, FP64 lanes, control (architecture table)."""
    x, b = k["extras"], _tables()["blocks"]
    rf = x["register_file_bytes"] / MIB * sram * k["register_file_area_factor"]
    fp64 = chip.cores.vector.lanes * x["fp64_lanes_per_vector_lane"] * k["fp64_lane_area_vs_fp32"] * b["vector_lane_um2"] * 1e-6
    return rf + (fp64 + x["control_mm2"]) * lf


def _extra_blocks_mm2(blocks: dict[str, float] | None, lf: float) -> float:
    table = _tables()["blocks"]["extra_block_mm2"]
    total = 0.0
    for name, n in (blocks or {}).items():
        if name not in table:
            raise TapeoutError(f"extra_blocks.{name}: unknown block; known: {', '.join(table)}")
        total += n * table[name] * (1.0 if name == "die_to_die_interface" else lf)
    return total


def area_mm2(chip, spare_core_fraction: float | None = None, spare_memory_fraction: float | None = None,
             extra_blocks: dict[str, float] | None = None, spare_l2_fraction: float | None = None) -> AreaBreakdown:
    """Silicon area of `chip` by component.

    spare_core_fraction / spare_memory_fraction / spare_l2_fraction: the share of cores / DRAM
    interfaces / L2 on the die that the product leaves disabled (default: the kind's values in
    area/kinds.toml);
    extra_blocks: counts of blocks the chip schema does not describe, e.g. {"host_cpu_core": 16}."""
    b, k = _tables()["blocks"], _kind(chip)
    node = chip.chip.process_node_nm
    spare = _fraction("spare_core_fraction", k["spare_core_fraction"] if spare_core_fraction is None else spare_core_fraction)
    mspare = _fraction("spare_memory_fraction", k["spare_memory_fraction"] if spare_memory_fraction is None else spare_memory_fraction)
    l2spare = _fraction("spare_l2_fraction", k["spare_l2_fraction"] if spare_l2_fraction is None else spare_l2_fraction)
    on_die, mem, l2 = chip.cores.count / (1.0 - spare), 1.0 / (1.0 - mspare), 1.0 / (1.0 - l2spare)
    lf = logic_factor(node)
    um2, mpc = b["mac_um2"], chip.cores.matrix.macs_per_cycle
    missing = sorted(d for d, m in mpc.items() if m > 0 and d not in um2)
    if missing:
        raise TapeoutError(f"cores.matrix.macs_per_cycle: no MAC area for {', '.join(missing)} in area/blocks.toml")
    sram = sram_mm2_per_mib(node, k["sram_style"])
    n_dram, per_dram = _dram_units(chip, b)
    dies = chip.chip.dies
    comp = {
        "matrix": on_die * max((m * um2[d] for d, m in mpc.items() if m > 0), default=0.0) * 1e-6 * lf,
        "vector": on_die * chip.cores.vector.lanes * b["vector_lane_um2"] * 1e-6 * lf,
        "core_sram": on_die * chip.cores.sram.bytes / MIB * sram,
        "shared_buffer": chip.shared_buffer.bytes * l2 / MIB * sram,
        "core_extras": on_die * _core_extras_mm2(chip, k, sram, lf),
        "dram_phy": n_dram * mem * per_dram,
        "chip_links": chip.links.chip_to_chip.bandwidth_bytes_per_s / b["serdes_bytes_per_s_per_lane"] * b["serdes_mm2_per_lane"],
        "host_pcie": chip.links.host.pcie_lanes * b["pcie_mm2_per_lane"] + b["pcie_controller_mm2"],
        "die_to_die": (2.0 * _die_to_die_bytes_per_s(chip) / 1e12 * b["die_to_die_mm2_per_tb_per_s"] * (dies - 1)
                       if dies > 1 else 0.0),
        "extra_blocks": _extra_blocks_mm2(extra_blocks, lf),
    }
    counted = sum(comp.values())
    comp["other"] = counted * k["other_fraction"] / (1.0 - k["other_fraction"])
    return AreaBreakdown(comp, sum(comp.values()), dies, node, spare)


def _die_to_die_bytes_per_s(chip) -> float:
    """Bandwidth a multi-die chip needs between its dies: half its DRAM + L2 traffic crosses over."""
    return 0.5 * (chip.dram.bandwidth_bytes_per_s + chip.shared_buffer.bandwidth_bytes_per_s)
