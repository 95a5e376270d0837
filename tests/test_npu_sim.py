"""NPU simulator: each instruction does what its docstring's loop says (checked against numpy),
and the timeline follows the cost model (queues overlap, waits stall, barriers synchronise)."""
import dataclasses
import json
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapeout
from tapeout.npu import isa, sim
from tapeout.npu.program import Program, Tensor

CHIP = tapeout.load_chip("tapeout-n7")
GEOM = isa.Geometry.from_chip(CHIP)
T = sim.Timing.from_chip(CHIP)
BF16 = ml_dtypes.bfloat16


def _al(n):
    return -(-n // 256) * 256


def run(stream, inputs, outputs, count_only=False, other_cores=()):
    """One core's stream; inputs/outputs: [(name, shape, dtype, array)] laid out in DRAM in order."""
    addr, ins, outs = 0, [], []
    for name, shape, dt, _ in inputs:
        ins.append(Tensor(name, "dram", addr, shape, dt))
        addr += _al(ins[-1].nbytes)
    for name, shape, dt in outputs:
        outs.append(Tensor(name, "dram", addr, shape, dt))
        addr += _al(outs[-1].nbytes)
    streams = [stream] + [list(s) for s in other_cores]
    streams += [[isa.Barrier()] * sum(isinstance(i, isa.Barrier) for i in stream)] * (GEOM.cores - len(streams))
    prog = Program(CHIP, streams, addr, 0, tuple(ins), tuple(outs))
    return prog, sim.simulate(prog, [a for *_, a in inputs], count_only=count_only)


def load(src, dst, dt, rows, cols, src_rs=None, **kw):
    return isa.Dma(src_space="dram", src_addr=src, dst_space="sram", dst_addr=dst, dtype=dt, n0=1, n1=rows, n2=cols,
                   ss1=cols if src_rs is None else src_rs, ds1=cols, **kw)


def store(src, dst, dt, rows, cols, **kw):
    return isa.Dma(src_space="sram", src_addr=src, dst_space="dram", dst_addr=dst, dtype=dt, n0=1, n1=rows, n2=cols,
                   ss1=cols, ds1=cols, **kw)


def test_dma_3d_transpose():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # dst[i, j, k] = x[k... ] : a permuted 3-D walk DRAM -> SRAM, then a contiguous store
    d = isa.Dma(src_space="dram", src_addr=0, dst_space="sram", dst_addr=0, dtype="fp32", n0=4, n1=2, n2=3,
                ss0=1, ss1=12, ss2=4, ds0=6, ds1=3, ds2=1)
    _, r = run([d, store(0, 256, "fp32", 1, 24, w_dma=1)], [("x", (2, 3, 4), "fp32", x)], [("y", (4, 2, 3), "fp32")])
    np.testing.assert_array_equal(r.outputs[0], x.transpose(2, 0, 1))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(1, 300), st.sampled_from(["bf16", "int8", "fp8"]))
def test_matmul_matches_numpy(M, K, N, dt):
    rng = np.random.default_rng(M * 7 + K)
    if dt == "int8":
        a, w = rng.integers(-128, 128, (M, K)).astype(np.int8), rng.integers(-128, 128, (K, N)).astype(np.int8)
        ref, acc = a.astype(np.int64) @ w.astype(np.int64), "int32"
    else:
        npdt = isa.DTYPES[dt]
        a, w = (rng.standard_normal(s).astype(npdt) for s in ((M, K), (K, N)))
        ref, acc = a.astype(np.float64) @ w.astype(np.float64), "fp32"
    es = isa.dtype_size(dt)
    A, W, C = 0, _al(M * K * es), 2**20
    prog = [load(0, A, dt, M, K),
            isa.Dma(src_space="dram", src_addr=_al(M * K * es), dst_space="sram", dst_addr=W, dtype=dt,
                    n0=1, n1=K, n2=N, ss1=N, ds1=N),
            isa.Matmul(acc_addr=C, a_addr=A, w_addr=W, M=M, K=K, N=N, lda=K, ldw=N, ldc=N, in_dtype=dt,
                       acc_dtype=acc, w_dma=2),
            store(C, _al(M * K * es) + _al(K * N * es), acc, M, N, w_mxu=1)]
    _, r = run(prog, [("a", (M, K), dt, a), ("w", (K, N), dt, w)], [("c", (M, N), acc)])
    if dt == "int8":
        np.testing.assert_array_equal(r.outputs[0], ref)
    else:
        np.testing.assert_allclose(r.outputs[0], ref, rtol=1e-5, atol=1e-4 * math.sqrt(K))
    assert r.stats["engine_busy_cycles"]["mxu"] == isa.matmul_occupancy(GEOM, M, K, N, dt)


VEC_CASES = [
    ("add", lambda a, b, c, s: a + b), ("mul", lambda a, b, c, s: a * b), ("div", lambda a, b, c, s: a / b),
    ("max", lambda a, b, c, s: np.maximum(a, b)), ("exp", lambda a, b, c, s: np.exp(a)),
    ("rsqrt", lambda a, b, c, s: 1 / np.sqrt(a)), ("silu", lambda a, b, c, s: a / (1 + np.exp(-a))),
    ("where", lambda a, b, c, s: np.where(a != 0, b, c)), ("fma", lambda a, b, c, s: a * b + c),
    ("adds", lambda a, b, c, s: a + s), ("subexp", lambda a, b, c, s: np.exp(s * (a - b))),
    ("gelu", lambda a, b, c, s: 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))),
    ("tril", lambda a, b, c, s: np.where(np.arange(a.shape[1])[None] <= np.arange(a.shape[0])[:, None] + s, a, -np.inf)),
    ("floor", lambda a, b, c, s: np.floor(a)), ("ceil", lambda a, b, c, s: np.ceil(a)),
    ("round", lambda a, b, c, s: np.round(a)), ("trunc", lambda a, b, c, s: np.trunc(a)),
    ("sign", lambda a, b, c, s: np.sign(a)), ("mods", lambda a, b, c, s: a - s * np.floor(a / s)),
    ("divs", lambda a, b, c, s: a / s),
]


@pytest.mark.parametrize("func,ref", VEC_CASES, ids=[c[0] for c in VEC_CASES])
def test_vec_functions_with_broadcast(func, ref):
    rows, cols = 5, 7
    rng = np.random.default_rng(1)
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    if func == "rsqrt":
        a = np.abs(a) + 1
    b = rng.standard_normal((1, cols)).astype(np.float32) + 3      # a row vector, broadcast with rs=0
    c = rng.standard_normal((rows, 1)).astype(np.float32)          # a column vector, broadcast with cs=0
    ar = isa.VFUNCS[func][0]
    stream = [load(0, 0, "fp32", rows, cols), load(0, 4096, "fp32", 1, cols), load(0, 8192, "fp32", rows, 1)]
    stream = _fix_loads(stream, [(rows, cols), (1, cols), (rows, 1)])
    stream += [isa.Vec(func=func, rows=rows, cols=cols, d_addr=12288, d_dtype="fp32", d_rs=cols, a_addr=0, a_dtype="fp32",
                       a_rs=cols, b_addr=4096, b_dtype="fp32", b_rs=0, b_cs=1, c_addr=8192, c_dtype="fp32", c_rs=1, c_cs=0,
                       imm=0.5, w_dma=3),
               store(12288, 3 * 256, "fp32", rows, cols, w_vec=1)]
    _, r = run(stream, [("a", (rows, cols), "fp32", a), ("b", (1, cols), "fp32", b), ("c", (rows, 1), "fp32", c)],
               [("d", (rows, cols), "fp32")])
    want = ref(a, np.broadcast_to(b, a.shape), np.broadcast_to(c, a.shape), np.float32(0.5))
    np.testing.assert_allclose(r.outputs[0], want, rtol=2e-6, atol=2e-6)
    assert ar in (1, 2, 3)


def _fix_loads(stream, shapes):
    import dataclasses
    out, addr = [], 0
    for ins, (r, c) in zip(stream, shapes):
        out.append(dataclasses.replace(ins, src_addr=addr))
        addr += 256
    return out


def test_cast_saturates_and_rounds():
    x = np.array([-1e6, -128.6, -2.5, -0.5, 0.5, 1.5, 126.5, 1e6, 500.0, -1000.0, np.nan, np.inf], np.float32)
    np.testing.assert_array_equal(sim.cast(x, "int8"), [-128, -128, -2, 0, 0, 2, 126, 127, 127, -128, 0, 127])
    np.testing.assert_array_equal(sim.cast(np.array([3e9, -3e9, np.nan], np.float32), "int32"), [2**31 - 1, -2**31, 0])
    f8 = sim.cast(x[:-2], "fp8").astype(np.float32)
    assert f8.max() == 448 and f8.min() == -448 and not np.isnan(f8).any()
    e5 = sim.cast(np.array([1e6, 0.3, -57344.0], np.float32), "fp8e5m2").astype(np.float32)
    assert e5[0] == np.inf and e5[1] == np.float32(ml_dtypes.float8_e5m2(0.3)) and e5[2] == -57344.0


def test_scan_and_negative_strides():
    """A DMA with negative strides reads backwards (a reversed slice); Scan is a row-wise inclusive prefix sum."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    rev = isa.Dma(src_space="dram", src_addr=(4 * 8 - 1) * 4, dst_space="sram", dst_addr=0, dtype="fp32", n0=1, n1=4,
                  n2=8, ss1=-8, ss2=-1, ds1=8)
    scan = isa.Scan(rows=4, cols=8, d_addr=256, d_dtype="fp32", d_rs=8, a_addr=0, a_dtype="fp32", a_rs=8, w_dma=1)
    stream = [rev, scan, _st(0, 256, "fp32", 4, 8, w_dma=1), _st(256, 512, "fp32", 4, 8, w_vec=1)]
    _, r = run(stream, [("x", (4, 8), "fp32", x)], [("y", (4, 8), "fp32"), ("z", (4, 8), "fp32")])
    np.testing.assert_array_equal(r.outputs[0], x[::-1, ::-1])
    np.testing.assert_array_equal(r.outputs[1], np.cumsum(x[::-1, ::-1], axis=1, dtype=np.float32))
    assert r.stats["engine_busy_cycles"]["vec"] == math.ceil(32 / T.lanes) + (8).bit_length() + T.vec_overhead
    with pytest.raises(isa.IsaError, match="outside"):
        run([dataclasses.replace(rev, src_addr=4)], [("x", (4, 8), "fp32", x)], [])


def test_reduce_dequant4_gather():
    rng = np.random.default_rng(2)
    rows, cols, g = 8, 6, 4
    q = rng.integers(-8, 8, (rows, cols)).astype(np.int8)
    u = (q & 0xF).astype(np.uint8)
    packed = u[:, 0::2] | (u[:, 1::2] << 4)
    s = rng.random((rows // g, cols)).astype(np.float32)
    stream = [_ld(0, 0, "u8", rows, cols // 2), _ld(256, 1024, "fp32", rows // g, cols),
              isa.Dequant4(rows=rows, cols=cols, group=g, d_addr=2048, d_dtype="fp32", d_rs=cols, a_addr=0,
                           s_addr=1024, s_dtype="fp32", s_rs=cols, w_dma=2),
              isa.Reduce(func="absmax", rows=rows, cols=cols, d_addr=4096, d_dtype="fp32", d_rs=1, a_addr=2048,
                         a_dtype="fp32", a_rs=cols, imm=2.0, w_vec=1),
              _st(2048, 512, "fp32", rows, cols, w_vec=1), _st(4096, 512 + 256, "fp32", rows, 1, w_vec=2)]
    _, r = run(stream, [("p", packed.shape, "u8", packed), ("s", s.shape, "fp32", s)],
               [("w", (rows, cols), "fp32"), ("m", (rows, 1), "fp32")])
    w = q.astype(np.float32) * np.repeat(s, g, axis=0)
    np.testing.assert_allclose(r.outputs[0], w, rtol=1e-6)
    np.testing.assert_allclose(r.outputs[1][:, 0], 2 * np.abs(w).max(axis=1), rtol=1e-6)
    # gather: rows of a table by index
    table = rng.standard_normal((10, 4)).astype(np.float32)
    idx = np.array([3, 0, 9, 3], np.int32)
    stream = [_ld(256, 0, "int32", 1, 4),
              isa.Gather(src_space="dram", src_addr=0, dst_space="sram", dst_addr=64, dtype="fp32", idx_addr=0, n=4,
                         cols=4, src_stride=4, w_dma=1),
              _st(64, 512, "fp32", 4, 4, w_dma=2)]
    _, r = run(stream, [("t", table.shape, "fp32", table), ("i", (4,), "int32", idx)], [("o", (4, 4), "fp32")])
    np.testing.assert_array_equal(r.outputs[0], table[idx])


def _ld(src, dst, dt, rows, cols, **kw):
    return isa.Dma(src_space="dram", src_addr=src, dst_space="sram", dst_addr=dst, dtype=dt, n0=1, n1=rows, n2=cols,
                   ss1=cols, ds1=cols, **kw)


def _st(src, dst, dt, rows, cols, **kw):
    return isa.Dma(src_space="sram", src_addr=src, dst_space="dram", dst_addr=dst, dtype=dt, n0=1, n1=rows, n2=cols,
                   ss1=cols, ds1=cols, **kw)


def test_timeline_overlap_stalls_and_barrier():
    n = 64 * 1024                                            # bytes of one DMA
    dma = math.ceil(n / T.bytes_per_cycle["dram"])
    lat = T.latency["dram"]
    mm = isa.Matmul(acc_addr=2**21, a_addr=0, w_addr=2**20, M=256, K=128, N=128, lda=128, ldw=128, ldc=128,
                    in_dtype="bf16", acc_dtype="fp32")
    occ, mlat = isa.matmul_occupancy(GEOM, 256, 128, 128, "bf16"), isa.matmul_latency(GEOM)
    # independent: a DMA and a Matmul overlap
    _, r = run([_ld(0, 0, "u8", 1, n), mm], [("x", (n,), "u8", np.zeros(n, np.uint8))], [], count_only=True)
    assert r.stats["cycles"] == max(dma + lat, occ + mlat)
    # dependent: the Matmul waits for the DMA (a stall of dma + latency cycles)
    import dataclasses
    _, r = run([_ld(0, 0, "u8", 1, n), dataclasses.replace(mm, w_dma=1)], [("x", (n,), "u8", np.zeros(n, np.uint8))],
               [], count_only=True)
    assert r.stats["cycles"] == dma + lat + occ + mlat
    assert r.stats["stall_cycles"]["mxu"] == dma + lat
    # a barrier: core 0 waits for core 1's long DMA before its own work
    other = [[_ld(0, 0, "u8", 1, n), isa.Barrier()]]
    _, r = run([isa.Barrier(), mm], [("x", (n,), "u8", np.zeros(n, np.uint8))], [], count_only=True, other_cores=other)
    assert r.stats["cycles"] == dma + lat + T.barrier + occ + mlat
    assert r.stats["bytes"]["dram"] == n


def test_count_only_matches_functional_and_trace(tmp_path):
    x = np.ones((4, 8), np.float32)
    stream = [_ld(0, 0, "fp32", 4, 8), isa.Vec(func="exp", rows=4, cols=8, d_addr=256, d_dtype="bf16", d_rs=8,
                                                a_addr=0, a_dtype="fp32", a_rs=8, w_dma=1),
              _st(256, 256, "bf16", 4, 8, w_vec=1)]
    p, r1 = run(stream, [("x", (4, 8), "fp32", x)], [("y", (4, 8), "bf16")])
    _, r2 = run(stream, [("x", (4, 8), "fp32", x)], [("y", (4, 8), "bf16")], count_only=True)
    assert r1.stats == r2.stats and r2.outputs is None
    np.testing.assert_allclose(r1.outputs[0], np.exp(1), rtol=1e-2)
    n = sim.write_trace(r1, tmp_path / "t.json")
    tr = json.loads((tmp_path / "t.json").read_text())
    xs = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    assert n == len(tr["traceEvents"]) and len(xs) == 3
    assert {e["tid"] for e in xs} == {0, 2} and all(e["pid"] == 0 for e in xs)


def test_bad_programs_raise():
    with pytest.raises(isa.IsaError, match="outside"):
        run([_ld(0, 2**23, "fp32", 4, 8)], [("x", (4, 8), "fp32", np.ones((4, 8), np.float32))], [])
    with pytest.raises(isa.IsaError, match="waits for"):
        run([_ld(0, 0, "fp32", 4, 8, w_vec=1)], [("x", (4, 8), "fp32", np.ones((4, 8), np.float32))], [])
