"""The power-limit controller's averaging window (PerfParams.power_window_s, perf/step._window_clocks).

A step that alternates compute-bound GEMMs with memory-bound kernels: with one clock per step
(window 0) the memory-bound time lends the GEMMs power; with a window shorter than a GEMM, each
kernel runs at the clock that fits the TDP on its own."""
import dataclasses

import pytest

from tapeout import load_chip
from tapeout.energy import action_energies
from tapeout.llm.kernels import Kernel
from tapeout.perf.params import load_params
from tapeout.perf.step import run_kernels, step_energy_j

H100 = load_chip("h100-sxm")
BASE = load_params("hopper")


def _gemm(m=8192, n=8192, k=8192, count=4):
    return Kernel("gemm", "gemm", 2.0 * m * n * k, (m * k + k * n), m * n * 2, (m, n, k, 1), "fp8", count)


def _stream(nbytes=4e9, count=4):   # an elementwise pass over 4 GB: memory-bound at any clock
    return Kernel("elementwise", "add", nbytes / 2, nbytes / 2, nbytes / 2, (int(nbytes / 4096), 1024), "bf16", count)


STEP = [_gemm(), _stream()]


def _run(window, kernels=STEP, **kw):
    return run_kernels(H100, kernels, params=dataclasses.replace(BASE, power_window_s=window), **kw)


def test_no_window_runs_the_whole_step_at_one_clock():
    st = _run(0.0)
    assert {kt.clock_hz for kt in st.kernels} == {st.clock_hz}


def test_a_window_far_longer_than_the_step_gives_the_step_clock():
    one, long = _run(0.0), _run(1e3)
    for kt in long.kernels:
        assert kt.clock_hz == pytest.approx(one.clock_hz, rel=1e-3)
    assert long.seconds == pytest.approx(one.seconds, rel=1e-3)


def test_a_short_window_runs_each_kernel_at_its_own_capped_clock():
    st = _run(1e-6)
    g, s = st.kernels
    # the GEMM alone (a loop of it) and the stream alone
    alone_g, alone_s = _run(0.0, [STEP[0]]), _run(0.0, [STEP[1]])
    assert g.clock_hz == pytest.approx(alone_g.clock_hz, rel=1e-3)
    assert s.clock_hz == pytest.approx(alone_s.clock_hz, rel=1e-3)
    one = _run(0.0)
    # the step clock sat between the two; the GEMM loses the power the stream lent it
    assert g.clock_hz < one.clock_hz < s.clock_hz
    assert st.seconds > one.seconds


def test_clocks_move_monotonically_from_per_kernel_to_per_step_as_the_window_grows():
    gemm_clocks = [_run(w).kernels[0].clock_hz for w in (1e-6, 1e-3, 1e-2, 1e-1, 1e3)]
    assert gemm_clocks == sorted(gemm_clocks)
    assert gemm_clocks[0] < gemm_clocks[-1]


@pytest.mark.parametrize("window", [1e-6, 3e-4, 1e-2])
def test_every_window_keeps_the_step_within_the_tdp(window):
    st = _run(window)
    assert step_energy_j(H100, st) / st.seconds <= action_energies(H100).tdp_w * 1.01


def test_a_benchmark_loop_with_power_kernels_or_a_pinned_clock_keeps_one_clock():
    flush = [_stream(count=1)]
    looped = _run(1e-6, [STEP[0]], power_kernels=flush)
    assert looped.seconds == pytest.approx(_run(0.0, [STEP[0]], power_kernels=flush).seconds)
    pinned = _run(1e-6, clock_hz=1.2e9)
    assert {kt.clock_hz for kt in pinned.kernels} == {1.2e9}


def test_hopper_declares_a_fitted_window_shorter_than_a_layer():
    p = load_params("hopper")
    assert 2e-5 < p.power_window_s < 2e-2 and "fitted" in p.cite("power_window_s")
