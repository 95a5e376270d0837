"""Collectives (tapeout.parallel) against closed forms and step-by-step schedules of the algorithms."""
import dataclasses
import math

import pytest
from hypothesis import given, settings, strategies as st

from tapeout import load_chip
from tapeout.errors import TapeoutError
from tapeout.parallel import collective_time, network_fabric, transfer_time

H100 = load_chip("h100-sxm")
B, A = H100.links.chip_to_chip.bandwidth_bytes_per_s, H100.links.chip_to_chip.latency_s


def with_links(chip, **kw):
    links = dataclasses.replace(chip.links, chip_to_chip=dataclasses.replace(chip.links.chip_to_chip, **kw))
    return dataclasses.replace(chip, links=links)


def ring_schedule(S, n, bw, lat, passes):
    """Step by step: each of passes x (n-1) steps sends one S/n chunk to the next chip."""
    return sum(lat + (S / n) / bw for _ in range(passes * (n - 1)))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_allreduce_matches_its_schedule(n):
    S = 64e6
    assert collective_time(H100, "allreduce", S, n) == pytest.approx(ring_schedule(S, n, B, A, 2))
    assert collective_time(H100, "reducescatter", S, n) == pytest.approx(ring_schedule(S, n, B, A, 1))
    # allgather: nbytes is each chip's contribution, n x that is gathered
    assert collective_time(H100, "allgather", S / n, n) == pytest.approx(ring_schedule(S, n, B, A, 1))


def test_bus_bandwidth_approaches_link_bandwidth():
    n, S = 8, 4e9
    t = collective_time(H100, "allreduce", S, n)
    busbw = 2 * (n - 1) / n * S / t
    assert 0.99 * B < busbw <= B


def test_tree_beats_ring_for_small_messages_and_loses_for_large():
    n = 8
    small, large = 1e3, 1e9
    assert collective_time(H100, "allreduce", small, n, "tree") < collective_time(H100, "allreduce", small, n)
    assert collective_time(H100, "allreduce", large, n, "tree") > collective_time(H100, "allreduce", large, n)
    assert collective_time(H100, "allreduce", small, n, "tree") == pytest.approx(2 * 3 * A + 2 * small / B)


def test_alltoall_topologies():
    S, n = 1e8, 8
    assert collective_time(H100, "alltoall", S, n) == pytest.approx(A + S / B)          # switch: one hop
    ring = with_links(H100, topology="ring")
    # bidirectional ring: mean hops floor(n^2/4)/(n-1) = 16/7, diameter n/2
    assert collective_time(ring, "alltoall", S, n) == pytest.approx(4 * A + S * (16 / 7) / B)
    full = with_links(H100, topology="fully-connected", count=7)
    assert collective_time(full, "alltoall", S, n) == pytest.approx(A + S / B)
    # a pairwise-exchange all-to-all pays n-1 latencies
    assert collective_time(H100, "alltoall", S, n, "pairwise") == pytest.approx(7 * A + S / B)


def test_fully_connected_subgroup_uses_only_its_links():
    full = with_links(H100, topology="fully-connected", count=7)
    S = 1e8
    # 2 of 8 chips: one link group of 7, B/7 between them
    assert collective_time(full, "allreduce", S, 2) == pytest.approx(2 * A + S / (B / 7))
    assert transfer_time(full, S) == pytest.approx(A + S / (B / 7))


def test_hierarchical_allreduce_closed_form():
    S, n, d = 256e6, 16, 8
    net = network_fabric()
    expect = ((d - 1) * A + (d - 1) / d * S / B              # reduce-scatter in each node
              + 2 * (2 - 1) * net.latency_s + 2 * (1 / 2) * (S / d) / net.ring_bw  # allreduce of S/8 over 2 nodes
              + (d - 1) * A + (d - 1) * (S / d) / B)         # all-gather in each node
    assert collective_time(H100, "allreduce", S, n) == pytest.approx(expect)
    # the network is slower than NVLink: 16 chips across two nodes cost more than one 16-chip NVLink domain
    assert collective_time(H100, "allreduce", S, n) > collective_time(H100, "allreduce", S, n, domain=16)


def test_alltoall_across_nodes_is_bound_by_the_nic():
    S, n = 1e9, 64
    net = network_fabric()
    t = collective_time(H100, "alltoall", S, n)
    remote = S * (n - 8) / (n - 1)
    assert t == pytest.approx(net.latency_s + remote / net.a2a_bw)


def test_transfer_over_network():
    net = network_fabric()
    assert transfer_time(H100, 1e9, across_network=True) == pytest.approx(net.latency_s + 1e9 / net.pair_bw)
    assert transfer_time(H100, 1e9) < transfer_time(H100, 1e9, across_network=True)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["allreduce", "allgather", "reducescatter", "alltoall"]),
       topo=st.sampled_from(["switch", "ring", "torus", "mesh", "fully-connected"]),
       n=st.integers(1, 64), s=st.floats(1.0, 1e10))
def test_monotone_in_bytes_and_zero_for_one_chip(kind, topo, n, s):
    chip = with_links(H100, topology=topo)
    t1, t2 = collective_time(chip, kind, s, n), collective_time(chip, kind, 2 * s, n)
    if n == 1:
        assert t1 == 0
    else:
        assert 0 < t1 < t2 and math.isfinite(t2)


def test_errors():
    with pytest.raises(TapeoutError, match="unknown collective"):
        collective_time(H100, "broadcastx", 1e6, 8)
    with pytest.raises(TapeoutError, match="algorithm"):
        collective_time(H100, "allreduce", 1e6, 8, "butterfly")
    with pytest.raises(TapeoutError, match="no chip-to-chip links"):
        collective_time(with_links(H100, count=0), "allreduce", 1e6, 8)


def test_auto_picks_the_fastest():
    for S in (1e3, 1e6, 1e9):
        best = min(collective_time(H100, "allreduce", S, 8, a) for a in ("ring", "tree", "direct"))
        assert collective_time(H100, "allreduce", S, 8, "auto") == best


def test_custom_allreduce_picks_one_shot_for_small_and_two_shot_for_large():
    from tapeout.parallel import custom_allreduce_time
    sync, eff = 3e-6, 0.6
    bw = B * eff
    # two GPUs: both forms move S bytes, so the one-shot (one synchronisation) always wins
    assert custom_allreduce_time(H100, 4e6, 2, sync, eff) == pytest.approx(sync + 4e6 / bw)
    # eight GPUs: one-shot reads 7 S, two-shot 1.75 S with a second synchronisation
    small, large = 16e3, 4e6
    assert custom_allreduce_time(H100, small, 8, sync, eff) == pytest.approx(sync + 7 * small / bw)
    assert custom_allreduce_time(H100, large, 8, sync, eff) == pytest.approx(2 * sync + 1.75 * large / bw)
    # the crossover: 7 S / bw = sync + 1.75 S / bw
    x = sync * bw / 5.25
    assert custom_allreduce_time(H100, 0.9 * x, 8, sync, eff) == pytest.approx(sync + 7 * 0.9 * x / bw)
    assert custom_allreduce_time(H100, 1.1 * x, 8, sync, eff) == pytest.approx(2 * sync + 1.75 * 1.1 * x / bw)
    assert custom_allreduce_time(H100, large, 1, sync, eff) == 0.0


def test_stack_runs_small_allreduces_on_its_custom_kernel_and_large_ones_on_the_link_model():
    from tapeout.llm.kernels import Kernel
    from tapeout.parallel import custom_allreduce_time
    from tapeout.perf.step import run_kernels
    from tapeout.stack import load_stack
    trt, ideal = load_stack("nvidia-trtllm").params_for(H100), load_stack("ideal").params_for(H100)
    # TensorRT-LLM's workspace: 8 MB among more than two GPUs, 16 MB between two (plugin.py)
    assert trt.custom_allreduce_max_bytes == 8e6 and trt.custom_allreduce_pair_max_bytes == 16e6
    assert 0.3 < trt.custom_allreduce_efficiency < 1 and trt.comm_efficiency == pytest.approx(370 / 450, abs=1e-3)
    ar = lambda S, n=8: Kernel("comm", "allreduce", 0.0, S, S, (float(S), n, "allreduce", 0.0))  # noqa: E731
    f = 1.5e9

    def secs(params, S, n):
        return run_kernels(H100, [ar(S, n)], params=params, clock_hz=f).seconds - params.queued_launch_s

    for S, n in ((64e3, 8), (2 ** 20, 8), (7.9e6, 8), (64e3, 2), (14e6, 2)):
        t = secs(trt, S, n)
        assert t == pytest.approx(custom_allreduce_time(H100, S, n, trt.custom_allreduce_sync_s,
                                                        trt.custom_allreduce_efficiency))
        # the ideal stack (no custom kernel) keeps the link model at full rate: faster from 1 MiB up
        t_ideal = secs(ideal, S, n)
        assert t_ideal == pytest.approx(collective_time(H100, "allreduce", S, n, "auto"))
        if S >= 2 ** 20:
            assert t > 1.3 * t_ideal
    # above the workspace: NCCL, the link model at 370 of the links' 450 GB/s
    for S, n in ((8.1e6, 8), (64 * 2 ** 20, 8), (16.1e6, 2), (64 * 2 ** 20, 2)):
        assert secs(trt, S, n) == pytest.approx(secs(ideal, S, n) / trt.comm_efficiency, rel=1e-6)


def test_custom_allreduce_fit_reproduces_the_h100_measurements():
    """benchmarks/calibrate_collectives.py's values against its data: within 12 % from 1 MiB up."""
    import json
    from importlib import resources

    from tapeout.parallel import custom_allreduce_time
    from tapeout.stack import load_stack
    p = load_stack("nvidia-trtllm").params_for(H100)
    d = json.loads((resources.files("tapeout") / "data/calibration/h100-custom-allreduce.json").read_text())
    for r in d["rows"]:
        S, t = 4.0 * r["elements"], r["ms"] * 1e-3
        pred = p.queued_launch_s + custom_allreduce_time(H100, S, r["gpus"], p.custom_allreduce_sync_s,
                                                         p.custom_allreduce_efficiency)
        assert abs(pred / t - 1) < (0.12 if S >= 2 ** 20 else 0.3), r
