"""Collective communication over a chip's links and the network between nodes (alpha-beta models).

`collective_time(chip, kind, nbytes, n)` is the time of one collective among `n` chips. What
`nbytes` means, per participant:

    allreduce      each chip's buffer (input = output = S)
    allgather      each chip's contribution s (the output is n x s)
    reducescatter  each chip's input buffer S (the output is S / n)
    alltoall       the bytes each chip sends to the others (what stays on the chip excluded)
    p2p            the bytes one chip sends to one other chip

The fabric inside a scale-up domain is the chip file's `links.chip_to_chip`: B = bandwidth of all
links together, one direction; alpha = latency per step. Closed forms for n chips in one domain,
with B_r the bandwidth a ring (or set of rings) reaches on the topology (see `fabric`):

    ring allreduce       2(n-1) alpha + 2 (n-1)/n S / B_r
    tree allreduce       2 ceil(log2 n) alpha + 2 S / B_r          (pipelined double binary tree)
    direct allreduce     2 alpha + 2 (n-1)/n S / B_r               (reduce-scatter then all-gather, each one step)
    auto                 the fastest of ring, tree and direct (as NCCL's tuner picks per message size)
    allgather            (n-1) alpha + (n-1) s / B_r
    reducescatter        (n-1) alpha + (n-1)/n S / B_r
    alltoall             alpha x diameter + S x hops / B           (direct sends to every peer)
    p2p                  alpha + S / B_pair

Topologies (d chips in the domain): `switch` (NVSwitch-style, every chip's full B into a
non-blocking switch), `fully-connected` (a direct link group to each of d-1 peers, B/(d-1) each),
`ring` (two neighbours, B/2 each), `mesh`/`torus` (2-D, four neighbours, B/4 each).

Serving engines on NVLink GPUs run small all-reduces (up to a few MiB) on their own kernels, not
NCCL: `custom_allreduce_time` (one-shot: sigma + (n-1) S / (eta B_r); two-shot: 2 sigma +
2 (n-1)/n S / (eta B_r); the faster), with the stack's synchronisation latency sigma and link
efficiency eta (`perf.step` uses it where the stack declares `custom_allreduce_max_bytes`).

More chips than one domain holds (the domain size comes from data/network.toml) go
hierarchical: inside each domain over the links, between domains over the network (one NIC per
chip, data/network.toml), e.g. allreduce = reduce-scatter in the domain, allreduce of the
1/d shards across domains (every chip on its own NIC, in parallel), all-gather in the domain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .chip import Chip
from .errors import TapeoutError
from .sourced import table

KINDS = ("allreduce", "allgather", "reducescatter", "alltoall", "p2p")
ALGORITHMS = ("ring", "tree", "direct", "pairwise", "auto")


@dataclass(frozen=True)
class Fabric:
    """What a collective among n chips sees: bandwidths per chip (one direction) and latency per step."""
    ring_bw: float       # reached by ring algorithms over the n chips
    pair_bw: float       # between two chips
    a2a_bw: float        # injection bandwidth / average hops, for all-to-all
    latency_s: float
    diameter: int        # hops of the farthest pair (latency of multi-hop all-to-all)
    ring_steps: float    # latency steps of one ring pass, in units of (n-1)


def _switch(B, d, n):
    return B, B, B, 1, 1.0


def _fully_connected(B, d, n):
    b = B / max(d - 1, 1)
    return b * (n - 1), b, b * (n - 1), 1, 1.0


def _ring(B, d, n):
    if n <= 2:
        return B / 2, B / 2, B / 2, 1, 1.0
    hops = (n * n // 4) / (n - 1)      # mean shortest-path hops on a bidirectional ring
    return B, B / 2, B / hops, n // 2, 1.0


def _torus(B, d, n, wrap=True):
    if n <= 2:
        return B / 4, B / 4, B / 4, 1, 1.0
    k = math.ceil(math.sqrt(n))
    hops = (k / 2 if wrap else 2 * k / 3) * n / (n - 1)
    ring_bw = B / 2 if n <= k else B   # one row (a 1-D ring) or the full 2-D algorithm
    steps = 1.0 if n <= k else 2 * (k - 1) / (n - 1)  # 2-D ring: 2(k-1) steps instead of n-1
    return ring_bw, B / 4, B / hops, (k // 2) * (2 if wrap else 4), steps


TOPOLOGIES = {
    "switch": _switch,
    "fully-connected": _fully_connected,
    "ring": _ring,
    "torus": _torus,
    "mesh": lambda B, d, n: _torus(B, d, n, wrap=False),
}


def domain_size(chip: Chip) -> int:
    """Chips one chip-to-chip fabric connects: data/network.toml, else links + 1 for a full mesh, else the default."""
    dom = table("network.toml")["domain"]
    if chip.name in dom:
        return int(dom[chip.name])
    link = chip.links.chip_to_chip
    return link.count + 1 if link.topology == "fully-connected" else int(dom["default"])


def link_fabric(chip: Chip, n: int, domain: int | None = None) -> Fabric:
    link = chip.links.chip_to_chip
    if link.count == 0 or link.bandwidth_bytes_per_s <= 0 or link.topology == "none":
        raise TapeoutError(f"{chip.name}: has no chip-to-chip links (links.chip_to_chip) for a {n}-chip collective")
    d = domain or domain_size(chip)
    ring_bw, pair_bw, a2a_bw, diameter, steps = TOPOLOGIES[link.topology](link.bandwidth_bytes_per_s, d, n)
    return Fabric(ring_bw, pair_bw, a2a_bw, link.latency_s, diameter, steps)


def network_fabric(network: str | None = None) -> Fabric:
    t = table("network.toml")
    name = network or t["default_network"]["name"]
    if name not in t["network"]:
        raise TapeoutError(f"network {name!r}: unknown; data/network.toml has {', '.join(t['network'])}")
    net = t["network"][name]
    bw, lat = net["bandwidth_bytes_per_s"], net["latency_s"]
    return Fabric(bw, bw, bw, lat, 1, 1.0)


def flat_time(f: Fabric, kind: str, S: float, n: int, algorithm: str = "ring") -> float:
    """One collective among n chips on one fabric (the closed forms in the module docstring)."""
    if n <= 1 or S <= 0:
        return 0.0
    if algorithm == "auto":
        return min(flat_time(f, kind, S, n, alg) for alg in ("ring", "tree", "direct"))
    a, steps = f.latency_s, f.ring_steps * (n - 1)
    if kind == "allreduce":
        if algorithm == "tree":
            return 2 * math.ceil(math.log2(n)) * a + 2 * S / f.ring_bw
        lat = 2 * a if algorithm == "direct" else 2 * steps * a
        return lat + 2 * (n - 1) / n * S / f.ring_bw
    if kind == "allgather":
        return (a if algorithm == "direct" else steps * a) + (n - 1) * S / f.ring_bw
    if kind == "reducescatter":
        return (a if algorithm == "direct" else steps * a) + (n - 1) / n * S / f.ring_bw
    if kind == "alltoall":
        lat = (n - 1) * a if algorithm == "pairwise" else f.diameter * a
        return lat + S / f.a2a_bw
    if kind == "p2p":
        return a + S / f.pair_bw
    raise TapeoutError(f"unknown collective {kind!r}: use one of {', '.join(KINDS)}")


def _hierarchical(chip: Chip, kind: str, S: float, n: int, algorithm: str, d: int, network: str | None) -> float:
    m, N = d, math.ceil(n / d)
    inner, net = link_fabric(chip, m, d), network_fabric(network)
    if kind == "allreduce":
        return (flat_time(inner, "reducescatter", S, m, algorithm) + flat_time(net, "allreduce", S / m, N, algorithm)
                + flat_time(inner, "allgather", S / m, m, algorithm))
    if kind == "allgather":
        return flat_time(net, "allgather", S, N, algorithm) + flat_time(inner, "allgather", N * S, m, algorithm)
    if kind == "reducescatter":
        return flat_time(inner, "reducescatter", S, m, algorithm) + flat_time(net, "reducescatter", S / m, N, algorithm)
    if kind == "alltoall":
        local = S * (m - 1) / (n - 1)          # to peers in the same domain, over the links
        remote = S - local                      # to the other domains, over this chip's NIC
        return max(flat_time(inner, "alltoall", local, m), net.latency_s + remote / net.a2a_bw)
    raise TapeoutError(f"unknown collective {kind!r}: use one of {', '.join(KINDS)}")


def collective_time(chip: Chip, kind: str, nbytes: float, n: int, algorithm: str = "ring", *,
                    domain: int | None = None, network: str | None = None) -> float:
    """Seconds for a collective of `nbytes` (see the module docstring for what it counts) across `n` chips.

    `domain`: chips on one link fabric (default: data/network.toml for this chip); more go
    hierarchical over `network` (a name in that file). For a p2p, n = 2 (see `transfer_time`)."""
    if kind not in KINDS:
        raise TapeoutError(f"unknown collective {kind!r}: use one of {', '.join(KINDS)}")
    if algorithm not in ALGORITHMS:
        raise TapeoutError(f"unknown collective algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if n <= 1 or nbytes <= 0:
        return 0.0
    d = domain or domain_size(chip)
    if n <= d:
        return flat_time(link_fabric(chip, n, d), kind, float(nbytes), n, algorithm)
    return _hierarchical(chip, kind, float(nbytes), n, algorithm, d, network)


def custom_allreduce_time(chip: Chip, nbytes: float, n: int, sync_s: float, efficiency: float) -> float:
    """Seconds for an all-reduce of `nbytes` per chip among `n` chips of one domain on a custom
    kernel (vLLM's / TensorRT-LLM's, over peer-to-peer loads): one-shot (one synchronisation, then
    every chip reads its n-1 peers' buffers and reduces: (n-1) S bytes in over its links) or
    two-shot (reduce-scatter, synchronise, all-gather: two synchronisations and 2 (n-1)/n S
    bytes), whichever is faster. `sync_s`: a cross-chip synchronisation (flags written and polled
    over the links); `efficiency`: the fraction of the links' bandwidth the kernel's loads reach."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    bw = link_fabric(chip, n).ring_bw * efficiency
    return min(sync_s + (n - 1) * nbytes / bw, 2 * sync_s + 2 * (n - 1) / n * nbytes / bw)


def transfer_time(chip: Chip, nbytes: float, *, across_network: bool = False, network: str | None = None) -> float:
    """Seconds to send `nbytes` from one chip to another: over the links, or over the network
    between domains (e.g. a KV cache from a prefill node to a decode node)."""
    if nbytes <= 0:
        return 0.0
    f = network_fabric(network) if across_network else link_fabric(chip, 2)
    return flat_time(f, "p2p", float(nbytes), 2)
