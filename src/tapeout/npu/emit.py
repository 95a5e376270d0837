"""Compiler plumbing: strided tensor views, per-core instruction streams with dependency
tokens, SRAM buffers and DMA emission for arbitrary views.

A `View` is a tensor in memory as numpy sees it: space, byte address, ISA dtype, shape and
strides in elements. Reshape/transpose/broadcast/slice of a view are new views (no copy);
`dma_copy` moves any view to any same-shape view with as few `Dma` instructions as the
3-D descriptor allows.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from .isa import DTYPES, QUEUE_OF, QUEUES, Barrier, Dma


@dataclass(frozen=True)
class View:
    space: str
    addr: int
    dtype: str
    shape: tuple
    strides: tuple

    @staticmethod
    def contiguous(space, addr, dtype, shape) -> "View":
        st, acc = [], 1
        for d in reversed(shape):
            st.append(acc)
            acc *= d
        return View(space, addr, dtype, tuple(shape), tuple(reversed(st)))

    @property
    def esize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def transpose(self, perm) -> "View":
        return replace(self, shape=tuple(self.shape[p] for p in perm), strides=tuple(self.strides[p] for p in perm))

    def broadcast(self, shape) -> "View":
        shape = tuple(shape)
        pad = len(shape) - len(self.shape)
        st = (0,) * pad + tuple(0 if d == 1 and n != 1 else s for d, n, s in zip(self.shape, shape[pad:], self.strides))
        return replace(self, shape=shape, strides=st)

    def slice(self, starts, steps, shape) -> "View":
        off = sum(a * s for a, s in zip(starts, self.strides))
        return replace(self, addr=self.addr + off * self.esize, shape=tuple(shape),
                       strides=tuple(s * t for s, t in zip(self.strides, steps)))

    def box(self, starts, sizes) -> "View":
        return self.slice(starts, (1,) * len(starts), sizes)

    def is_contiguous(self) -> bool:
        return self.strides == View.contiguous(self.space, 0, self.dtype, self.shape).strides or self.size <= 1

    def reshape(self, shape) -> "View | None":
        """A view with the new shape, or None if the strides cannot express it."""
        shape = tuple(shape)
        if self.is_contiguous():
            return View.contiguous(self.space, self.addr, self.dtype, shape)
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        nn = [i for i, d in enumerate(shape) if d != 1]
        newst = [0] * len(shape)
        oi = ni = 0
        while oi < len(old) and ni < len(nn):       # numpy's no-copy reshape: match groups of dims
            op, np_, oj, nj = old[oi][0], shape[nn[ni]], oi + 1, ni + 1
            while op != np_:
                if np_ < op:
                    np_ *= shape[nn[nj]]
                    nj += 1
                else:
                    op *= old[oj][0]
                    oj += 1
            if any(old[k][1] != old[k + 1][0] * old[k + 1][1] for k in range(oi, oj - 1)):
                return None
            st = old[oj - 1][1]
            for k in range(nj - 1, ni - 1, -1):
                newst[nn[k]] = st
                st *= shape[nn[k]]
            oi, ni = oj, nj
        return replace(self, shape=shape, strides=tuple(newst))


def collapse(shape, *strides_list):
    """Drop unit dims and merge adjacent dims that are contiguous in every stride list."""
    dims = [(d, [s[i] for s in strides_list]) for i, d in enumerate(shape) if d != 1]
    out: list = []
    for d, st in dims:
        if out and all(ps == s * d for ps, s in zip(out[-1][1], st)):
            out[-1] = (out[-1][0] * d, st)
        else:
            out.append((d, st))
    if not out:
        return (1,), [(1,) for _ in strides_list]
    return tuple(d for d, _ in out), [tuple(st[k] for _, st in out) for k in range(len(strides_list))]


# ----------------------------------------------------------------------------- streams

class Buf:
    """An SRAM region with the tokens of its last writer and its readers since."""
    __slots__ = ("addr", "nbytes", "w", "r", "key")

    def __init__(self, addr: int, nbytes: int):
        self.addr, self.nbytes = addr, nbytes
        self.w, self.r, self.key = [0] * len(QUEUES), [0] * len(QUEUES), None


_QI = {q: k for k, q in enumerate(QUEUES)}
_NOWAIT = {f"w_{q}": 0 for q in QUEUES}


class Stream:
    """One core's instruction stream; `emit` fills in the wait fields from buffer tokens."""

    def __init__(self):
        self.ins: list = []
        self.count = [0] * len(QUEUES)

    def emit(self, make, reads=(), writes=()):
        """make(**waits) -> instruction. RAW on reads, WAR+WAW on writes."""
        w = [0] * len(QUEUES)
        for b in reads:
            w = [max(x, y) for x, y in zip(w, b.w)]
        for b in writes:
            w = [max(x, y, z) for x, y, z in zip(w, b.w, b.r)]
        probe = make(**_NOWAIT)
        q = _QI[QUEUE_OF[type(probe)]]
        if q == 1:
            w[1] = 0        # the array runs its queue in order and accumulates in order: no self-wait
        ins = make(**{f"w_{k}": x for k, x in zip(QUEUES, w)}) if any(w) else probe
        self.count[q] += 1
        c = self.count[q]
        for b in reads:
            b.r[q] = c
        for b in writes:
            b.w, b.r = [0] * len(QUEUES), [0] * len(QUEUES)
            b.w[q] = c
        self.ins.append(ins)
        return ins

    def barrier(self):
        self.ins.append(Barrier())


class Sram:
    """Bump allocator of one kernel's SRAM buffers (reset between kernels)."""

    def __init__(self, nbytes: int, base: int = 0):
        self.cap, self.top = base + nbytes, base

    def alloc(self, nbytes: int) -> Buf:
        addr = self.top
        self.top = -(-(addr + max(int(nbytes), 1)) // 64) * 64
        if self.top > self.cap:
            raise MemoryError(f"SRAM overflow: {self.top} > {self.cap}")
        return Buf(addr, nbytes)


def dma_copy(stream: Stream, src: View, dst: View, reads=(), writes=()):
    """Copy view `src` to view `dst` (same shape) with 3-D Dma descriptors (looping beyond)."""
    assert tuple(src.shape) == tuple(dst.shape), (src.shape, dst.shape)
    shape, (ss, ds) = collapse(src.shape, src.strides, dst.strides)
    if len(shape) <= 3:
        _dma(stream, src, dst, shape, ss, ds, reads, writes)
        return
    outer = shape[:-3]
    for idx in _ndindex(outer):
        so = sum(i * s for i, s in zip(idx, ss)) * src.esize
        do = sum(i * s for i, s in zip(idx, ds)) * dst.esize
        _dma(stream, replace(src, addr=src.addr + so), replace(dst, addr=dst.addr + do),
             shape[-3:], ss[-3:], ds[-3:], reads, writes)


def _ndindex(shape):
    """Every index of `shape` in row-major order (one empty index for a scalar)."""
    return itertools.product(*map(range, shape))


def _dma(stream, src, dst, shape, ss, ds, reads, writes):
    k = 3 - len(shape)
    shape, ss, ds = (1,) * k + tuple(shape), (0,) * k + tuple(ss), (0,) * k + tuple(ds)
    stream.emit(lambda **w: Dma(src_space=src.space, src_addr=src.addr, dst_space=dst.space, dst_addr=dst.addr,
                                dtype=src.dtype, n0=shape[0], n1=shape[1], n2=shape[2], ss0=ss[0], ss1=ss[1],
                                ss2=ss[2], ds0=ds[0], ds1=ds[1], ds2=ds[2], **w), reads, writes)


def split_even(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges splitting range(n) into `parts` near-equal non-empty pieces."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, a = [], 0
    for i in range(parts):
        b = a + q + (1 if i < r else 0)
        out.append((a, b))
        a = b
    return out
