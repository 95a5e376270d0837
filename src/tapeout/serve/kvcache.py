"""Paged KV cache: fixed-size blocks sized from the chip memory left after weights (vLLM-style).

Capacity (per chip, then x ep attention groups in a replica), as the engine plans it
(`data/serve/engines.toml` memory_basis):

    total (vLLM):        kv = memory x utilization - weights - activation reserve
    free (TensorRT-LLM): kv = (memory - weights - activation reserve) x utilization
    blocks = floor(kv / (kv bytes per token x block size))

where weights and KV are this chip's share under tp x pp (x ep for routed experts). KV heads are
split over tp (replicated when tp > kv heads); an MLA latent cache is replicated over tp.

KV offload (`kv_offload="host"` or `"pool"`, data/serve/kv_offload.toml): a second tier adds
floor(tier bytes per chip / (kv bytes per token x block size)) blocks: host DRAM over the chip's
PCIe link (gen x lanes from the chip file), or a pooled memory on the scale-up fabric
(CloudMatrix384's Unified Bus to the CPUs' DRAM). HBM blocks are used first; a step touching
sequences whose KV spilled past HBM streams those blocks in (`StepTimer.step(offload_bytes=...)`).

Prefix caching: a request's first `prefix_len // block_size` blocks can be shared with earlier
requests of the same prefix id. Shared blocks are reference-counted and stay cached after their
users finish, evicted least-recently-used when blocks run out.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..errors import DoesNotFitError, TapeoutError

OFFLOAD_TIERS = ("host", "pool")


@dataclass(frozen=True)
class OffloadTier:
    """A second KV tier of every chip: its capacity and the bandwidth that streams blocks back to HBM."""
    name: str
    bytes_per_chip: float
    bandwidth_bytes_per_s: float


def offload_tier(chip, kind: str | None) -> OffloadTier | None:
    """The `kind` tier ("host", "pool" or None) of `chip` from data/serve/kv_offload.toml."""
    if kind is None:
        return None
    from .data import table

    t = table("kv_offload")
    if kind == "host":
        lane = t["pcie_lane_bytes_per_s"].get(f"gen{chip.links.host.pcie_gen}")
        if lane is None:
            raise TapeoutError(f"{chip.name}: links.host.pcie_gen {chip.links.host.pcie_gen} has no per-lane rate in "
                               f"data/serve/kv_offload.toml")
        return OffloadTier("host", t["host"]["memory_bytes_per_chip"], lane * chip.links.host.pcie_lanes)
    if kind == "pool":
        bw = min(t["pool"]["bandwidth_bytes_per_s_per_chip"], chip.links.chip_to_chip.bandwidth_bytes_per_s)
        if bw <= 0:
            raise TapeoutError(f"{chip.name}: kv_offload 'pool' needs a chip-to-chip link (links.chip_to_chip has none)")
        return OffloadTier("pool", t["pool"]["memory_bytes_per_chip"], bw)
    raise TapeoutError(f"kv_offload {kind!r}: use one of {', '.join(OFFLOAD_TIERS)}")


@dataclass(frozen=True)
class MemoryPlan:
    """Per-chip memory of one replica and the KV blocks it leaves."""
    capacity_bytes: float
    usable_bytes: float
    weights_bytes: float
    activation_bytes: float
    kv_bytes_per_token: float       # this chip's share of one token's KV cache
    block_size: int
    blocks: int                     # in the whole replica (all ep groups), HBM + offload tier
    hbm_blocks: int | None = None   # of them in HBM (None: all)
    offload: OffloadTier | None = None

    @property
    def blocks_in_hbm(self) -> int:
        return self.blocks if self.hbm_blocks is None else self.hbm_blocks

    @property
    def kv_tokens(self) -> int:
        return self.blocks * self.block_size

    def offload_bytes(self, in_use_tokens: float, touched_tokens: float, ep: int) -> float:
        """Bytes per chip a step streams from the offload tier: the replica's `in_use_tokens` of KV beyond
        what HBM holds (HBM fills first), at most the `touched_tokens` (new + cached context) of the step,
        spread over the `ep` attention groups. 0 without a tier."""
        if self.offload is None:
            return 0.0
        spilled = max(0, in_use_tokens - self.blocks_in_hbm * self.block_size)
        return min(spilled, touched_tokens) * self.kv_bytes_per_token / ep


def _expert_params(spec) -> float:
    m = spec.moe
    if m is None:
        return 0.0
    return (spec.layers - min(m.dense_layers, spec.layers)) * m.experts * 3 * spec.hidden * m.intermediate


def _per_chip(spec, dtypes, par) -> tuple[float, float]:
    """(weight bytes, KV bytes per token) of one chip of a tp x pp x ep replica of `spec`."""
    tp, pp, ep = par.tp, par.pp, par.ep
    experts = _expert_params(spec)
    weights = ((spec.n_params - experts) / (tp * pp) + experts / (tp * pp * ep)) * dtypes.w
    if spec.mla:
        per_layer = (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim)          # replicated over tp
    else:
        per_layer = 2 * spec.head_dim * math.ceil(spec.kv_heads / min(tp, spec.kv_heads))
    return weights, math.ceil(spec.layers / pp) * per_layer * dtypes.kvb


def plan_memory(spec, chip, dtypes, par, *, block_size: int | None = None, utilization: float | None = None,
                max_batched_tokens: int | None = None, max_seqs: int | None = None, basis: str | None = None,
                engine: str | None = None, offload: OffloadTier | None = None, speculative=None) -> MemoryPlan:
    """How many KV blocks a replica of `par` (tp x pp x ep chips) holds after weights and activations
    (plus those of an `offload` tier); unset settings are `engine`'s (data/serve/engines.toml). A
    `speculative` drafter (perf.speculative.Speculation) adds its weights and its KV bytes per token."""
    from .engines import engine_settings

    e = engine_settings(engine)
    block_size, utilization = block_size or e.block_size, utilization or e.memory_fraction
    max_batched_tokens, max_seqs, basis = max_batched_tokens or e.max_batched_tokens, max_seqs or e.max_seqs, basis or e.memory_basis
    tp, pp, ep = par.tp, par.pp, par.ep
    weights, kv_tok = _per_chip(spec, dtypes, par)
    if speculative is not None:     # the drafter's share: one MTP layer, or the whole draft model beside the target
        from ..perf.speculative import drafter

        model, share, draft_ep = drafter(speculative, spec)
        w, k = _per_chip(model, dtypes, par if draft_ep is None else replace(par, ep=draft_ep))
        weights, kv_tok = weights + share * w, kv_tok + share * k
    inter = spec.moe.intermediate * spec.moe.top_k if spec.moe else spec.intermediate
    act = max_batched_tokens * (2 * spec.hidden + 3 * inter / tp) * dtypes.a + max_seqs * spec.vocab / tp * 4
    if basis == "free":
        free = (chip.memory_bytes - weights - act) * utilization
        usable = free + weights + act
    else:
        usable = chip.memory_bytes * utilization
        free = usable - weights - act
    blocks = max(0, int(free // (kv_tok * block_size))) * ep
    extra = int(offload.bytes_per_chip // (kv_tok * block_size)) * ep if offload else 0
    if free < 0 or blocks + extra < 1:
        gib = 2.0 ** 30
        raise DoesNotFitError(
            f"{spec.name} on {tp * pp * ep}x {chip.name} (tp={tp}, pp={pp}, ep={ep}): weights {weights / gib:.1f} GiB "
            f"+ activations {act / gib:.1f} GiB per chip leave no room for a KV cache in {usable / gib:.1f} GiB "
            f"(of {chip.memory_bytes / gib:.0f} GiB); use more chips, fp8/int4 weights "
            f"or a smaller max_batched_tokens" + ("" if offload or free < 0 else ", or kv_offload='host'"))
    return MemoryPlan(chip.memory_bytes, usable, weights, act, kv_tok, block_size, blocks + extra, blocks, offload)


class BlockManager:
    """Free blocks, per-request allocation and the prefix cache of one replica."""

    def __init__(self, blocks: int, block_size: int, prefix_caching: bool = False, watermark: float = 0.01):
        self.total, self.bs, self.free = blocks, block_size, blocks
        self.watermark = int(blocks * watermark)
        self.prefix_caching = prefix_caching
        self.prefixes: OrderedDict[int, list[int]] = OrderedDict()   # prefix id -> [blocks, users], LRU order
        self.evictable = 0                                           # blocks of cached prefixes with no user
        self.hits = self.lookups = 0

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def available(self) -> int:
        return self.free + self.evictable

    def can_allocate(self, n: int, watermark: bool = True) -> bool:
        return n <= self.available() - (self.watermark if watermark else 0)

    def allocate(self, n: int) -> None:
        if n > self.free:
            self._evict(n - self.free)
        if n > self.free:
            raise RuntimeError(f"KV cache: allocating {n} blocks with {self.free} free (a scheduler bug)")
        self.free -= n

    def release(self, n: int) -> None:
        self.free += n
        assert self.free <= self.total, "KV cache: released more blocks than allocated"

    def _evict(self, need: int) -> None:
        for pid in list(self.prefixes):
            if need <= 0:
                break
            nb, users = self.prefixes[pid]
            if users == 0:
                del self.prefixes[pid]
                self.evictable -= nb
                self.free += nb
                need -= nb

    # ---- prefix cache
    def lookup(self, pid: int, prefix_len: int) -> int:
        """Blocks of `pid`'s prefix already cached (and now used by one more request)."""
        if not self.prefix_caching or pid < 0 or prefix_len < self.bs:
            return 0
        self.lookups += 1
        entry = self.prefixes.get(pid)
        if entry is None:
            return 0
        self.hits += 1
        if entry[1] == 0:
            self.evictable -= entry[0]
        entry[1] += 1
        self.prefixes.move_to_end(pid)
        return entry[0]

    def insert(self, pid: int, prefix_len: int) -> int:
        """Register a just-computed prefix; returns the blocks that moved from the request into the cache."""
        if not self.prefix_caching or pid < 0 or prefix_len < self.bs or pid in self.prefixes:
            return 0
        nb = prefix_len // self.bs
        self.prefixes[pid] = [nb, 1]
        return nb

    def unref(self, pid: int) -> None:
        entry = self.prefixes.get(pid)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.evictable += entry[0]

    def used(self) -> int:
        return self.total - self.free

    def in_use(self) -> int:
        """Blocks held by sequences (cached prefixes nobody uses aside)."""
        return self.total - self.free - self.evictable
