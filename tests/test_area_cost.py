"""Area and cost models: physical sanity, the reference dies, the reticle, sourced data, the CLI."""
import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench_helpers import load_benchmark
from tapeout.area import area_mm2, logic_factor, sram_mm2_per_mib
from tapeout.chip import load_chip, preset_names
from tapeout.cost import ReticleError, cost_usd, dies_per_wafer, harvested_yield, yield_nb
from tapeout.errors import TapeoutError

H100 = load_chip("h100-sxm")
N7 = load_chip("tapeout-n7")


def edit(c, **sections):
    """A copy of `chip` with fields replaced, e.g. edit(c, chip={"dies": 2}, cores={"count": 8})."""
    kw = {}
    for sec, vals in sections.items():
        kw[sec] = dataclasses.replace(getattr(c, sec), **vals)
    return dataclasses.replace(c, **kw)


# ---------------------------------------------------------------- data files
# ---------------------------------------------------------------- area physics
def test_area_shrinks_with_the_node():
    nodes = [28, 16, 10, 7, 5, 3, 2]
    logic = [logic_factor(n) for n in nodes]
    sram = [sram_mm2_per_mib(n, "scratchpad") for n in nodes]
    assert all(a > b for a, b in zip(logic, logic[1:]))
    assert all(a >= b for a, b in zip(sram, sram[1:]))
    areas = [area_mm2(edit(N7, chip={"process_node_nm": n})).total_mm2 for n in nodes]
    assert all(a > b for a, b in zip(areas, areas[1:]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 256))
def test_area_grows_with_what_the_chip_holds(cores_a, extra_cores, sram_kib):
    a = area_mm2(edit(N7, cores={"count": cores_a}))
    b = area_mm2(edit(N7, cores={"count": cores_a + extra_cores}))
    assert b.total_mm2 > a.total_mm2
    assert b.components["dram_phy"] == a.components["dram_phy"]       # cores do not add memory interfaces
    big = edit(N7, cores={"count": cores_a, "sram": dataclasses.replace(N7.cores.sram, bytes=N7.cores.sram.bytes + sram_kib * 1024)})
    assert area_mm2(big).components["core_sram"] > a.components["core_sram"]
    assert math.isclose(sum(a.components.values()), a.total_mm2)


def test_spares_add_area_and_bad_fractions_are_errors():
    assert area_mm2(H100, spare_core_fraction=0.2).total_mm2 > area_mm2(H100, spare_core_fraction=0.0).total_mm2
    with pytest.raises(TapeoutError, match="spare_core_fraction"):
        area_mm2(H100, spare_core_fraction=1.0)
    with pytest.raises(TapeoutError, match="extra_blocks.warp_drive"):
        area_mm2(H100, extra_blocks={"warp_drive": 1})


def test_every_preset_has_an_area_and_a_cost():
    for n in preset_names():
        c = load_chip(n)
        a = area_mm2(c)
        assert a.total_mm2 > 10 and all(v >= 0 for v in a.components.values()), n
        r = cost_usd(c)
        assert r.total_usd > 0 and 0 < r.die_yield <= 1 and r.dies_per_wafer >= 1, n


def test_reference_dies_within_15_percent():
    rows = load_benchmark("area_check").check()
    required = [r for r in rows if r["required"]]
    assert {r["die"] for r in required} == {"a100", "h100", "hanguang-800", "br100", "ascend-910"}
    for r in required:
        assert not r.get("missing"), r
        assert abs(r["err"]) <= 0.15, (r["die"], r["predicted_mm2"], r["actual_mm2"])


def test_gpu_dies_hold_more_than_npu_dies_at_the_same_compute():
    """The per-kind terms: at one node and the same units, an NVIDIA-style GPU die is larger than an NPU die
    (register files, FP64, caches with tags, spares, a crossbar), and a non-NVIDIA SIMT core adds nothing unnamed."""
    gpu = edit(N7, chip={"kind": "gpu", "family": "ampere"})
    assert area_mm2(gpu).total_mm2 > 1.3 * area_mm2(N7).total_mm2
    assert area_mm2(gpu).components["shared_buffer"] > area_mm2(N7).components["shared_buffer"]
    assert area_mm2(edit(N7, chip={"kind": "gpu", "family": "npu"})).components["core_extras"] == 0


# ---------------------------------------------------------------- cost
def _count_dies(side_mm: float, diameter_mm: float = 294.0) -> float:
    """Brute force: whole side x side squares on a grid inside the circle, averaged over grid
    placements (the formula estimates a typical placement; the best one gains a few large dies)."""
    r, counts = diameter_mm / 2.0, []
    for ox in (0.0, 0.25, 0.5, 0.75):
        for oy in (0.0, 0.375, 0.625):
            n = 0
            k = int(r / side_mm) + 2
            for i in range(-k, k):
                for j in range(-k, k):
                    x0, y0 = (i + ox) * side_mm, (j + oy) * side_mm
                    corners = [(x0, y0), (x0 + side_mm, y0), (x0, y0 + side_mm), (x0 + side_mm, y0 + side_mm)]
                    n += all(x * x + y * y <= r * r for x, y in corners)
            counts.append(n)
    return sum(counts) / len(counts)


@settings(max_examples=12, deadline=None)
@given(st.floats(50, 850))
def test_dies_per_wafer_matches_a_brute_force_count(area):
    side = math.sqrt(area) + 0.1
    assert dies_per_wafer(area) == pytest.approx(_count_dies(side), rel=0.1)


@settings(max_examples=50, deadline=None)
@given(st.floats(10, 850), st.floats(10, 850), st.floats(0.01, 0.5))
def test_yield_falls_with_area_and_spares_help(a, b, d0):
    lo, hi = sorted((a, b))
    assert 0 < yield_nb(hi, d0) <= yield_nb(lo, d0) <= 1
    assert harvested_yield(hi, 0.6, 144, 12, d0) >= harvested_yield(hi, 0.6, 144, 0, d0)
    assert harvested_yield(hi, 0.0, 1, 0, d0) == pytest.approx(yield_nb(hi, d0))


def test_reticle_limit():
    huge = edit(N7, chip={"die_area_mm2": None}, cores={"count": 48})
    assert area_mm2(huge).per_die_mm2 > 858
    with pytest.raises(ReticleError, match=r"chip.dies = \d"):
        cost_usd(huge)
    need = math.ceil(area_mm2(huge).total_mm2 / 858)
    split = edit(huge, chip={"dies": need + 1})
    assert cost_usd(split).die_area_mm2 <= 858
    with pytest.raises(ReticleError):
        cost_usd(edit(H100, chip={"die_area_mm2": 1200.0}))


def test_cost_is_monotone_and_matches_reported_h100_and_b200():
    r = cost_usd(H100)
    more_hbm = cost_usd(edit(H100, dram={"bytes": H100.dram.bytes * 2}))
    assert more_hbm.components["memory"] == pytest.approx(2 * r.components["memory"])
    assert cost_usd(edit(H100, chip={"die_area_mm2": 600.0})).components["die"] < r.components["die"]
    assert r.area_source == "chip file" and cost_usd(load_chip("b200")).area_source == "area model"
    for name in ("h100-sxm", "b200"):
        c = cost_usd(load_chip(name))
        assert c.reported_cost_usd and abs(c.total_usd / c.reported_cost_usd - 1) < 0.3, name
        assert c.reported_price_usd > 3 * c.total_usd          # a price is not a cost
    assert cost_usd(H100, volume=1e5).total_usd > r.total_usd
    with pytest.raises(TapeoutError, match="volume"):
        cost_usd(H100, volume=0)


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize("cmd", ["power", "area", "cost"])
def test_cli_tables_and_json(cmd, capsys):
    from tapeout.cli import app

    for chip in ("h100-sxm", "hanguang-800"):
        with pytest.raises(SystemExit) as e:
            app(args=[cmd, chip, "--json"], standalone_mode=True)
        assert e.value.code == 0
        out = json.loads(capsys.readouterr().out)
        assert out["chip"] == chip
    with pytest.raises(SystemExit):
        app(args=[cmd, "h100-sxm"], standalone_mode=True)
    assert "h100-sxm" in capsys.readouterr().out


def test_cli_user_error_is_one_line(capsys):
    from tapeout.cli import main

    with pytest.raises(SystemExit) as e:
        main(["cost", "no-such-chip"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-chip" in err and "Traceback" not in err
