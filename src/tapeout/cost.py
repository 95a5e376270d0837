"""Manufacturing cost of a chip: good dies, memory, package, test, module; reticle limit.

    die cost   = wafer price / (dies per wafer x yield)
    dies/wafer = pi (d/2)^2 / A - pi d / sqrt(2 A)            (d: usable wafer diameter, A: die + scribe)
    yield      = Y(non-core area) x P(at most `spare` of the die's cores are defective)
    Y(A)       = (1 + A D0 / alpha)^-alpha                     (negative binomial, D0 per node)

A die may keep working with a few dead cores when the product leaves spares (GPUs), so the core
array is yielded core by core. Die area: the chip file's `die_area_mm2` when it states one (the
real die), else the area model (tapeout.area). A die over the reticle (~858 mm2) cannot be made:
`cost_usd` raises ReticleError saying how many dies the design needs.

Memory at a price per GB by type; HBM needs a silicon interposer (CoWoS) sized by the dies and
stacks, other memories an organic package; test and assembly as a share plus a base; the module
(power delivery, PCB) per watt of TDP. Data: src/tapeout/data/cost/*.toml with sources.
Reported costs and prices (data/cost/reported.toml) ride along for comparison; a price is not a cost.

What an hour of a chip costs its user (data/cost/ownership.toml), for cost per million tokens:

    owned $/h   = price x system factor / (years x 8760 h x utilization) + power x PUE x $/kWh
    chip $/h    = a published rental price, else owned $/h at the chip's price (chip file, else the
                  table), else at its manufacturing cost (an in-house chip), at TDP
    $/Mtok      = $/h / (tokens/s x 3600) x 1e6

    >>> from tapeout.chip import load_chip
    >>> 1000 < cost_usd(load_chip("h100-sxm")).total_usd < 10000
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .area import _kind, area_mm2
from .errors import TapeoutError
from .sourced import interp_loglog, load_table, table, values

CORE_AREA = ("matrix", "vector", "core_sram", "core_extras")


class ReticleError(TapeoutError):
    """A die larger than the lithography reticle: split the design into more dies."""


@dataclass(frozen=True)
class CostBreakdown:
    components: dict[str, float]     # USD: die, memory, package, test_assembly, board
    total_usd: float
    die_area_mm2: float              # per die
    dies: int
    area_source: str                 # "chip file" or "area model"
    wafer_usd: float
    dies_per_wafer: float
    die_yield: float
    die_usd: float                   # one good die
    nre_per_unit_usd: float          # design NRE / volume (0 without a volume)
    reported_cost_usd: float | None  # published estimates, for comparison
    reported_price_usd: float | None


@lru_cache(maxsize=None)
def _tables() -> dict:
    return {n: values(load_table(f"cost/{n}.toml")) for n in ("wafers", "package", "reported")}


def _by_node(key: str, nm: float) -> float:
    t = {float(k): v for k, v in _tables()["wafers"][key].items()}
    return interp_loglog(t, float(nm), f"chip.process_node_nm (cost/wafers.toml {key})")


def dies_per_wafer(die_mm2: float) -> float:
    """Gross dies per wafer: wafer area / die area minus the partial dies lost at the edge."""
    p = _tables()["package"]
    d = p["wafer_diameter_mm"] - 2.0 * p["edge_exclusion_mm"]
    a = (math.sqrt(die_mm2) + p["scribe_mm"]) ** 2
    return max(0.0, math.pi * (d / 2.0) ** 2 / a - math.pi * d / math.sqrt(2.0 * a))


def yield_nb(area_mm2_: float, defects_per_cm2: float) -> float:
    """Negative-binomial yield of `area_mm2_` of silicon."""
    alpha = _tables()["package"]["yield_clustering_alpha"]
    return (1.0 + area_mm2_ / 100.0 * defects_per_cm2 / alpha) ** -alpha


def harvested_yield(die_mm2: float, core_share: float, cores_on_die: int, spare_cores: int, d0: float) -> float:
    """Yield of a die whose core array tolerates `spare_cores` dead cores out of `cores_on_die`."""
    n = max(1, cores_on_die)
    p_bad = 1.0 - yield_nb(die_mm2 * core_share / n, d0)
    ok = sum(math.comb(n, k) * p_bad**k * (1.0 - p_bad) ** (n - k) for k in range(0, min(spare_cores, n) + 1))
    return yield_nb(die_mm2 * (1.0 - core_share), d0) * ok


def reticle_mm2() -> float:
    """The largest die a scanner can expose (26 x 33 mm)."""
    return _tables()["package"]["reticle_mm2"]


def check_reticle(chip, per_die_mm2: float) -> None:
    """Raise ReticleError when a die of `chip` would exceed the reticle."""
    limit = reticle_mm2()
    if per_die_mm2 > limit:
        need = math.ceil(per_die_mm2 * chip.chip.dies / limit)
        raise ReticleError(f"{chip.path or chip.name}: chip.dies: each of the {chip.chip.dies} die(s) would be "
                           f"{per_die_mm2:.0f} mm2, over the {limit:.0f} mm2 reticle; split the design into at least "
                           f"{need} dies (chip.dies = {need}) or shrink it")


def _silicon(chip) -> tuple[float, float, int, int, str]:
    """(area per die, core share of it, cores on one die, spare cores on one die, where the area came from)."""
    model = area_mm2(chip)
    core = sum(model.components[c] for c in CORE_AREA) / model.total_mm2
    dies = chip.chip.dies
    stated = chip.chip.die_area_mm2
    total, source = (stated, "chip file") if stated else (model.total_mm2, "area model")
    on_die = round(chip.cores.count / (1.0 - model.spare_core_fraction) / dies)
    spare = max(0, on_die - math.ceil(chip.cores.count / dies))
    return total / dies, core, on_die, spare, source


def _package_usd(chip, logic_mm2: float) -> float:
    p = _tables()["package"]
    if chip.dram.type.startswith("HBM"):
        stacks = chip.dram.stacks / (1.0 - _spare_memory(chip))
        interposer = (logic_mm2 + stacks * p["hbm_footprint_mm2"]) * p["interposer_spacing_factor"]
        return p["package_base_usd"] + interposer * p["interposer_usd_per_mm2"]
    return p["package_base_usd"] + logic_mm2 * p["organic_package_usd_per_die_mm2"]


def _spare_memory(chip) -> float:
    return _kind(chip)["spare_memory_fraction"]


def cost_usd(chip, volume: float | None = None) -> CostBreakdown:
    """Manufacturing cost of one `chip` (USD). `volume`: units over which to spread the design NRE."""
    t, p = _tables(), _tables()["package"]
    node = chip.chip.process_node_nm
    per_die, core_share, on_die, spare, source = _silicon(chip)
    check_reticle(chip, per_die)
    wafer, d0 = _by_node("wafer_usd", node), _by_node("defects_per_cm2", node)
    dpw = dies_per_wafer(per_die)
    y = harvested_yield(per_die, core_share, on_die, spare, d0)
    if dpw < 1 or y <= 0:
        raise TapeoutError(f"{chip.name}: a {per_die:.0f} mm2 die gives no good dies per wafer")
    die_usd = wafer / (dpw * y)
    dram_gb = chip.dram.bytes / 1e9 if chip.dram.type != "none" else 0.0
    price = t["package"]["memory_usd_per_gb"].get(chip.dram.type, 0.0)
    comp = {"die": die_usd * chip.chip.dies, "memory": dram_gb * price,
            "package": _package_usd(chip, per_die * chip.chip.dies)}
    comp["test_assembly"] = p["test_base_usd"] + p["test_fraction"] * sum(comp.values())
    comp["board"] = p["board_usd_per_w"] * chip.chip.tdp_w
    nre = 0.0
    if volume is not None:
        if not volume >= 1:
            raise TapeoutError(f"volume: must be >= 1 unit, got {volume!r}")
        nre = _by_node("design_nre_usd", min(max(node, 2.0), 28.0)) / volume
        comp["nre"] = nre
    rep = t["reported"]
    return CostBreakdown(comp, sum(comp.values()), per_die, chip.chip.dies, source, wafer, dpw, y, die_usd, nre,
                         rep["cost_usd"].get(chip.name), rep["price_usd"].get(chip.name, chip.chip.price_usd))


# ----------------------------------------------------------------------------- cost of ownership

HOURS_PER_YEAR = 8760


def owned_usd_per_hour(price_usd: float, power_w: float) -> float:
    """USD per chip-hour of a chip bought at `price_usd` drawing `power_w` (data/cost/ownership.toml)."""
    t = table("cost/ownership.toml")
    c, e = t["capex"], t["energy"]
    capex = price_usd * c["system_factor"] / (c["amortization_years"] * HOURS_PER_YEAR * c["utilization"])
    return capex + power_w / 1000 * e["pue"] * e["usd_per_kwh"]


def chip_usd_per_hour(chip) -> tuple[float | None, str]:
    """(USD per chip-hour, how it was obtained): rental price, else price or manufacturing cost amortized."""
    t = table("cost/ownership.toml")
    if chip.name in t["rental_usd_per_hour"]:
        return t["rental_usd_per_hour"][chip.name], "rental price"
    price, how = chip.chip.price_usd or t["price_usd"].get(chip.name), "price"
    if not price:   # an in-house chip: what it costs to make is what it costs its owner
        try:
            price, how = cost_usd(chip).total_usd, "manufacturing cost (tapeout.cost)"
        except TapeoutError as e:   # a chip the cost model cannot build (no area, over the reticle)
            return None, f"no price for this chip and the cost model cannot build it: {e}"
    return owned_usd_per_hour(price, chip.chip.tdp_w), f"{how} amortized + energy"


def usd_per_mtok(usd_per_hour: float, tok_s: float) -> float:
    """Dollars per million tokens produced at `tok_s` by what costs `usd_per_hour`."""
    return usd_per_hour / (tok_s * 3600) * 1e6
