"""Area check: predicted vs actual die area, per die and per component.

    .venv/bin/python benchmarks/area_check.py [--json]

Reference dies: src/tapeout/data/area/reference_dies.toml (each names a chip preset, the cores /
L2 / DRAM interfaces the die holds beyond the product's enabled ones, and blocks the schema lacks).
Two predictions per die: 'die' uses those documented full-die facts; 'product' is what
`area_mm2(chip)` gives from the preset alone with the kind's default spares. The five dies of
[required] must be within 15 % ('die' prediction); the others are held-out checks.
"""
from __future__ import annotations

import json
import sys

from tapeout.area import COMPONENTS, area_mm2
from tapeout.chip import load_chip, preset_names
from tapeout.sourced import load_table, values

TOLERANCE = 0.15


def reference_dies() -> dict:
    t = values(load_table("area/reference_dies.toml"))
    required = set(t["required"]["dies"].split())
    return {name: {**d, "preset": t["preset"][name], "required": name in required} for name, d in t["die"].items()}


def check() -> list[dict]:
    rows = []
    known = set(preset_names())
    for name, d in reference_dies().items():
        if d["preset"] not in known:
            rows.append({"die": name, "preset": d["preset"], "missing": True, "required": d["required"]})
            continue
        chip = load_chip(d["preset"])
        die = area_mm2(chip, d["spare_core_fraction"], d["spare_memory_fraction"], d.get("extra_blocks"), d["spare_l2_fraction"])
        product = area_mm2(chip)
        rows.append({"die": name, "preset": d["preset"], "required": d["required"], "actual_mm2": d["area_mm2"],
                     "predicted_mm2": die.total_mm2, "err": die.total_mm2 / d["area_mm2"] - 1,
                     "product_mm2": product.total_mm2, "err_product": product.total_mm2 / d["area_mm2"] - 1,
                     "node_nm": chip.chip.process_node_nm, "kind": chip.chip.kind, "components_mm2": die.components})
    return rows


def main(argv: list[str]) -> int:
    rows = check()
    if "--json" in argv:
        print(json.dumps(rows, indent=1))
        return 0
    short = {"matrix": "mat", "vector": "vec", "core_sram": "csram", "shared_buffer": "L2/buf", "core_extras": "extras",
             "dram_phy": "dram", "chip_links": "links", "host_pcie": "pcie", "die_to_die": "d2d", "extra_blocks": "blocks",
             "other": "other"}
    print(f"{'die':13s} {'node':>4s} {'kind':4s} {'actual':>7s} {'die':>7s} {'err':>7s} {'product':>8s} {'err':>7s} | "
          + " ".join(f"{short[c]:>6s}" for c in COMPONENTS))
    worst = 0.0
    for r in rows:
        if r.get("missing"):
            print(f"{r['die']:13s} preset {r['preset']} not found" + (" (REQUIRED)" if r["required"] else ""))
            worst = max(worst, 1.0) if r["required"] else worst
            continue
        mark = "" if r["required"] else " (held out)"
        print(f"{r['die']:13s} {r['node_nm']:4g} {r['kind']:4s} {r['actual_mm2']:7.0f} {r['predicted_mm2']:7.0f} {100 * r['err']:+6.1f}% "
              f"{r['product_mm2']:8.0f} {100 * r['err_product']:+6.1f}% | "
              + " ".join(f"{r['components_mm2'][c]:6.0f}" for c in COMPONENTS) + mark)
        if r["required"]:
            worst = max(worst, abs(r["err"]))
    print(f"worst |error| on the required dies: {100 * worst:.1f}% (limit {100 * TOLERANCE:.0f}%)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
