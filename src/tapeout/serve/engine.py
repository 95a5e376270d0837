"""One serving engine: a waiting queue, sequences in prefill and in decode, a KV block manager, and a
scheduling policy that picks the next step. The engine never computes time itself: it asks the
StepTimer (the seam) and its replica's pipeline timeline.

Policies (a table: name -> function(engine) -> Plan | None):

    static      form a batch of waiting requests, prefill it, decode until its longest output ends
                (finished sequences stay in the batch as padding); memory reserved for prompt + output
    continuous  vLLM-style iteration-level scheduling: a prefill-only step whenever waiting requests fit
                (whole prompts, up to the token budget), otherwise a decode step of every running sequence
    chunked     Sarathi / vLLM chunked prefill: every step decodes all running sequences and fills the
                rest of the token budget with prompt chunks
    prefill     disaggregated prefill instance: prefill steps only; finished prompts leave (KV transfer)
    decode      disaggregated decode instance: admits sequences whose KV arrived, decode steps only

Decode bookkeeping is O(1) per step (O(tokens per step) with speculative decoding). Every running
sequence advances in lockstep on the engine's token clock tau: a decode step advances it by a tokens
(1 without speculation; with it, the step's share of the expected tokens per verification step r,
a = floor(r (k+1)) - floor(r k) at decode step k, so a sequence gains r tokens per step on average).
A sequence that joins decoding at clock t0 with c0 cached tokens holds c0 + (tau - t0) tokens, needs a
new block for each token position it writes at a multiple of the block size, i.e. for tau + i = t0 - c0
(mod block size), i < a, and finishes when tau reaches t0 + remaining (its last step emits only what is
left). Running counts per block phase, and sum(c0 - t0), give each step's new blocks and total context
without touching every sequence.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .steptime import attention_pairs


class Seq:
    """A request inside an engine (mutable simulation state)."""
    __slots__ = ("req", "generated", "prefill_len", "computed", "blocks", "shared", "prefix", "t0", "c0",
                 "epoch", "first_s", "finish_s", "preemptions", "kv_ready_s")

    def __init__(self, req):
        self.req, self.generated, self.epoch, self.preemptions = req, 0, 0, 0
        self.prefill_len = req.prompt
        self.computed = self.blocks = self.shared = self.t0 = self.c0 = 0
        self.prefix = -1
        self.first_s = self.finish_s = self.kv_ready_s = float("nan")


@dataclass
class Plan:
    prefill: list = field(default_factory=list)     # [(seq, new tokens)]
    decode: bool = False


def _engine_default(key: str):
    from .engines import engine_settings

    return lambda: getattr(engine_settings(), key)


@dataclass(frozen=True)
class Limits:
    """An engine's batch limits (default: the default engine's, data/serve/engines.toml)."""
    max_seqs: int = field(default_factory=_engine_default("max_seqs"))                      # sequences in the running batch
    max_batched_tokens: int = field(default_factory=_engine_default("max_batched_tokens"))  # tokens in one step


class Engine:
    def __init__(self, sim, replica, policy: str, limits: Limits):
        self.sim, self.replica, self.policy, self.limits = sim, replica, policy, limits
        self.blocks = replica.blocks
        self.bs = self.blocks.bs
        self.waiting: deque[Seq] = deque()
        self.prefilling: list[Seq] = []
        self.running: dict[int, Seq] = {}
        self.k = 0                   # decode steps so far
        self.tau = 0                 # the token clock: tokens every running sequence has gained so far
        self.rate = replica.pool.tokens_per_step
        self.phase = [0] * self.bs
        self.finish_at: dict[int, list[Seq]] = {}
        self.S0 = 0
        self.busy = False
        self.static_batch: list[Seq] | None = None
        self.static_ctx = self.static_t0 = 0
        self.inflight = 0            # prefilled sequences whose KV cache is still being sent (disaggregation)

    # ---- load, for routing
    def load(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.running)

    def add(self, seq: Seq, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(seq)

    # ---- admission
    def _admit(self, seq: Seq, reserve_tokens: int = 0) -> bool:
        """Allocate blocks for seq's prefill (+ reserve_tokens); True when it fits."""
        b = self.blocks
        shared = b.lookup(seq.req.prefix_id, seq.req.prefix_len)
        need = b.blocks_for(seq.prefill_len + reserve_tokens) - shared
        if not b.can_allocate(need):
            if shared:
                b.unref(seq.req.prefix_id)
            return False
        b.allocate(need)
        seq.blocks, seq.shared = need, shared
        seq.prefix = seq.req.prefix_id if shared else -1
        seq.computed = shared * self.bs
        return True

    def _free(self, seq: Seq) -> None:
        self.blocks.release(seq.blocks)
        if seq.prefix >= 0:
            self.blocks.unref(seq.prefix)
        seq.blocks = seq.shared = 0
        seq.prefix = -1

    # ---- decode set
    def _join(self, seq: Seq) -> None:
        seq.t0, seq.c0 = self.tau, seq.prefill_len
        self.running[id(seq)] = seq
        self.phase[(seq.t0 - seq.c0) % self.bs] += 1
        self.S0 += seq.c0 - seq.t0
        fin = seq.t0 + seq.req.output - seq.generated      # the clock when its last token is out
        self.finish_at.setdefault(fin, []).append((seq, seq.epoch))

    def _leave(self, seq: Seq) -> None:
        del self.running[id(seq)]
        self.phase[(seq.t0 - seq.c0) % self.bs] -= 1
        self.S0 -= seq.c0 - seq.t0
        seq.epoch += 1

    def _ctx(self, seq: Seq) -> int:
        return seq.c0 + self.tau - seq.t0

    def advance(self) -> int:
        """Tokens every running sequence gains in the next decode step: 1, or with speculative decoding
        floor(r (k+1)) - floor(r k) for r expected tokens per verification step (their mean is r)."""
        if self.rate == 1.0:
            return 1
        return math.floor((self.k + 1) * self.rate + 1e-9) - math.floor(self.k * self.rate + 1e-9)

    def _grow_blocks(self) -> None:
        """Give every running sequence the blocks its next step's tokens start; preempt (LIFO, recompute)
        while they do not fit."""
        a = self.advance()
        while self.running:
            need = sum(self.phase[(self.tau + i) % self.bs] for i in range(a))
            if self.blocks.can_allocate(need, watermark=False):
                self.blocks.allocate(need)
                return
            victim = next(reversed(self.running.values()))
            if len(self.running) == 1 and not self.prefilling:
                self._never_fits(victim)
            self._preempt(victim)

    def _preempt(self, seq: Seq) -> None:
        held = self.blocks.blocks_for(self._ctx(seq)) - seq.shared
        seq.generated += self.tau - seq.t0        # tokens it decoded since it joined
        self._leave(seq)
        seq.blocks = held
        self._free(seq)
        seq.prefill_len = seq.req.prompt + seq.generated   # recompute: prompt and everything generated
        seq.computed = 0
        seq.preemptions += 1
        self.sim.requeue(self, seq)

    # ---- one step
    def kick(self, t: float) -> None:
        if self.busy:
            return
        plan = POLICIES[self.policy](self)
        if plan is None:
            if self.waiting and not (self.running or self.prefilling or self.inflight or self.static_batch):
                self._never_fits(self.waiting[0])
            return
        if plan.decode and self.policy != "static":
            self._grow_blocks()
            plan.decode = bool(self.running)
            if not plan.decode and not plan.prefill:    # everything was preempted: schedule again
                return self.kick(t)
        if not plan.decode and not plan.prefill:
            return
        self.busy = True
        self.sim.run_step(self, t, plan)

    def _never_fits(self, seq: Seq) -> None:
        from ..errors import DoesNotFitError

        b = self.blocks
        raise DoesNotFitError(
            f"request {seq.req.id} ({seq.req.prompt} prompt + {seq.req.output} output tokens) needs "
            f"{b.blocks_for(seq.prefill_len + (seq.req.output if self.policy == 'static' else 0))} KV blocks of "
            f"{self.bs} tokens; the replica has {b.total} in all: use more chips, a smaller KV-cache dtype or shorter requests")

    def step_shape(self, plan: Plan) -> tuple[tuple[int, int, int], int, int]:
        """((chunks, new tokens, attention pairs), decodes, total cached context) of a plan."""
        T = P = 0
        for seq, n in plan.prefill:
            T += n
            P += attention_pairs(n, seq.computed)
        if not plan.decode:
            return (len(plan.prefill), T, P), 0, 0
        if self.static_batch is not None:   # finished sequences stay in the batch as padding
            n = len(self.static_batch)
            return (len(plan.prefill), T, P), n, self.static_ctx + n * (self.tau - self.static_t0)
        n = len(self.running)
        return (len(plan.prefill), T, P), n, self.S0 + n * self.tau

    def finish_step(self, t: float, plan: Plan) -> None:
        self.busy = False
        if plan.decode:
            self._decoded(t)
        for seq, n in plan.prefill:
            seq.computed += n
            if seq.computed >= seq.prefill_len:
                self._prefilled(seq, t)
        if self.static_batch is not None:
            if plan.prefill:
                self.static_t0, self.static_ctx = self.tau, sum(s.prefill_len for s in self.static_batch)
            elif not self.running and not self.prefilling:
                for s in self.static_batch:
                    self._free(s)
                self.static_batch = None
        self.kick(t)

    def _decoded(self, t: float) -> None:
        """Book a decode step: every running sequence gains `advance()` tokens (static padding makes none),
        those whose clock target falls within the step finish, having emitted only what they had left."""
        a, n = self.advance(), len(self.running)
        tau0, self.tau = self.tau, self.tau + a
        self.k += 1
        tokens = n * a
        for fin in range(tau0 + 1, self.tau + 1):
            for seq, epoch in self.finish_at.pop(fin, ()):
                if seq.epoch == epoch:          # else it was preempted since it was scheduled to end here
                    tokens -= self.tau - fin
                    self._finish_decode(seq, t)
        self.sim.decoded(n, tokens)

    def _finish_decode(self, seq: Seq, t: float) -> None:
        if self.static_batch is None:        # static batches hold their reservation until the batch ends
            seq.blocks = self.blocks.blocks_for(self._ctx(seq)) - seq.shared
        self._leave(seq)
        seq.generated = seq.req.output
        if self.static_batch is None:
            self._free(seq)
        self.sim.finished(seq, t)

    def _prefilled(self, seq: Seq, t: float) -> None:
        """Its prompt (plus any recomputed tokens) is in the KV cache and the next token is out."""
        if seq in self.prefilling:
            self.prefilling.remove(seq)
        nb = self.blocks.insert(seq.req.prefix_id, seq.req.prefix_len) if seq.prefix < 0 else 0
        if nb:
            seq.blocks -= nb
            seq.shared, seq.prefix = nb, seq.req.prefix_id
        seq.generated += 1
        self.sim.tokens += 1
        if seq.generated == 1:
            self.sim.first_token(seq, t)
        if self.policy == "prefill":
            self.sim.prefilled(self, seq, t)
        elif seq.generated >= seq.req.output:
            if self.static_batch is None:
                self._free(seq)
            self.sim.finished(seq, t)
        else:
            self._join(seq)


# ---- policies
def _admit_prompts(e: Engine, budget: int, chunk: bool) -> list:
    """Admit waiting sequences into the step: whole prompts (chunk=False) or chunks of them."""
    out, lim = [], e.limits
    if chunk:
        for seq in e.prefilling:
            if budget <= 0:
                break
            n = min(seq.prefill_len - seq.computed, budget)
            out.append((seq, n))
            budget -= n
    while e.waiting and budget > 0 and len(e.running) + len(e.prefilling) < lim.max_seqs:
        seq = e.waiting[0]
        if not chunk and out and seq.prefill_len > budget:
            break
        if not e._admit(seq):
            break
        e.waiting.popleft()
        n = seq.prefill_len - seq.computed
        n = min(n, budget) if chunk else n
        e.prefilling.append(seq)
        out.append((seq, n))
        budget -= n
    return out


def _continuous(e: Engine) -> Plan | None:
    pre = _admit_prompts(e, e.limits.max_batched_tokens, chunk=False)
    if pre:
        return Plan(pre, False)
    return Plan([], True) if e.running else None


def _chunked(e: Engine) -> Plan | None:
    pre = _admit_prompts(e, e.limits.max_batched_tokens - len(e.running), chunk=True)
    if not pre and not e.running:
        return None
    return Plan(pre, bool(e.running))


def _static(e: Engine) -> Plan | None:
    if e.static_batch is not None:
        return Plan([], True) if e.running else None
    batch = []
    while e.waiting and len(batch) < e.limits.max_seqs:
        seq = e.waiting[0]
        if not e._admit(seq, reserve_tokens=seq.req.output):
            break
        batch.append(e.waiting.popleft())
    if not batch:
        return None
    e.static_batch = batch
    e.prefilling.extend(batch)
    return Plan([(s, s.prefill_len - s.computed) for s in batch], False)


def _prefill_only(e: Engine) -> Plan | None:
    pre = _admit_prompts(e, e.limits.max_batched_tokens, chunk=False)
    return Plan(pre, False) if pre else None


def _decode_only(e: Engine) -> Plan | None:
    while e.waiting and len(e.running) < e.limits.max_seqs:
        seq = e.waiting[0]
        need = e.blocks.blocks_for(seq.prefill_len)
        if not e.blocks.can_allocate(need):
            break
        e.blocks.allocate(need)
        seq.blocks, seq.shared, seq.prefix = need, 0, -1
        e.waiting.popleft()
        e._join(seq)
    return Plan([], True) if e.running else None


POLICIES = {
    "static": _static,
    "continuous": _continuous,
    "chunked": _chunked,
    "prefill": _prefill_only,
    "decode": _decode_only,
}
