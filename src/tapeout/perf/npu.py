"""The virtual NPU's timing in closed form: the analytical model's path for chips it can run.

The simulator (tapeout.npu.sim) walks every instruction of a compiled program on three in-order
queues per core (dma, mxu, vec). This module times the same kernels without emitting or walking
them: the compiler's own tile plan (`tapeout.npu.kernels.gemm_plan`), the same instruction
counts per tile, each instruction costed by the simulator's own cost table (`sim.COST`, so a
change to an instruction's timing flows through), and the queues combined in closed form:

- the busiest core (core 0: kernels split their tiles or rows evenly, the first cores get one
  more) sets the kernel's time; every kernel ends with a barrier;
- a queue that runs back to back takes the sum of its instructions' occupancies; the other
  queues add their pipeline fill (before the first instruction of the busy queue can start) and
  drain (after its last one);
- an operand buffer is reused three chunks later (triple buffering), so a load waits for the
  matmul three chunks before it to complete: a chunk costs at least (DMA + DRAM latency +
  matmul + array latency) / 3, the bound that keeps a decode GEMM below the DRAM bandwidth;
- a GEMM is a recurrence over the busiest core's output tiles (the DMA queue's time, the array's,
  each tile's accumulators ready), with each tile's epilogue as the kernel emits it, LAG tiles
  behind its matmuls: the output-stage prefix (npu.kernels.fused_prefix) as a Fixpipe, the rest
  as vector ops whose operand loads and the store sit in the in-order DMA queue (`run_epilogue`).

Every figure is a cycle count at the chip's clock from the chip file and data/npu_timing.toml;
nothing here is fitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

NBUF_SLOTS = 3   # must equal tapeout.npu.kernels.NBUF; checked in tests/test_npu_consistency.py
LAG = 2          # must equal tapeout.npu.kernels.LAG (output tiles an epilogue trails its matmuls by); checked there


def applies(chip) -> bool:
    """The chip is one the virtual NPU runs as its file describes it: an npu/tpu with one known
    array per core that is weight-stationary (or of unstated dataflow, which the virtual NPU runs
    WS). Several arrays per core (TPU MXUs) the virtual NPU folds into wider PEs, which is not
    their timing, so those chips keep the analytical systolic path."""
    m = chip.cores.matrix
    return chip.chip.kind in ("npu", "tpu") and bool(m.array_rows and m.array_cols) and m.units == 1 and \
        m.dataflow in ("ws", "unknown")


@dataclass(frozen=True)
class Machine:
    """What the closed forms need of one chip: the simulator's Timing and cost table."""
    t: object          # tapeout.npu.sim.Timing
    cost: dict         # instruction class -> cost function (sim.COST)
    isa: object        # the tapeout.npu.isa module (instruction classes, DTYPES)
    memo: dict = field(default_factory=dict, compare=False, repr=False)   # (what, args) -> cost: a sweep asks
    # the same few thousand instruction shapes again and again

    def cached(self, key, make):
        r = self.memo.get(key)
        if r is None:
            r = self.memo[key] = make()
        return r

    @property
    def cores(self) -> int:
        return self.t.geom.cores

    def dma(self, space: str, nbytes: float, dtype: str = "bf16") -> tuple[int, int]:
        """(queue cycles, latency) of one DMA of `nbytes` between `space` and a core's SRAM."""
        n = max(1, int(round(nbytes / self.isa.DTYPES[dtype].itemsize)))
        return self.cached(("dma", space, n, dtype), lambda: self.cost[self.isa.Dma](self.t, self.isa.Dma(
            src_space=space, src_addr=0, dst_space="sram", dst_addr=0, dtype=dtype, n0=1, n1=1, n2=n))[:2])

    def matmul(self, m: int, k: int, n: int, in_dtype: str, acc_dtype: str) -> tuple[int, int]:
        return self.cached(("mm", m, k, n, in_dtype, acc_dtype), lambda: self.cost[self.isa.Matmul](self.t, self.isa.Matmul(
            acc_addr=0, a_addr=0, w_addr=0, M=m, K=k, N=n, lda=k, ldw=n, ldc=n, in_dtype=in_dtype,
            acc_dtype=acc_dtype))[:2])

    def vec(self, func: str, rows: int, cols: int, d: str = "fp32", a: str = "fp32", b: str = "fp32",
            c: str = "fp32") -> int:
        return self.cached(("vec", func, rows, cols, d, a, b, c), lambda: self.cost[self.isa.Vec](self.t, self.isa.Vec(
            func=func, rows=rows, cols=cols, d_addr=0, d_dtype=d, d_rs=cols, a_addr=0, a_dtype=a, a_rs=cols, b_addr=0,
            b_dtype=b, c_addr=0, c_dtype=c))[0])

    def fixpipe(self, m: int, n: int, d_dtype: str, stages: tuple) -> int:
        """Output-stage cycles of a Fixpipe over an m x n tile: stages (func, operand kind or None, dtype)."""
        def make():
            kw = {"n": len(stages)}
            for j, (f, kind, odt) in enumerate(stages):
                kw.update({f"f{j}": f, f"o{j}_kind": kind or "none", f"o{j}_dtype": odt or "fp32"})
            return self.cost[self.isa.Fixpipe](self.t, self.isa.Fixpipe(acc_addr=0, acc_dtype="fp32", M=m, N=n,
                                                                         d_addr=0, d_dtype=d_dtype, **kw))[0]
        return self.cached(("fix", m, n, d_dtype, stages), make)

    def reduce(self, rows: int, cols: int, a: str = "fp32") -> int:
        return self.cached(("red", rows, cols, a), lambda: self.cost[self.isa.Reduce](self.t, self.isa.Reduce(
            func="sum", rows=rows, cols=cols, d_addr=0, d_dtype="fp32", d_rs=1, a_addr=0, a_dtype=a, a_rs=cols))[0])


def machine(chip) -> Machine:
    from ..npu import isa, sim   # the simulator's own tables (npu does not import perf: no cycle)
    from .kernels import chip_cache
    c = chip_cache(chip)
    if "npu_machine" not in c:
        c["npu_machine"] = Machine(sim.Timing.from_chip(chip), sim.COST, isa)
    return c["npu_machine"]


def space_of(chip, nbytes: float) -> str:
    """Where the compiler keeps an activation of `nbytes`: the shared buffer while it fits, else DRAM.
    The compiler allocates first-fit among the values alive at the time (the residual stream, the
    kernel's other operands); a kernel-level model does not see them, so an operand counts as
    fitting while it takes at most half of the buffer."""
    return "shared" if chip.shared_buffer.bytes and nbytes <= chip.shared_buffer.bytes / 2 else "dram"


def _busiest(n_items: int, cores: int) -> int:
    """Items of the first core when `n_items` are split evenly over `cores` (npu.emit.split_even)."""
    return -(-n_items // max(1, min(cores, n_items)))


OPERAND_KIND = {True: "full", False: "row", "row": "row", "col": "col", "one": "one"}   # epilogue rows -> isa kind
NEVER = float("-inf")


def epilogue_steps(chip, epilogue: tuple, m: int, n: int, acc_dtype: str, out_dtype: str, out_space: str) -> tuple:
    """One m x n output tile's epilogue as npu.kernels._epilogue emits it, each step costed by the
    simulator: ("load", occupancy, latency) of an output-stage operand, ("fix", cycles) the Fixpipe on
    the array's output stage (the leading ops it takes: npu.kernels.fused_prefix), ("ld_eb", occupancy,
    latency) an operand of a vector op (all share one SRAM buffer: a load waits for the vector op that
    read the previous one), ("vec", cycles), and the final ("store", occupancy, latency)."""
    mc = machine(chip)
    return mc.cached(("epi", epilogue, m, n, acc_dtype, out_dtype, out_space),
                     lambda: _epilogue_steps(mc, epilogue, m, n, acc_dtype, out_dtype, out_space))


def _epilogue_steps(mc, epilogue, m, n, acc_dtype, out_dtype, out_space) -> tuple:
    from ..npu.kernels import fused_prefix
    size = lambda dt: mc.isa.DTYPES[dt].itemsize
    ops = [(f, None if odt is None else OPERAND_KIND[rows], odt, sp[0] if sp else "shared")
           for f, odt, rows, *sp in epilogue]
    count = {"full": m * n, "row": n, "col": m, "one": 1}
    k, fstore = fused_prefix(mc.t.geom, [(f, kind or "none") for f, kind, _, _ in ops], out_dtype)
    steps, cur = [], acc_dtype
    if k or fstore:
        done = k == len(ops) and fstore
        fix = [(f, kind, odt) for f, kind, odt, _ in ops[:k]]
        steps += [("load", *mc.dma(sp, count[kind] * size(odt), odt)) for _, kind, odt, sp in ops[:k] if kind]
        steps.append(("fix", mc.fixpipe(m, n, out_dtype if done else "fp32", tuple(fix)), any(x[1] == "full" for x in fix)))
        if done:
            steps.append(("store", *mc.dma(out_space, m * n * size(out_dtype), out_dtype)))
            return tuple(steps)
        cur = "fp32"
    for f, kind, odt, sp in ops[k:]:
        if kind:
            steps.append(("ld_eb", *mc.dma(sp, count[kind] * size(odt), odt)))
        steps.append(("vec", mc.vec(f, m, n, "fp32", cur, odt or "fp32"), bool(kind)))
        cur = "fp32"
    steps.append(("vec", mc.vec("copy", m, n, out_dtype, cur), False))
    steps.append(("store", *mc.dma(out_space, m * n * size(out_dtype), out_dtype)))
    return tuple(steps)


def run_epilogue(steps, acc_ready, dma_free, dma_done, vec_free, epi_free):
    """The queues after one tile's epilogue (npu.sim's walk of these steps): the cycle the DMA queue
    is next free, its last completion (DMAs complete in order), the vector unit and the output stage
    next free. A step starts when its queue is free and what it reads is ready: the accumulators
    (`acc_ready`), its operand (every DMA issued before it complete), the step before it."""
    ready, eb = acc_ready, NEVER
    for st in steps:
        kind = st[0]
        if kind == "load":
            dma_free += st[1]
            dma_done = max(dma_done, dma_free + st[2])
        elif kind == "ld_eb":
            dma_free = max(dma_free, eb) + st[1]
            dma_done = max(dma_done, dma_free + st[2])
        elif kind == "fix":
            epi_free = max(epi_free, ready, dma_done) + st[1]
            ready, eb = epi_free, epi_free if st[2] else eb
        elif kind == "vec":
            vec_free = max(vec_free, ready, dma_done if st[2] else NEVER) + st[1]
            ready, eb = vec_free, vec_free if st[2] else eb
        else:  # store
            dma_free = max(dma_free, ready) + st[1]
            dma_done = max(dma_done, dma_free + st[2])
    return dma_free, dma_done, vec_free, epi_free


@dataclass(frozen=True)
class _GemmTiles:
    """What one output tile of a GEMM costs on the busiest core: its K chunks and its epilogue."""
    mc: Machine
    chip: object
    K: int
    tk: int
    nk: int
    in_dtype: str
    acc_dtype: str
    out_dtype: str
    a_space: str
    out_space: str
    epilogue: tuple
    L_ld: float       # latency of a chunk's loads (the slower of the activation and weight spaces)
    lam: float        # the array's latency: the same for every matmul

    def steps(self, m, n):
        return epilogue_steps(self.chip, self.epilogue, m, n, self.acc_dtype, self.out_dtype, self.out_space)

    def chunk(self, m, k, n, a_hit, w_hit):
        """(DMA cycles, matmul occupancy) of one K chunk."""
        mc, es = self.mc, self.mc.isa.DTYPES[self.in_dtype].itemsize
        return (0 if a_hit else mc.dma(self.a_space, m * k * es, self.in_dtype)[0]) + \
            (0 if w_hit else mc.dma("dram", k * n * es, self.in_dtype)[0]), mc.matmul(m, k, n, self.in_dtype, self.acc_dtype)[0]

    def body(self, m, n, a_hit, w_hit):
        """One output tile's K chunks (all tk deep but the last): (DMA busy, matmul busy, the first chunk's
        DMA and matmul, the DMA queue's time for them when every chunk waits for the matmul three
        chunks before, whose buffers it reuses (a chunk takes at least a third of its load, the load's
        latency and a matmul), and the array's time from the first load's issue to the last matmul's
        issue + occupancy when it only waits for loads: the latest of each chunk's load landing + the
        matmuls from it on (linear in the chunk for the full ones: the first or the last of them).)"""
        nk, L_ld, lam = self.nk, self.L_ld, self.lam
        (d, o), (dl, ol) = self.chunk(m, self.tk, n, a_hit, w_hit), self.chunk(m, self.K - (nk - 1) * self.tk, n, a_hit, w_hit)
        paced = (nk - 1) * max(d, (d + L_ld + o + lam) / NBUF_SLOTS) + max(dl, (dl + L_ld + ol + lam) / NBUF_SLOTS)
        fed = L_ld + ol + max((nk - 1) * d + dl, d + (nk - 1) * o if nk > 1 else 0, (nk - 1) * d + o if nk > 1 else 0)
        return (nk - 1) * d + dl, (nk - 1) * o + ol, (d, o) if nk > 1 else (dl, ol), paced, fed

    def epi(self, m, n):
        """A tile's epilogue: (its DMA queue time when it need not wait for the accumulators, and its
        last completion; the same from the accumulators' ready when the DMA queue is free; the DMA,
        vector and output-stage busy cycles)."""
        ep = self.steps(m, n)
        free = run_epilogue(ep, NEVER, 0, self.L_ld, NEVER, NEVER)
        after = run_epilogue(ep, 0, NEVER, NEVER, NEVER, NEVER)
        busy = lambda kinds: sum(x[1] for x in ep if x[0] in kinds)
        return free[0], free[1], after[0], after[1], busy(("load", "ld_eb", "store")), busy(("vec",)), busy(("fix",))


def gemm_cycles(chip, M: int, N: int, K: int, groups: int = 1, in_dtype: str = "bf16", acc_dtype: str = "fp32",
                out_dtype: str = "bf16", a_space: str = "shared", out_space: str = "shared",
                epilogue: tuple = ()) -> dict:
    """Cycles of the NPU's `gemm` kernel for C[M,N] = A[M,K] @ W[K,N] (x groups jobs), weights in DRAM.

    `epilogue`: (vector func, operand dtype or None, operand shape: True full, False / "row" one value
    per column, "col" one per row[, operand's memory space: shared unless given]) per fused op after
    the accumulation (scale, bias, activation, residual); the final cast to `out_dtype` and the store
    are always there. The leading ops the chip's matrix output stage supports run there (a Fixpipe
    on its own queue), the rest on the vector unit (`epilogue_steps`). A tile's epilogue trails its
    matmuls by LAG tiles: the DMA queue runs it after the loads of the tile LAG later, waiting there
    for the vector ops its operand loads and store depend on (`run_epilogue`).
    Returns {"cycles", "dma", "mxu", "vec", "epi"} of the busiest core (busy cycles per queue)."""
    from ..npu.kernels import gemm_plan
    mc = machine(chip)
    t, cores = mc.t, mc.cores
    tm, tn, tk = mc.cached(("plan", M, N, K, groups, in_dtype, acc_dtype),
                           lambda: gemm_plan(chip, M, N, K, groups, in_dtype, acc_dtype))
    mt, nt, nk = -(-M // tm), -(-N // tn), -(-K // tk)
    mine = _busiest(groups * mt * nt, cores)
    tiles = _GemmTiles(mc, chip, K, tk, nk, in_dtype, acc_dtype, out_dtype, a_space, out_space, epilogue,
                       max(t.latency[a_space], t.latency["dram"]), mc.matmul(tm, tk, tn, in_dtype, acc_dtype)[1])
    back = {1: NBUF_SLOTS, NBUF_SLOTS: 1}.get(nk)
    key = (M, N, K, groups, in_dtype, acc_dtype, a_space, out_space, out_dtype, epilogue)
    dma = mxu = vec = fix = 0.0
    D = X = first = None            # the DMA queue's time, the array's
    accs, eps, chunk_o = [], [], []

    def chain(D, g):
        """The DMA queue after tile g's epilogue: it runs when the queue gets to it, its vector ops
        (and so its later loads and its store) not before tile g's accumulators are ready."""
        e_free, _, e_after, *_ = eps[g]
        return max(D + e_free, accs[g] + e_after)

    for g in range(mine):
        m, n, a_hit, w_hit = _gemm_tile(g, M, N, tm, tn, mt, nt, back)
        d_, o_, (d0, o0), paced, fed = mc.cached(("gemm body",) + key + (m, n, a_hit, w_hit),
                                                 lambda: tiles.body(m, n, a_hit, w_hit))
        ep = mc.cached(("gemm epi",) + key + (m, n), lambda: tiles.epi(m, n))
        if D is None:
            first = d0 + tiles.L_ld
            D, X = 0, first
        c = g * nk - NBUF_SLOTS       # the chunk whose buffers this tile's first chunk reuses
        if c >= 0:
            D = max(D, accs[c // nk] - (nk - 1 - c % nk) * chunk_o[c // nk])
        start = D
        D += max(d_, paced if nk > NBUF_SLOTS else 0)
        X = max(X + o_, start + fed)                  # matmuls follow one another and wait for their loads
        accs.append(X + tiles.lam)
        chunk_o.append(o0)
        eps.append(ep)
        if g >= LAG:
            D = chain(D, g - LAG)
        dma, mxu, vec, fix = dma + d_ + ep[4], mxu + o_, vec + ep[5], fix + ep[6]
    for g in range(max(0, mine - LAG), mine - 1):
        D = chain(D, g)
    return _gemm_bounds(tiles, eps[-1], D, accs[-1], first, mine, mxu, vec, fix, m, n) | \
        {"dma": dma, "mxu": mxu, "vec": vec, "epi": fix, "tiles": (tm, tn, tk)}


def _gemm_tile(g, M, N, tm, tn, mt, nt, back) -> tuple:
    """(rows, cols, activation chunk resident, weight chunk resident) of the busiest core's tile g (tiles
    run M-fastest, then N, then job). A resident operand chunk is not reloaded: the chunk NBUF_SLOTS loads
    back had the same key only when the K chunks per tile divide NBUF_SLOTS (same k0), i.e. `back` tiles
    earlier (None: never)."""
    j, rem = divmod(g, nt * mt)
    ni, mi = divmod(rem, mt)
    a_hit = back is not None and g >= back and (g - back) // (nt * mt) == j and (g - back) % mt == mi
    w_hit = back is not None and g >= back and (g - back) // mt == g // mt
    return min(tm, M - mi * tm), min(tn, N - ni * tn), a_hit, w_hit


def _gemm_bounds(tiles, last_ep, D, last_acc, first, mine, mxu, vec, fix, m, n) -> dict:
    """A GEMM's cycles: the longest of the DMA queue's recurrence (ending with the last tile's epilogue)
    and the array's, the vector unit's and the output stage's work back to back after the first tile."""
    _, e_free_done, _, e_after_done, *_ = last_ep
    memory = max(D + e_free_done, last_acc + e_after_done)
    compute = first + mxu + tiles.lam + e_after_done
    store = next(x[1] + x[2] for x in tiles.steps(m, n) if x[0] == "store")
    vector = first + mxu / mine + tiles.lam + vec + store       # epilogues back to back after the first tile
    output = first + mxu / mine + tiles.lam + fix + store
    return {"cycles": max(memory, compute, vector, output), "memory_bound": memory > max(compute, vector, output)}


ATTN_Q_ROWS, ATTN_KEYS = 128, 512   # must equal tapeout.npu.kernels.attention's tq and tk (checked by a test)


def attention_cycles(chip, B: int, Hq: int, Hkv: int, Lq: int, Lk: int, D: int, Dv: int, causal: bool,
                     dtype: str = "bf16", q_space: str = "shared", kv_space: str = "shared",
                     out_space: str = "shared") -> dict:
    """Cycles of the NPU's flash `attention` kernel (npu.kernels.attention): one job per (batch, head),
    or per KV head with the group's query rows stacked for decode; query blocks of 128 rows against
    512-key chunks with an online softmax, causal chunks past the diagonal skipped.

    Per chunk the array and the vector unit hand the scores back and forth: QK^T, then max, the
    exponentials and the running sums on the vector unit, then PV, whose result the vector unit
    folds into the output; QK^T of the next chunk follows PV on the in-order array. A chunk takes
    the longest of that dependency chain, the vector unit's and the DMA queue's work."""
    mc = machine(chip)
    t, es = mc.t, mc.isa.DTYPES[dtype].itemsize
    stack = Hq // Hkv if Lq == 1 and not causal else 1
    jobs = B * Hq // stack
    rows = Lq * stack
    tq, tk = min(rows, ATTN_Q_ROWS), min(Lk, ATTN_KEYS)
    mine = _busiest(jobs, mc.cores)
    L_kv, L_q, L_out = t.latency[kv_space], t.latency[q_space], t.latency[out_space]
    total = dma = mxu = vec = 0.0
    for r0 in range(0, rows, tq):
        r = min(tq, rows - r0)
        chunks = [min(tk, Lk - c0) for c0 in range(0, Lk, tk) if not (causal and c0 > r0 + r - 1)]
        diag = [causal and c0 + c - 1 > r0 for c0, c in zip(range(0, Lk, tk), chunks)]
        dq = mc.dma(q_space, r * D * es, dtype)[0]
        end = mc.vec("select", r, 1) + mc.vec("div", r, Dv, dtype)
        store = mc.dma(out_space, r * Dv * es, dtype)[0]
        A = B = 0.0                      # the DMA queue's path, and the array/vector dependency chain
        for i, c in enumerate(chunks):
            dk, dv = mc.dma(kv_space, c * D * es, dtype)[0], mc.dma(kv_space, c * Dv * es, dtype)[0]
            qk, lam = mc.matmul(r, D, c, dtype, "fp32")
            pv, _ = mc.matmul(r, c, Dv, dtype, "fp32")
            soft = (mc.vec("tril", r, c) if diag[i] else 0) + mc.reduce(r, c) + mc.vec("max", r, 1) + \
                mc.vec("subexp", r, 1) + mc.vec("subexp", r, c, dtype)
            after = mc.reduce(r, c, dtype) + mc.vec("fma", r, 1) + mc.vec("copy", r, 1)
            fo = mc.vec("fma", r, Dv)
            fold = max(after, pv + lam) + fo        # PV's result folded into the output
            if i + 1 < len(chunks):                 # the next QK^T follows PV on the array
                nxt = mc.matmul(r, D, chunks[i + 1], dtype, "fp32")[0]
                B += qk + lam + soft + max(pv, fold - nxt - lam)
            else:
                B += qk + lam + soft + fold
                A += max(L_kv + qk + lam + soft + pv + lam - dv, L_kv + pv + lam) + fo
            A += dk + dv
            if i == 0:
                B += dk + L_kv
            dma, mxu, vec = dma + dk + dv, mxu + qk + pv, vec + soft + after + fo
        fills = 2 * mc.vec("fill", r, 1) + mc.vec("fill", r, Dv)
        total += dq + max(A, B) + end + store
        dma += dq + store
        vec += fills + end
    return {"cycles": mine * total + L_out, "memory_bound": dma > mxu + vec,
            "dma": mine * dma, "mxu": mine * mxu, "vec": mine * vec}


def row_cycles(chip, rows: int, cols: int, loads, steps, stores, whole_rows: bool = False) -> dict:
    """Cycles of the NPU's `row_kernel` (npu.kernels.row_kernel) over a [rows, cols] tensor.

    loads / stores: (tile kind, ISA dtype, memory space) per operand, kind full (rows x cols),
    col (one per row) or row (one per column, loaded once); steps: (op, vector func, kind of its
    result, dtype of its result, dtypes of its operands) with op "vec" or "red". Rows are cut into
    boxes that fit half the SRAM (double buffers), at most 1024 rows, 4096 columns unless whole
    rows are needed, spread over the cores. The vector steps start when the first load lands; a
    box's store sits in the in-order DMA queue before the next box's loads and waits for the
    last step, so boxes follow one another."""
    mc = machine(chip)
    t, size = mc.t, lambda dt: mc.isa.DTYPES[dt].itemsize
    tiles = [(k, dt) for k, dt, _ in loads] + [(k, dt) for _, _, k, dt, _ in steps]
    full = sum(size(dt) for k, dt in tiles if k == "full")
    col = sum(size(dt) for k, dt in tiles if k == "col")
    max_cols = cols if whole_rows else min(cols, 4096)
    budget = t.geom.sram_bytes // 2 - sum(cols * 4 for k, _ in tiles if k == "row")
    max_rows = max(1, min(budget // (2 * (full * max_cols + col) + 64), 1024, -(-rows // mc.cores)))
    col_boxes = -(-cols // max_cols)
    n_boxes = -(-rows // max_rows) * col_boxes
    mine = _busiest(n_boxes, mc.cores)
    total = dma = vec = 0.0
    lat = max((t.latency[sp] for _, _, sp in loads), default=0)

    def box(r, c, first_row):
        n_of = {"full": (r, c), "col": (r, 1), "row": (1, c), "one": (1, 1)}
        lds = [mc.dma(sp, math.prod(n_of[k]) * size(dt), dt)[0] for k, dt, sp in loads
               if k in ("full", "col") or first_row]
        vs = [mc.reduce(r, c, *ins[:1]) if op == "red" else mc.vec(func, *n_of[k], dt, *ins)
              for op, func, k, dt, ins in steps]
        st = sum(mc.dma(sp, math.prod(n_of[k]) * size(dt), dt)[0] for k, dt, sp in stores)
        ld, v = sum(lds), sum(vs)
        return (max(lds[0] + lat + v, ld + lat + vs[-1]) + st if lds else v + st), ld + st, v

    boxes = {}
    for b in range(mine):
        key = (min(max_rows, rows - (b // col_boxes) * max_rows), min(max_cols, cols - (b % col_boxes) * max_cols),
               b < col_boxes)
        tt, d, v = boxes.get(key) or boxes.setdefault(key, box(*key))
        total, dma, vec = total + tt, dma + d, vec + v
    out_lat = max((t.latency[sp] for _, _, sp in stores), default=0)
    return {"cycles": total + out_lat, "memory_bound": dma > vec, "dma": dma, "vec": vec, "mxu": 0.0}


def dma_copy_cycles(chip, nbytes: float, src: str, dst: str, dtype: str = "bf16") -> float:
    """Cycles of a kernel that only moves `nbytes` by DMA, split evenly over the cores."""
    mc = machine(chip)
    far = [s for s in (src, dst) if s != "sram"] or ["sram"]
    occ = max(mc.dma(s, nbytes / mc.cores, dtype)[0] for s in far)
    return occ + max(mc.t.latency[s] for s in far)


# ----------------------------------------------------------------------------- perf kernels on the NPU

ISA_IN = {"int8": ("int8", "int32"), "fp8": ("fp8", "fp32"), "fp16": ("fp16", "fp32")}   # else bf16 into fp32
ISA_BY_BYTES = {4: "fp32", 2: "bf16", 1: "int8"}
DEQUANT = (("mul", "fp32", "col"), ("mul", "fp32", "row", "dram"))   # int8/fp8: x scale per row (computed), w
# scale per column (a constant, in DRAM)


def _gemm(chip, k, d: str) -> dict | None:
    M, N, K, groups = (int(math.ceil(x)) for x in k.shape)
    in_b = (k.bytes_read - k.weight_bytes) / max(groups * M * K, 1)
    w_b = k.weight_bytes / max(groups * N * K, 1)
    out_b = k.bytes_written / max(groups * M * N, 1)
    if w_b < 1 or min(M, N, K) < 1:   # 4-bit weights (dequant4 on the vector unit): not in closed form yet
        return None
    in_dt, acc = ISA_IN.get(d, ("bf16", "fp32"))
    out_dt = ISA_BY_BYTES.get(round(out_b), "bf16")
    return gemm_cycles(chip, M, N, K, groups, in_dt, acc, out_dt, space_of(chip, groups * M * K * in_b),
                       space_of(chip, groups * M * N * out_b), DEQUANT if in_dt in ("int8", "fp8") else ())


def _attention(chip, k, d: str) -> dict:
    B, Sq, Skv, hq, hkv, dqk, dv, causal = k.shape
    B, Sq, Skv = int(B), int(Sq), int(math.ceil(Skv))
    dt = "fp16" if d == "fp16" else "bf16"
    kv_bytes = B * hkv * Skv * (dqk + dv) * 2
    # decode reads the cache from DRAM; prefill's k and v were just computed (shared buffer while they fit)
    kv_space = "dram" if Sq == 1 else space_of(chip, kv_bytes)
    if Sq == 1 and Skv > ATTN_KEYS:    # a batch's mean context: between whole key chunks, linear in the keys
        lo = int(k.shape[2]) // ATTN_KEYS * ATTN_KEYS
        a, b = (attention_cycles(chip, B, int(hq), int(hkv), 1, x, int(dqk), int(dv), False, dt, "shared", "dram",
                                 "shared") for x in (lo, lo + ATTN_KEYS))
        f = (k.shape[2] - lo) / ATTN_KEYS
        return {**b, "cycles": a["cycles"] + f * (b["cycles"] - a["cycles"])}
    return attention_cycles(chip, B, int(hq), int(hkv), Sq, Skv, int(dqk), int(dv), bool(causal), dt,
                            space_of(chip, B * hq * Sq * dqk * 2), kv_space, space_of(chip, B * hq * Sq * dv * 2))


RMS_STEPS = [("vec", "mul", "full", "fp32", ("bf16", "bf16")), ("red", "sum", "col", "fp32", ("fp32",)),
             ("vec", "adds", "col", "fp32", ()), ("vec", "rsqrt", "col", "fp32", ()),
             ("vec", "mul", "full", "fp32", ("bf16", "fp32")), ("vec", "mul", "full", "bf16", ("fp32", "bf16"))]


def _rows(chip, k) -> dict:
    """Row kernels as the NPU compiler writes them: norms (compiler._norm's steps; a fused add+norm
    adds the residual first and stores both), everything else one vector op per FLOP per element
    (an elementwise chain, one `vec` per op) over its operands."""
    rows, cols = (int(math.ceil(x)) for x in (tuple(k.shape) + (1, 1))[:2])
    n = max(rows * cols, 1)
    sp_in, sp_out = space_of(chip, k.bytes_read), space_of(chip, k.bytes_written)
    if k.kind in ("norm", "fused_norm"):
        fused = k.kind == "fused_norm"
        add = [("vec", "add", "full", "bf16", ("bf16", "bf16"))] if fused else []
        loads = [("full", "bf16", sp_in)] * (2 if fused else 1) + [("row", "bf16", "dram")]
        stores = [("full", "bf16", sp_out)] * (2 if fused else 1)
        return row_cycles(chip, rows, cols, loads, add + RMS_STEPS, stores, whole_rows=True)
    n_in = max(1, round(k.bytes_read / (2 * n)))
    n_out = max(1, round(k.bytes_written / (2 * n)))
    ops = max(1, round(k.flops / n))
    steps = [("vec", "add", "full", "fp32" if i < ops - 1 else "bf16", ("bf16",) * min(2, n_in)) for i in range(ops)]
    return row_cycles(chip, rows, cols, [("full", "bf16", sp_in)] * n_in, steps, [("full", "bf16", sp_out)] * n_out,
                      whole_rows=k.kind in ("softmax",))


NPU_KERNELS = {"gemm": _gemm, "attention": _attention}


def kernel_cost(chip, p, k, dtype: str):
    """(cycles, memory_s, fixed_s, launches) of perf kernel `k` on the virtual NPU, or None where the
    closed forms do not cover it (collectives, 4-bit weights). The whole time goes to the path that
    bounds it (compute: cycles that scale with the clock; memory: seconds that do not). A stack
    reaches a fraction of what the compiler reaches: its parameters relative to the family's
    (the ideal stack's) scale the time. The kernel's closing barrier is the launch gap."""
    if k.kind == "comm":
        return None
    fn = NPU_KERNELS.get(k.kind, lambda c, kk, d: _rows(c, kk))
    r = fn(chip, k, dtype)
    if r is None:
        return None
    from .params import load_params
    base = load_params(chip.chip.family)
    if r["memory_bound"]:
        eff = p.kv_dram_efficiency / base.kv_dram_efficiency if k.kind == "attention" else \
            p.tiled_dram_efficiency / base.tiled_dram_efficiency if k.kind == "gemm" else \
            p.dram_efficiency / base.dram_efficiency
        return 0.0, r["cycles"] / chip.cores.clock_hz / eff, 0.0, 1
    eff = {"gemm": p.mma_efficiency / base.mma_efficiency,
           "attention": p.attention_mma_efficiency / base.attention_mma_efficiency}.get(k.kind, 1.0)
    return r["cycles"] / eff * chip.max_clock_hz / chip.cores.clock_hz, 0.0, 0.0, 1


def conv2d_cycles(chip, N: int, C: int, H: int, W: int, O: int, k: int, stride: int = 1, pad: int = 0,
                  dtype: str = "bf16", epilogue: tuple = (("add", "bf16", False, "dram"), ("relu", None, False)),
                  x_space: str = "shared", out_space: str = "shared") -> dict:
    """Cycles of an ungrouped conv2d as the NPU compiler lowers it (compiler._conv2d): a padded copy
    of the input (a fill, then the interior), im2col (one strided DMA per tap and image, dealt to
    the cores in turn), one GEMM over all images (rows = image x output pixel) with the bias and
    activation as its epilogue, and the NHWC result copied to NCHW. int8: int8 x int8 into int32."""
    mc = machine(chip)
    es = mc.isa.DTYPES[dtype].itemsize
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    xp = N * C * (H + 2 * pad) * (W + 2 * pad) * es
    sp = space_of(chip, xp)
    parts = []
    if pad:
        parts += [dma_copy_cycles(chip, xp, "dram", sp, dtype), dma_copy_cycles(chip, N * C * H * W * es, x_space, sp, dtype)]
    cols_space = space_of(chip, N * Ho * Wo * C * k * k * es)
    src = sp if pad else x_space
    per = mc.dma(src, Ho * Wo * C * es, dtype)[0]
    far = [s for s in (src, cols_space) if s != "sram"]
    per = max(mc.dma(s, Ho * Wo * C * es, dtype)[0] for s in far)
    parts.append(_busiest(k * k * N, mc.cores) * per + max(mc.t.latency[s] for s in far))
    acc = "int32" if dtype == "int8" else "fp32"
    out_es = 4 if dtype == "int8" else es
    g = gemm_cycles(chip, N * Ho * Wo, O, C * k * k, 1, dtype, acc, "fp32" if dtype == "int8" else dtype, cols_space,
                    space_of(chip, N * Ho * Wo * O * out_es), epilogue)
    parts.append(g["cycles"])
    parts.append(dma_copy_cycles(chip, N * Ho * Wo * O * out_es, space_of(chip, N * Ho * Wo * O * out_es), out_space))
    return {"cycles": sum(parts) + (len(parts) - 1) * mc.t.barrier, "parts": parts, "gemm": g}
