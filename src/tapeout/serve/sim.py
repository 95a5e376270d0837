"""The discrete-event loop: a heap of (time, event) over replicas of engines.

Events: a request arrives (routed to the least-loaded engine of its pool), an engine's step ends
(the engine books the tokens and picks its next step), a KV cache arrives at a decode instance
(prefill/decode disaggregation). Time advances only through the StepTimer's step times, the
pipeline stages of a replica, and KV transfers over links or the network.

A closed loop (`concurrency` N > 0) issues the first N requests at their arrival times and each
later one when a request finishes (N users, each sending its next request as its previous answer
ends); with `window_s` (start, end) the run counts tokens, energy and busy time from `start` and
stops at `end`, unfinished requests and all (a steady-state measurement without the drain).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from ..parallel import domain_size, transfer_time
from .engine import Engine, Limits, Seq
from .kvcache import BlockManager, MemoryPlan
from .steptime import StepTimer

KIND = {"prefill": 0, "decode": 1, "mixed": 2}


@dataclass
class Pool:
    """Replicas of one kind (all, or the prefill / the decode side of a disaggregated deployment)."""
    timer: StepTimer
    memory: MemoryPlan
    replicas: int
    policy: str
    limits: Limits = field(default_factory=Limits)
    prefix_caching: bool = False
    watermark: float = 0.01
    tokens_per_step: float = 1.0     # expected tokens a decoding sequence gains per step (speculative decoding: > 1)


class Replica:
    """tp x pp x ep chips serving one copy of the model: one virtual engine per micro-batch in flight
    (`Parallel.in_flight`, default pp) share its KV blocks; each engine's step is one micro-batch through
    the pp stages, and each stage runs one micro-batch at a time (stages idle while the pipeline fills
    and drains, or when engines have no work: bubbles; `steptime.pipeline_span`)."""

    def __init__(self, sim, index: int, pool: Pool):
        self.index, self.pool = index, pool
        par = pool.timer.par
        self.blocks = BlockManager(pool.memory.blocks, pool.memory.block_size, pool.prefix_caching, pool.watermark)
        self.engines = [Engine(sim, self, pool.policy, pool.limits) for _ in range(par.in_flight)]
        self.stage_free = [0.0] * par.pp
        self.busy_s = 0.0            # seconds each chip computed (sum of its stage times)

    def occupy(self, t: float, stage_s: float, send_s: float) -> float:
        """Run one micro-batch through the pipeline from time t (each stage when it is free, then a send to
        the next); returns when its last stage ends."""
        start = t
        for j in range(len(self.stage_free)):
            start = max(start, self.stage_free[j])
            end = start + stage_s
            self.stage_free[j] = end
            start = end + send_s
        self.busy_s += stage_s
        return end


@dataclass
class Records:
    """Per-request times and the step log of one simulation."""
    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    preemptions: np.ndarray
    steps: list = field(default_factory=list)   # (pool, replica, start, end, kind, prefill tokens, decodes, engine load)
    energy_j: float = 0.0                        # while computing (static + dynamic, all chips)
    busy_chip_s: float = 0.0                     # sum over chips of computing seconds
    chips: int = 0
    makespan_s: float = 0.0
    preempted: int = 0
    prefix_hits: int = 0
    prefix_lookups: int = 0
    timer_calls: int = 0
    tokens_generated: int = 0
    offload_bytes: float = 0.0                   # KV streamed from the offload tier, per chip, summed over steps
    offload_s: float = 0.0                       # the transfer time of those bytes (overlapped with compute)
    decode_tokens: int = 0                       # tokens out of decode steps (the first token of each prefill aside)
    decode_seq_steps: int = 0                    # sum over decode steps of the sequences decoding in them
    window: dict | None = None                   # window_s runs: start_s, end_s and the tokens, energy_j,
                                                 # busy_chip_s counted between them
    exhausted: bool = False                      # a closed loop ran out of requests before its end


class Sim:
    def __init__(self, requests, pools: dict[str, Pool], record_steps: bool = True, *, concurrency: int = 0,
                 window_s: tuple[float, float] | None = None):
        self.requests = requests
        self.concurrency, self.window_s = concurrency, window_s
        self.issued = min(concurrency, len(requests)) if concurrency > 0 else len(requests)
        self.pools = pools
        self.replicas = {name: [Replica(self, i, p) for i in range(p.replicas)] for name, p in pools.items()}
        self.entry = "prefill" if "prefill" in pools else "all"
        n = len(requests)
        self.rec = Records(np.array([r.arrival_s for r in requests]), np.array([r.prompt for r in requests]),
                           np.array([r.output for r in requests]), np.full(n, math.nan), np.full(n, math.nan),
                           np.zeros(n, np.int64))
        self.rec.arrival[self.issued:] = math.nan     # a closed loop's later requests: issued when one finishes
        self._mark: tuple = ()
        self.heap: list = []
        self._n = 0
        self.done = self.arrived = self.preemptions = self.tokens = 0
        self.record_steps = record_steps
        self.progress = None
        self._now = 0.0
        chips = sum(p.timer.par.chips * p.replicas for p in pools.values())
        self.rec.chips = chips
        self.cross_network = any(chips > domain_size(p.timer.chip) for p in pools.values())

    def push(self, t: float, fn, *args) -> None:
        self._n += 1
        heapq.heappush(self.heap, (t, self._n, fn, args))

    def run(self, progress=None) -> Records:
        self.progress = progress
        for r in self.requests[:self.issued]:
            self.push(r.arrival_s, self.arrive, r)
        end = self.window_s[1] if self.window_s else math.inf
        if self.window_s:
            self.push(self.window_s[0], self.mark)
        while self.heap and self.heap[0][0] <= end:
            t, _, fn, args = heapq.heappop(self.heap)
            self._now = t
            fn(t, *args)
        stopped = bool(self.heap)
        if not stopped and self.done != self.issued:
            raise RuntimeError(f"simulation ended with {self.issued - self.done} unfinished requests (a scheduler bug)")
        rec = self.rec
        if stopped:
            rec.makespan_s = end - float(np.nanmin(rec.arrival))
        else:
            rec.makespan_s = float(np.nanmax(rec.finish) - np.nanmin(rec.arrival)) if len(self.requests) else 0.0
        rec.preempted = self.preemptions
        rec.tokens_generated = self.tokens
        if self.window_s:
            tok, joule, busy = (now - then for now, then in zip(self._counters(), self._mark or (0, 0.0, 0.0)))
            rec.window = {"start_s": self.window_s[0], "end_s": min(end, self._now) if not stopped else end,
                          "tokens": tok, "energy_j": joule, "busy_chip_s": busy}
        for name, reps in self.replicas.items():
            for r in reps:   # every block is back: free, or holding an idle cached prefix
                if not stopped and r.blocks.free + r.blocks.evictable != r.blocks.total:
                    raise RuntimeError(f"KV blocks leaked on {name} replica {r.index}: {r.blocks.free} free + "
                                       f"{r.blocks.evictable} cached of {r.blocks.total} (a scheduler bug)")
            rec.prefix_hits += sum(r.blocks.hits for r in reps)
            rec.prefix_lookups += sum(r.blocks.lookups for r in reps)
            rec.busy_chip_s += sum(r.busy_s for r in reps) * self.pools[name].timer.par.chips
        rec.timer_calls = sum(p.timer.calls for p in self.pools.values())
        return rec

    def mark(self, t: float) -> None:
        """The start of the measurement window: remember the counters."""
        self._mark = self._counters()

    def _counters(self) -> tuple[int, float, float]:
        """(tokens generated, computing energy, busy chip-seconds) so far."""
        busy = sum(sum(r.busy_s for r in reps) * self.pools[name].timer.par.chips for name, reps in self.replicas.items())
        return self.tokens, self.rec.energy_j, busy

    # ---- routing
    def _engine(self, pool: str) -> Engine:
        return min((e for r in self.replicas[pool] for e in r.engines), key=Engine.load)

    def arrive(self, t: float, req) -> None:
        self.arrived += 1
        e = self._engine(self.entry)
        e.add(Seq(req))
        e.kick(t)

    # ---- steps
    def run_step(self, engine: Engine, t: float, plan) -> None:
        pool = engine.replica.pool
        prefill, n_dec, ctx = engine.step_shape(plan)
        off = self.offload_bytes(engine, prefill[1] + ctx)
        sec, joule = pool.timer.step(prefill, n_dec, ctx, off)
        if off:
            self.rec.offload_bytes += off
            self.rec.offload_s += pool.timer.offload_s(off)
        send = pool.timer.stage_send_s(prefill[1] + n_dec)
        end = engine.replica.occupy(t, sec, send)
        self.rec.energy_j += joule * pool.timer.par.chips
        if self.record_steps:
            kind = "mixed" if prefill[0] and n_dec else ("prefill" if prefill[0] else "decode")
            self.rec.steps.append((pool.policy, engine.replica.index, end - sec, end, KIND[kind], prefill[1], n_dec,
                                   engine.load()))
        self.push(end, engine.finish_step, plan)

    def offload_bytes(self, engine: Engine, touched: int) -> float:
        """Bytes per chip a step streams from the offload tier: the replica's in-use blocks beyond HBM
        (HBM fills first), at most the `touched` tokens (new + cached context) of the step."""
        mem = engine.replica.pool.memory
        if mem.offload is None:
            return 0.0
        return mem.offload_bytes(engine.blocks.in_use() * mem.block_size, touched, engine.replica.pool.timer.par.ep)

    # ---- request milestones (called by engines)
    def decoded(self, seqs: int, tokens: int) -> None:
        """A decode step of `seqs` running sequences emitted `tokens` tokens."""
        self.tokens += tokens
        self.rec.decode_tokens += tokens
        self.rec.decode_seq_steps += seqs

    def first_token(self, seq: Seq, t: float) -> None:
        self.rec.first_token[seq.req.id] = t

    def finished(self, seq: Seq, t: float) -> None:
        i = seq.req.id
        self.rec.finish[i] = t
        self.rec.preemptions[i] = seq.preemptions
        if math.isnan(self.rec.first_token[i]):
            self.rec.first_token[i] = t
        self.done += 1
        if self.concurrency > 0:
            self.issue_next(t)
        if self.progress is not None:
            self.progress(self.done, len(self.requests))

    def issue_next(self, t: float) -> None:
        """Closed loop: the user whose request just finished sends the next one."""
        if self.issued >= len(self.requests):
            self.rec.exhausted = True
            return
        r = self.requests[self.issued]
        self.issued += 1
        self.rec.arrival[r.id] = t
        self.push(t, self.arrive, r)

    def requeue(self, engine: Engine, seq: Seq) -> None:
        """A preempted sequence waits (first in line) to recompute its KV cache: on its own engine, or
        on a prefill instance when it was preempted on a decode instance."""
        self.preemptions += 1
        if engine.policy == "decode":
            dst = self._engine("prefill")
            dst.add(seq, front=True)
            self.push(self._now, lambda t: dst.kick(t))
        else:
            engine.add(seq, front=True)

    def prefilled(self, engine: Engine, seq: Seq, t: float) -> None:
        """Disaggregation: send the prompt's KV cache from the prefill to a decode instance."""
        pool = engine.replica.pool
        if seq.generated >= seq.req.output:
            engine._free(seq)
            self.finished(seq, t)
            return
        nbytes = pool.memory.kv_bytes_per_token * seq.prefill_len   # each chip sends its share, all in parallel
        dt = transfer_time(pool.timer.chip, nbytes, across_network=self.cross_network)
        engine.inflight += 1
        self.push(t + dt, self.kv_arrived, engine, seq)

    def kv_arrived(self, t: float, src: Engine, seq: Seq) -> None:
        src.inflight -= 1
        src._free(seq)
        src.kick(t)
        seq.kv_ready_s = t
        dst = self._engine("decode")
        dst.add(seq)
        dst.kick(t)
