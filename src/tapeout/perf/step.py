"""Time of a sequence of kernels on a chip: the one entry point every level above uses.

`run_kernels(chip, kernels)` costs each kernel (see kernels.py), solves the sustained clock
under the chip's power limit for the whole sequence (as it runs repeatedly, e.g. a decode step
replayed from a CUDA graph), and returns the per-kernel times at that clock.

Where the family declares the averaging window of its power-limit controller
(`PerfParams.power_window_s`), each kernel runs at the clock that fits the TDP over a window of
that length around it: a kernel longer than the window at its own capped clock, a shorter one at
the clock of its share of the window mixed with the step's average (`_window_clocks`). Without
it, one clock for the whole step.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import energy
from ..chip import Chip
from ..llm.kernels import Kernel
from ..parallel import custom_allreduce_time, domain_size
from .kernels import kernel_cost
from .params import PerfParams, load_params


@dataclass(frozen=True, slots=True)
class KernelTime:
    kernel: Kernel
    seconds: float       # all `count` launches together
    bound: str           # compute | memory | overhead
    clock_hz: float = 0.0  # the clock it ran at (0: the step's)


@dataclass(frozen=True)
class StepTime:
    seconds: float
    clock_hz: float      # the step's clock (with a power window: its time-weighted mean)
    kernels: tuple[KernelTime, ...]

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kt in self.kernels:
            out[kt.kernel.kind] = out.get(kt.kernel.kind, 0.0) + kt.seconds
        return out

    def by_bound(self) -> dict[str, float]:
        out = {"compute": 0.0, "memory": 0.0, "overhead": 0.0}
        for kt in self.kernels:
            out[kt.bound] += kt.seconds
        return out

    @property
    def bound(self) -> str:
        b = self.by_bound()
        return max(b, key=b.get)


def activity_of(kernels: list[Kernel]) -> dict:
    """Counts for the energy model: MACs by dtype, vector flops, DRAM bytes (each also passes the
    shared buffer on its way to the cores) and bytes sent over chip-to-chip links."""
    macs: dict[str, float] = {}
    vec = dram = link = 0.0
    for k in kernels:
        if k.kind in ("gemm", "attention"):
            macs[k.dtype] = macs.get(k.dtype, 0.0) + k.flops / 2 * k.count
        else:
            vec += k.flops * k.count
        if k.kind == "comm":
            link += k.bytes_read * k.count
        else:
            dram += (k.bytes_read + k.bytes_written) * k.count
    return {"macs": macs, "vector_flops": vec, "dram_bytes": dram, "shared_buffer_bytes": dram, "link_bytes": link}


def _at_max_clock(chip: Chip, p: PerfParams, k: Kernel, cost, launch: float, count: float) -> tuple[float, float]:
    """(seconds, compute-bound seconds) of `count` launches of `k` at the max clock."""
    cyc, mem, fixed, n = cost
    t = cyc / chip.max_clock_hz
    return count * (launch + (n - 1) * p.queued_launch_s + fixed + max(t, mem)), (count * t if t > mem else 0.0)


def _sustained_clock(chip: Chip, p: PerfParams, kernels, costs, launch: float) -> float:
    f0 = chip.max_clock_hz
    total = compute = 0.0
    for k, c in zip(kernels, costs):
        s, cs = _at_max_clock(chip, p, k, c, launch, k.count)
        total, compute = total + s, compute + cs
    act = activity_of(kernels)
    a = energy.Activity(**act)
    f = energy.sustained_clock_hz(chip, a, total, compute / total if total else 0.0)
    return max(min(f, f0), p.min_clock_fraction * f0)


def _window_clocks(chip: Chip, p: PerfParams, kernels, costs, launch: float) -> list[float]:
    """Each kernel's clock when the power limit holds over `p.power_window_s`: the window around one
    launch holds that launch for min(1, t / window) of its time and the step's average mix for the
    rest (the kernels around it); the clock is the one that fits the TDP over that mix."""
    f0, w0 = chip.max_clock_hz, p.power_window_s
    one = []                          # per kernel: one launch's (seconds, compute seconds, core J, I/O J)
    total = compute = ec_all = eio_all = 0.0
    for k, c in zip(kernels, costs):
        t1, c1 = _at_max_clock(chip, p, k, c, launch, 1.0)
        ec, eio = energy.core_io_j(chip, activity_of([k]))
        one.append((t1, c1, ec / k.count if k.count else 0.0, eio / k.count if k.count else 0.0))
        total, compute, ec_all, eio_all = total + k.count * t1, compute + k.count * c1, ec_all + ec, eio_all + eio
    if total <= 0.0:
        return [f0] * len(kernels)
    out = []
    for t1, c1, ec, eio in one:
        if t1 <= 0.0:
            out.append(f0)
            continue
        own = min(1.0, t1 / w0)       # over one second of the window at the max clock
        rest = 1.0 - own
        f = energy.clock_for_energy_hz(chip, own * ec / t1 + rest * ec_all / total, own * eio / t1 + rest * eio_all / total,
                                       1.0, min(1.0, own * c1 / t1 + rest * compute / total))
        out.append(max(min(f, f0), p.min_clock_fraction * f0))
    return out


HOST = Kernel("host", "engine step on the host", 0.0, 0.0, 0.0)


def _cost(chip: Chip, p: PerfParams, k: Kernel) -> tuple[float, float, float, int]:
    if k.kind == "comm" and _custom_allreduce(chip, p, k):   # the stack's own small all-reduce kernel
        nbytes, n = k.shape[:2]
        return 0.0, custom_allreduce_time(chip, nbytes, int(n), p.custom_allreduce_sync_s,
                                          p.custom_allreduce_efficiency), 0.0, 1
    cyc, mem, fixed, n = kernel_cost(chip, p, k)
    if k.kind == "comm":  # the stack's collective library: achieved fraction of the link model, fixed cost,
        messages = k.shape[3] if len(k.shape) > 3 else 0.0   # and a cost per message (all-to-all peers)
        return cyc, mem / p.comm_efficiency, fixed + p.comm_latency_s + p.comm_message_s * messages, n
    return cyc, mem, fixed, n


def _custom_allreduce(chip: Chip, p: PerfParams, k: Kernel) -> bool:
    nbytes, n, kind = k.shape[:3]
    cap = p.custom_allreduce_pair_max_bytes if n == 2 and p.custom_allreduce_pair_max_bytes else p.custom_allreduce_max_bytes
    return kind == "allreduce" and 0 < nbytes <= cap and 1 < n <= domain_size(chip)


def run_kernels(chip: Chip, kernels: list[Kernel], *, queued: bool = True, params: PerfParams | None = None,
                clock_hz: float | None = None, power_kernels: list[Kernel] = (), step_overhead: bool = False) -> StepTime:
    """Time `kernels` run back to back. `queued`: launched from a CUDA graph / command queue
    (else one by one from the host). `power_kernels` run in the same loop (e.g. a benchmark's
    cache flush): they load the power budget but are not timed. `step_overhead`: the kernels are
    one serving-engine step, which adds the stack's host time per step (params.step_overhead_s)."""
    p = params or load_params(chip.chip.family)
    launch = p.queued_launch_s if queued else p.launch_s
    all_k = list(kernels) + list(power_kernels)
    costs = [_cost(chip, p, k) for k in all_k]
    f = clock_hz or _sustained_clock(chip, p, all_k, costs, launch)
    # a benchmark loop (power_kernels) or a pinned clock keeps one clock for the whole sequence
    windowed = p.power_window_s > 0 and not clock_hz and not power_kernels
    per = _window_clocks(chip, p, kernels, costs, launch) if windowed else [f] * len(kernels)
    out, total, f_time = [], 0.0, 0.0
    for k, (cyc, mem, fixed, n), fk in zip(kernels, costs, per):
        t = cyc / fk
        work = max(t, mem)
        ovh = launch + (n - 1) * p.queued_launch_s + fixed  # a reduction kernel follows at once
        sec = k.count * (ovh + work)
        bound = "overhead" if ovh > work else ("compute" if t >= mem else "memory")
        out.append(KernelTime(k, sec, bound, fk))
        total += sec
        f_time += fk * sec
    f_step = f_time / total if windowed and total > 0 else f
    if step_overhead and p.step_overhead_s:
        out.append(KernelTime(HOST, p.step_overhead_s, "overhead", f_step))
        total += p.step_overhead_s
    return StepTime(total, f_step, tuple(out))


def step_energy_j(chip: Chip, st: StepTime) -> float:
    """Joules one chip spends on a step: each kernel's counted activity at the clock it ran at
    (tapeout.energy), idle power over the whole step."""
    clocks = {kt.clock_hz or st.clock_hz for kt in st.kernels}
    if len(clocks) <= 1:
        act = energy.Activity(**activity_of([kt.kernel for kt in st.kernels]))
        return energy.energy_j(chip, act, max(st.seconds, 1e-12), min(st.clock_hz, chip.max_clock_hz))
    return sum(energy.energy_j(chip, energy.Activity(**activity_of([kt.kernel])), max(kt.seconds, 1e-12),
                               min(kt.clock_hz or st.clock_hz, chip.max_clock_hz)) for kt in st.kernels)
