"""Time of a sequence of kernels on a chip: the one entry point every level above uses.

`run_kernels(chip, kernels)` costs each kernel (see kernels.py), solves the sustained clock
under the chip's power limit for the whole sequence (as it runs repeatedly, e.g. a decode step
replayed from a CUDA graph), and returns the per-kernel times at that clock.
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


@dataclass(frozen=True)
class StepTime:
    seconds: float
    clock_hz: float
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


def _sustained_clock(chip: Chip, p: PerfParams, kernels, costs, launch: float) -> float:
    f0 = chip.max_clock_hz
    total = compute = 0.0
    for k, (cyc, mem, fixed, n) in zip(kernels, costs):
        t = cyc / f0
        total += k.count * (launch + (n - 1) * p.queued_launch_s + fixed + max(t, mem))
        if t > mem:
            compute += k.count * t
    act = activity_of(kernels)
    a = energy.Activity(**act)
    f = energy.sustained_clock_hz(chip, a, total, compute / total if total else 0.0)
    return max(min(f, f0), p.min_clock_fraction * f0)


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
    pair = n == 2 and p.custom_allreduce_pair_max_bytes      # two chips: the engine's own, larger cap
    cap = p.custom_allreduce_pair_max_bytes if pair else p.custom_allreduce_max_bytes
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
    out, total = [], 0.0
    for k, (cyc, mem, fixed, n) in zip(kernels, costs):
        t = cyc / f
        work = max(t, mem)
        ovh = launch + (n - 1) * p.queued_launch_s + fixed  # a reduction kernel follows at once
        sec = k.count * (ovh + work)
        bound = "overhead" if ovh > work else ("compute" if t >= mem else "memory")
        out.append(KernelTime(k, sec, bound))
        total += sec
    if step_overhead and p.step_overhead_s:
        out.append(KernelTime(HOST, p.step_overhead_s, "overhead"))
        total += p.step_overhead_s
    return StepTime(total, f, tuple(out))


def step_energy_j(chip: Chip, st: StepTime) -> float:
    """Joules one chip spends on a step: its counted activity at the step's clock (tapeout.energy)."""
    act = energy.Activity(**activity_of([kt.kernel for kt in st.kernels]))
    return energy.energy_j(chip, act, max(st.seconds, 1e-12), min(st.clock_hz, chip.max_clock_hz))
