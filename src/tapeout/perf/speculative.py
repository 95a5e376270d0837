"""Speculative decoding: draft K tokens cheaply, verify them in one batched step of the target model.

    >>> from tapeout.perf.speculative import parse
    >>> s = parse("mtp:1:0.9")
    >>> s.kind, s.k, round(s.tokens_per_step, 2)
    ('mtp', 1, 1.9)

Text forms (`--speculative`, a validate row's `speculative` field):
- ``draft:MODEL:K[:ALPHA]``  a separate draft model proposes K tokens (K decode steps of MODEL on the
  same chips, same stack and tensor parallelism as the target).
- ``mtp:K[:ALPHA]``          the target's multi-token-prediction module (DeepSeek-V3) proposes them: K passes
  of one extra decoder layer, costed as 1/layers of a target decode step each (the module is one
  transformer block plus a projection; the shared embedding and output head are not counted again).

Acceptance: per-position rates a_1..a_K (a_i: the chance draft i is accepted given drafts 1..i-1 were);
ALPHA is one rate for every position or a comma list (the last repeats). Default: the method's sourced
per-token rate (data/serve/speculative.toml). Expected tokens per step = 1 + sum_i prod_{j<=i} a_j (the
verification step always yields one token of its own).

Cost of a step: the target's forward over K+1 new tokens per sequence on top of its cached context, plus
the drafting; TPOT = step / tokens per step. The verification step is built as a decode batch of
batch x (K+1) queries (contexts ctx .. ctx+K): GEMMs, expert routing and the output head see all
batch x (K+1) tokens, and attention runs the split-KV decode kernel (MLA absorbed, as FlashMLA verifies
drafts). It counts each sequence's cache once per query, an upper bound (FlashMLA and FlashInfer read it
once for the K+1 queries). A prefill chunk `Batch(prefill=((K+1, ctx),) * batch)` is not used: the model's
prefill attention has no KV splits and MLA prefill re-expands the whole cached latent, which puts a
2-token chunk at 1.4-3x a decode step where engines measure close to one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..errors import TapeoutError
from ..llm.kernels import Batch
from ..sourced import table

KINDS = ("draft", "mtp")
FORMS = "draft:MODEL:K[:ALPHA] or mtp:K[:ALPHA]"


@lru_cache(maxsize=None)
def data() -> dict:
    """data/serve/speculative.toml as plain floats: `acceptance` by kind, `published` figures."""
    return table("serve/speculative.toml")


@dataclass(frozen=True)
class Speculation:
    kind: str                              # draft or mtp
    k: int                                 # tokens drafted per step
    draft: str | None = None               # the draft model (kind draft)
    acceptance: tuple[float, ...] = ()     # per-position rates (the last repeats); () = the sourced default

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TapeoutError(f"speculative {self.kind!r}: use {FORMS}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise TapeoutError(f"speculative {self.kind}: K must be a whole number >= 1, got {self.k!r}")
        if (self.kind == "draft") != bool(self.draft):
            raise TapeoutError(f"speculative {self.kind}: " + ("name the draft model (draft:MODEL:K)"
                               if self.kind == "draft" else "mtp takes no draft model (mtp:K)"))
        if any(not 0.0 <= a <= 1.0 for a in self.acceptance):
            raise TapeoutError(f"speculative acceptance {self.acceptance}: each rate must be within 0..1")

    def rates(self) -> tuple[float, ...]:
        """a_1..a_K: the given rates (the last repeated) or the kind's sourced per-token rate."""
        given = self.acceptance or (data()["acceptance"][self.kind],)
        return tuple(given[min(i, len(given) - 1)] for i in range(self.k))

    @property
    def tokens_per_step(self) -> float:
        return tokens_per_step(self.rates())

    @property
    def text(self) -> str:
        rates = ",".join(f"{a:g}" for a in self.acceptance)
        return ":".join([self.kind, *([self.draft] if self.draft else []), str(self.k), *([rates] if rates else [])])


def tokens_per_step(rates) -> float:
    """Expected tokens one verification step yields: 1 + sum_i prod_{j<=i} a_j."""
    out, p = 1.0, 1.0
    for a in rates:
        p *= a
        out += p
    return out


def parse(text: str) -> Speculation:
    """A Speculation from `draft:MODEL:K[:ALPHA]` or `mtp:K[:ALPHA]` (one-line TapeoutError otherwise)."""
    parts = str(text).strip().split(":")
    kind, rest = parts[0], parts[1:]
    n = {"draft": 2, "mtp": 1}.get(kind)
    if n is None or not n <= len(rest) <= n + 1 or not all(rest[:n]):
        raise TapeoutError(f"speculative {text!r}: use {FORMS}")
    draft, k, alpha = (rest[0] if kind == "draft" else None), rest[n - 1], rest[n:]
    try:
        k_int = int(k)
        acc = tuple(float(a) for a in alpha[0].split(",")) if alpha else ()
    except ValueError:
        raise TapeoutError(f"speculative {text!r}: K must be a whole number and ALPHA rates like 0.8 or 0.9,0.7") from None
    return Speculation(kind, k_int, draft, acc)


def speculation(x) -> Speculation | None:
    """None, a Speculation, or its text form, as a Speculation (or None)."""
    return x if x is None or isinstance(x, Speculation) else parse(x)


@dataclass(frozen=True)
class SpecStep:
    """One speculative step of a batch: the verification step, one drafting pass and how many passes the
    drafting costs (K draft-model steps, or K x 1/layers of a target decode step for MTP), the yield."""
    verify: object              # StepTime of the target over K+1 tokens per sequence (plus any prefill chunks)
    draft: object               # StepTime of one decode step of the drafter (the draft model, or the target for MTP)
    passes: float               # drafting = passes x draft
    tokens_per_step: float

    @property
    def draft_s(self) -> float:
        return self.passes * self.draft.seconds

    @property
    def seconds(self) -> float:
        return self.verify.seconds + self.draft_s

    @property
    def tpot_s(self) -> float:
        return self.seconds / self.tokens_per_step

    def energy_j(self, chip) -> float:
        """Joules per chip of the step: the verification plus the drafting passes."""
        from .step import step_energy_j

        return step_energy_j(chip, self.verify) + self.passes * step_energy_j(chip, self.draft)

    def summary(self, sp: Speculation) -> dict:
        return {"speculative": sp.text, "tokens_per_step": self.tokens_per_step, "acceptance": list(sp.rates()),
                "verify_s": self.verify.seconds, "draft_s": self.draft_s}


def verify_batch(sp: Speculation, batch: int, ctx: int, prefill: tuple = ()) -> Batch:
    """The verification step's batch: K+1 decode queries per sequence, at contexts ctx .. ctx+K (beside
    any `prefill` chunks of the same step, as a chunked-prefill scheduler runs them)."""
    return Batch(prefill=prefill, decode=tuple(ctx + i for _ in range(batch) for i in range(sp.k + 1)))


def drafter(sp: Speculation, spec):
    """(model whose decode step drafts one token, the share of that step one drafted token costs, its ep):
    the target and 1/layers for MTP (one extra decoder layer), the draft model and 1 for draft:MODEL (dense,
    no expert parallelism). The draft model must split over the target's tp."""
    from ..llm.spec import load_model

    if sp.kind == "mtp":
        return spec, 1.0 / spec.layers, None
    return load_model(sp.draft), 1.0, 1


def spec_step(sp: Speculation, c, spec, batch: int, ctx: int, dt, s, impl, tp: int, ep: int,
              moe_skew: float, prefill: tuple = ()) -> SpecStep:
    """Verification of K+1 tokens per sequence on `ctx` cached tokens (with any `prefill` chunks in the same
    step), plus the K drafting passes for the `batch` decoding sequences."""
    from .api import _run

    verify = _run(c, spec, verify_batch(sp, batch, ctx, prefill), dt, s, impl, tp, ep, moe_skew)
    model, share, draft_ep = drafter(sp, spec)
    if model is not spec:
        model.check_parallel(tp)
    draft = _run(c, model, Batch.of("decode", batch, ctx), dt, s, impl, tp, ep if draft_ep is None else draft_ep,
                 moe_skew if draft_ep is None else 0.0)
    return SpecStep(verify, draft, sp.k * share, sp.tokens_per_step)


def add_memory(mem, sp: Speculation | None, c, spec, dt, batch: int, tokens: int, tp: int, ep: int):
    """`mem` (a perf.api.Memory per chip) plus what drafting adds: the draft model's weights and KV cache,
    or one MTP layer's (1/layers of the target's)."""
    from dataclasses import replace

    from .api import memory_use

    if sp is None:
        return mem
    model, share, draft_ep = drafter(sp, spec)
    m = memory_use(model, c, dt, batch, tokens, 1, tp, ep if draft_ep is None else draft_ep)
    return replace(mem, weights_bytes=mem.weights_bytes + share * m.weights_bytes,
                   kv_cache_bytes=mem.kv_cache_bytes + share * m.kv_cache_bytes)
