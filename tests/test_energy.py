"""Energy and power model: physical sanity, the H100 power measurements, sourced data."""
import dataclasses
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench_helpers import load_benchmark
from tapeout.chip import load_chip, preset_names
from tapeout.energy import (Activity, action_energies, energy_j, idle_w, node_factor, power_w,
                            sustained_clock_hz, sustained_power)
from tapeout.errors import TapeoutError
from tapeout.sourced import DataFileError, _walk, load_table, quantities



def with_node(chip, nm):
    return dataclasses.replace(chip, chip=dataclasses.replace(chip.chip, process_node_nm=nm))


H100 = load_chip("h100-sxm")
counts = st.floats(0, 1e13, allow_nan=False)
activities = st.builds(lambda b, f, v, s, l2, d: Activity({"bf16": b, "fp8": f}, v, s, l2, d),
                       counts, counts, counts, counts, counts, counts)


# ---------------------------------------------------------------- data files
def test_bare_number_in_a_data_table_is_rejected():
    with pytest.raises(DataFileError, match="bare number"):
        _walk("x.toml", "", {"a": {"b": 3.0}}, {})
    with pytest.raises(DataFileError, match="needs a 'note'"):
        _walk("x.toml", "", {"a": {"value": 1.0, "ref": "R", "confidence": "assumed"}}, {"R": "r"})
    with pytest.raises(DataFileError, match="not in"):
        _walk("x.toml", "", {"a": {"value": 1.0, "ref": "NOPE", "confidence": "reported"}}, {})


def test_fit_file_records_its_provenance():
    t = load_table("energy/fit-hopper.toml")
    assert t["meta"]["chip"] == "h100-sxm" and "calibration" in t["meta"]
    assert all(q.confidence == "fitted" for _, q in quantities(t))


# ---------------------------------------------------------------- physics
def test_node_factor_is_monotone_and_scaled_chips_spend_less():
    nodes = [90, 65, 45, 28, 16, 12, 10, 7, 5, 3, 2]
    f = [node_factor(n) for n in nodes]
    assert all(a > b for a, b in zip(f, f[1:]))
    assert node_factor(6) < node_factor(7) and node_factor(6) > node_factor(5)   # interpolated
    e5, e7 = action_energies(H100), action_energies(with_node(H100, 7))
    for d in e5.mac_pj:
        assert e7.mac_pj[d] > e5.mac_pj[d]
    assert e7.sram_pj_per_byte > e5.sram_pj_per_byte
    assert e7.dram_pj_per_byte == e5.dram_pj_per_byte        # DRAM energy is not the logic node's
    with pytest.raises(TapeoutError, match="process_node_nm"):
        action_energies(with_node(H100, 1.5))


def test_npu_mac_costs_less_than_gpu_mac_at_the_same_node():
    npu = load_chip("tapeout-n7")
    a7 = with_node(H100, 7)
    assert action_energies(npu).mac_pj["bf16"] < action_energies(a7).mac_pj["bf16"] / 3
    # narrower dtypes cost less per MAC on both kinds
    for c in (H100, npu):
        e = action_energies(c).mac_pj
        assert e["fp8"] < e["bf16"] and e["int8"] <= e["fp8"] * 1.0001


@settings(max_examples=60, deadline=None)
@given(activities, activities, st.floats(1e-4, 10), st.floats(1e-4, 10), st.floats(0.4, 1.0))
def test_energy_is_additive(a, b, ta, tb, r):
    f = r * H100.max_clock_hz
    both = energy_j(H100, a + b, ta + tb, f)
    assert math.isclose(both, energy_j(H100, a, ta, f) + energy_j(H100, b, tb, f), rel_tol=1e-9)
    assert math.isclose(energy_j(H100, a.scaled(3.0), ta, f) - idle_w(H100) * ta,
                        3.0 * (energy_j(H100, a, ta, f) - idle_w(H100) * ta), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=80, deadline=None)
@given(activities, st.floats(1e-5, 1.0), st.floats(0.0, 1.0))
def test_sustained_clock_respects_tdp_and_max_clock(a, t, cf):
    e = action_energies(H100)
    f = sustained_clock_hz(H100, a, t, cf)
    assert e.floor_clock_hz * (1 - 1e-9) <= f <= H100.max_clock_hz
    p = sustained_power(H100, a, t, cf)
    uncapped = power_w(H100, a, t)
    if uncapped.total_w <= H100.chip.tdp_w:
        assert f == H100.max_clock_hz and math.isclose(p.total_w, uncapped.total_w)
    elif f > e.floor_clock_hz * (1 + 1e-9):
        assert math.isclose(p.total_w, H100.chip.tdp_w, rel_tol=1e-6)   # the clock lands on the cap
    else:
        assert p.total_w >= H100.chip.tdp_w * (1 - 1e-9)                  # even the floor is over: reported as is


@settings(max_examples=40, deadline=None)
@given(activities, st.floats(1e-4, 1.0), st.floats(0.3, 0.99))
def test_power_rises_with_clock(a, t, r):
    lo = power_w(H100, a, t, r * H100.max_clock_hz).total_w
    assert power_w(H100, a, t).total_w >= lo - 1e-9


def test_every_preset_has_positive_energies():
    for n in preset_names():
        c = load_chip(n)
        e = action_energies(c)
        assert e.mac_pj and all(v > 0 for v in e.mac_pj.values()), n
        assert set(e.mac_pj) == {d for d, m in c.cores.matrix.macs_per_cycle.items() if m > 0}
        assert 0 < e.idle_w < c.chip.tdp_w and e.alpha > 1
        assert e.dram_pj_per_byte > 0 or c.dram.type == "none"


def test_user_errors():
    with pytest.raises(TapeoutError, match="fp4"):
        power_w(H100, Activity({"fp4": 1e9}), 1e-3)
    with pytest.raises(TapeoutError, match="dram_bytes"):
        Activity(dram_bytes=-1.0)
    with pytest.raises(TapeoutError, match="seconds"):
        power_w(H100, Activity(), 0.0)
    with pytest.raises(TapeoutError, match="clock_hz"):
        power_w(H100, Activity(), 1.0, clock_hz=3e9)


def test_sustained_clock_is_fast():
    a = Activity({"bf16": 5e11}, sram_bytes=2e10, shared_buffer_bytes=1e10, dram_bytes=4e8)
    t0 = time.perf_counter()
    for i in range(10000):
        sustained_clock_hz(H100, a, 1e-3 + i * 1e-8, 0.9)
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------- the H100 measurements
def test_h100_power_entries_within_15_percent():
    rows = load_benchmark("power_check").check()
    assert len(rows) == 7
    for r in rows:
        assert abs(r["err_w"]) <= 0.15, r
        assert abs(r["err_clock"]) <= 0.15, r
    by = {r["entry"]: r for r in rows}
    assert by["gemm_8192_bf16"]["predicted_mhz"] < 1500 and by["gemm_8192_fp8"]["predicted_mhz"] < by["gemm_8192_bf16"]["predicted_mhz"]
    assert by["copy_2GiB"]["predicted_mhz"] == 1980 and by["llama-3.1-8b_decode_B1_C1024"]["predicted_w"] < 400


def test_h100_leave_one_out_fit_predicts_held_out_entries():
    cal = load_benchmark("calibrate_power")
    xs = [x for x in cal.entries() if x.name != "idle"]
    rows, idle = cal._rows(H100, xs)
    for i, x in enumerate(xs):
        if x.activity.macs.get("fp8"):
            continue
        e, alpha, _ = cal.fit(rows[:i] + rows[i + 1:], idle)
        assert abs(cal.predict(e, alpha, rows[i], idle) / x.watts - 1) < 0.15, x.name


def test_same_die_at_a_lower_max_clock_spends_less_per_mac():
    pcie, sxm = action_energies(load_chip("h100-pcie")), action_energies(H100)
    expect = (load_chip("h100-pcie").max_clock_hz / H100.max_clock_hz) ** (sxm.alpha - 1)
    assert pcie.mac_pj["bf16"] == pytest.approx(sxm.mac_pj["bf16"] * expect)
    # another family on the same node is node-scaled only
    assert action_energies(load_chip("l40s")).mac_pj["bf16"] == pytest.approx(sxm.mac_pj["bf16"])
