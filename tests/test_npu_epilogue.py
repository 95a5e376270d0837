"""The matrix unit's output stage (Fixpipe on the epi queue) and the pooling engine (Pool on the
pool queue): a chip file that declares them gets the same numbers as one that does not (the
vector unit's op-by-op epilogue and row-kernel pools), bit for bit, and the timeline overlaps
the output stage with the array."""
import math
from importlib import resources

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapeout.chip import load_chip, parse_chip
from tapeout.errors import ChipFileError
from tapeout.ir import Builder, evaluate
from tapeout.npu import isa, sim
from tapeout.npu.compiler import compile_ir
from tapeout.npu.program import Program, Tensor

BASE = (resources.files("tapeout.chips") / "tapeout-n7.toml").read_text(encoding="utf-8")
ALL_OPS = '["scale", "bias", "residual", "multiply", "relu", "requantize", "silu", "gelu", "gelu_tanh", "sigmoid", "tanh"]'
PLAIN = load_chip("tapeout-n7")


def variant(ops: str = ALL_OPS, rate: str = "", pool: str = "elements_per_cycle = 128", path="n7-epi.toml"):
    """tapeout-n7 with an output stage (ops, optional rate) and a pooling engine, parsed as a user file."""
    text = BASE.replace("\n[cores.vector]", f"\n[cores.matrix.epilogue]\nops = {ops}\n{rate}\n"
                        + (f"[cores.pooling]\n{pool}\n" if pool else "") + "\n[cores.vector]", 1)
    return parse_chip(text, path=path)


EPI = variant()
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(prog, chip, mode, *xs):
    p = compile_ir(prog, chip, mode)
    r = sim.simulate(p, list(xs))
    return p, r


def kinds(p):
    return {type(i).__name__ for s in p.streams for i in s}


def same_three_ways(prog, mode, *xs, tol=None):
    """Fused (EPI) == unfused (tapeout-n7) bit for bit; both near (tol) or equal to the interpreter."""
    pf, rf = run(prog, EPI, mode, *xs)
    pu, ru = run(prog, PLAIN, mode, *xs)
    ref = evaluate(prog, *xs)
    for f, u, want in zip(rf.outputs, ru.outputs, ref):
        assert np.array_equal(f, u, equal_nan=True)
        if tol is None:
            assert np.array_equal(f, np.asarray(want).astype(f.dtype))
        else:
            w = np.asarray(want, np.float64)
            assert np.linalg.norm(f - w) <= tol * max(np.linalg.norm(w), 1e-30)
    return pf, rf, pu, ru


@SETTINGS
@given(M=st.integers(1, 40), K=st.integers(1, 200), N=st.integers(1, 150), act=st.sampled_from(["relu", "silu", "gelu"]),
       seed=st.integers(0, 99))
def test_bf16_linear_chain_fuses_and_matches(M, K, N, act, seed):
    rng = np.random.default_rng(seed)
    b = Builder("lin")
    a, r = b.input((M, K), "f32", name="a"), b.input((M, N), "f32", name="r")
    y = b.linear(a, b.const(rng.standard_normal((N, K)).astype(np.float32) / math.sqrt(K)),
                 b.const(rng.standard_normal(N).astype(np.float32)))
    prog = b.build(b.mul(b.add(getattr(b, act)(y), r), 0.5))          # bias, act, residual, scale
    xs = [rng.standard_normal(s).astype(np.float32) for s in ((M, K), (M, N))]
    pf, rf, pu, _ = same_three_ways(prog, "bf16", *xs, tol=2e-2)
    assert "Fixpipe" in kinds(pf) and "Fixpipe" not in kinds(pu)
    assert not any(type(i) is isa.Vec for s in pf.streams for i in s)     # the whole chain on the output stage
    assert rf.stats["engine_busy_cycles"]["epi"] > 0 and "epi" not in sim.simulate(pu, xs).stats["utilization"]


@SETTINGS
@given(n=st.integers(1, 2), cin=st.integers(1, 9), cout=st.integers(1, 12), hw=st.integers(3, 9),
       stride=st.integers(1, 2), residual=st.booleans(), seed=st.integers(0, 99))
def test_int8_conv_requantisation_is_exact(n, cin, cout, hw, stride, residual, seed):
    """ResNet's int8 conv: i32 accumulators -> * m[o] + b[o] (+ f32 shortcut) -> relu -> i8, fused."""
    rng = np.random.default_rng(seed)
    b = Builder("qconv")
    x = b.input((n, cin, hw, hw), "i8", name="x")
    w = b.const(rng.integers(-127, 128, (cout, cin, 3, 3)).astype(np.int8), name="w")
    acc = b.conv2d(x, w, stride=stride, padding=1, acc_dtype="i32", dtype="i32")
    ho = (hw - 1) // stride + 1
    m = b.const((rng.integers(1, 64, (1, cout, 1, 1)) / 4096).astype(np.float32))     # exact in bf16 (the NPU's
    y = b.add(b.mul(b.cast(acc, dtype="f32"), m),                                    # f32 storage): exact overall
              b.const((rng.integers(-40, 40, (1, cout, 1, 1)) / 4).astype(np.float32)))
    if residual:
        y = b.add(y, b.input((n, cout, ho, ho), "f32", name="r"))
    prog = b.build(b.cast(b.relu(y), dtype="i8"))
    xs = [rng.integers(-127, 128, (n, cin, hw, hw)).astype(np.int8)]
    xs += [(rng.integers(-40, 40, (n, cout, ho, ho)) / 4).astype(np.float32)] if residual else []
    pf, *_ = same_three_ways(prog, "int8", *xs)
    fix = [i for s in pf.streams for i in s if type(i) is isa.Fixpipe]
    assert fix and all(i.d_dtype == "int8" and i.n == 4 + residual for i in fix)


def test_an_unsupported_op_stays_on_the_vector_unit_and_the_store_needs_requantize():
    rng = np.random.default_rng(0)
    b = Builder("part")
    a = b.input((20, 64), "f32", name="a")
    y = b.linear(a, b.const(rng.standard_normal((48, 64)).astype(np.float32) / 8), b.const(np.ones(48, np.float32)))
    prog = b.build(b.tanh(b.exp(y)))                    # bias fuses; exp is no output-stage op, so tanh stays too
    chip = variant('["bias", "tanh"]', path="n7-bias-tanh.toml")
    p = compile_ir(prog, chip, "bf16")
    fix = [i for s in p.streams for i in s if type(i) is isa.Fixpipe]
    vec = {i.func for s in p.streams for i in s if type(i) is isa.Vec}
    assert fix and all(i.n == 1 and i.f0 == "add" and i.d_dtype == "fp32" for i in fix) and vec == {"exp", "tanh", "copy"}
    xa = rng.standard_normal((20, 64)).astype(np.float32)
    assert np.array_equal(sim.simulate(p, [xa]).outputs[0], sim.simulate(compile_ir(prog, PLAIN, "bf16"), [xa]).outputs[0])
    b = Builder("q")
    xi = b.input((4, 2, 5, 5), "i8", name="x")
    acc = b.conv2d(xi, b.const(np.ones((3, 2, 1, 1), np.int8)), acc_dtype="i32", dtype="i32")
    q = b.build(b.cast(b.relu(b.mul(b.cast(acc, dtype="f32"), 0.5)), dtype="i8"))
    p = compile_ir(q, variant('["scale", "relu"]', path="n7-no-requant.toml"), "int8")     # trunc + int8 store: no
    fix = [i for s in p.streams for i in s if type(i) is isa.Fixpipe]
    assert fix and all(i.n == 2 and i.d_dtype == "fp32" for i in fix)
    assert {i.func for s in p.streams for i in s if type(i) is isa.Vec} == {"trunc", "copy"}


@pytest.mark.parametrize("op,kw", [("max_pool2d", dict(kernel=3, stride=2, padding=1)),
                                   ("max_pool2d", dict(kernel=2, stride=2, dilation=2)),
                                   ("avg_pool2d", dict(kernel=3, stride=1, padding=1)),
                                   ("avg_pool2d", dict(kernel=2, stride=2, ceil_mode=True))])
@pytest.mark.parametrize("dtype", ["f32", "i8"])
def test_pools_on_the_pooling_engine_match(op, kw, dtype):
    rng = np.random.default_rng(5)
    b = Builder("pool")
    x = b.input((2, 3, 9, 9), dtype, name="x")
    prog = b.build(b.op(op, b.cast(x, dtype="f32") if dtype == "i8" and op == "avg_pool2d" else x, **kw))
    xs = rng.integers(-100, 100, (2, 3, 9, 9)).astype(np.int8) if dtype == "i8" else \
        rng.standard_normal((2, 3, 9, 9)).astype(ml_dtypes.bfloat16).astype(np.float32)    # stored exactly
    pf, rf, pu, ru = same_three_ways(prog, "bf16", xs, tol=None if op == "max_pool2d" else 1e-2)
    uniform = op == "max_pool2d" or not kw.get("ceil_mode")          # ceil_mode: edge windows count fewer
    assert ("Pool" in kinds(pf)) == uniform and "Pool" not in kinds(pu)
    assert (rf.stats["engine_busy_cycles"]["pool"] > 0) == uniform


def _tile_program(chip, tiles, M, K, N):
    """One core: `tiles` GEMM tiles (DMA in, Matmul) each drained by a Fixpipe, then a store."""
    es, ab = 2, [2**16 * k for k in range(tiles)]
    s = [isa.Dma(src_space="dram", src_addr=0, dst_space="sram", dst_addr=2**20, dtype="bf16", n0=1, n1=1,
                 n2=M * K + K * N)]
    for t in range(tiles):
        s.append(isa.Matmul(acc_addr=ab[t], a_addr=2**20, w_addr=2**20 + M * K * es, M=M, K=K, N=N, lda=K, ldw=N,
                            ldc=N, in_dtype="bf16", acc_dtype="fp32", w_dma=1))
    s += [isa.Fixpipe(acc_addr=ab[t], acc_dtype="fp32", M=M, N=N, d_addr=2**19 + t * M * N * 2, d_dtype="bf16",
                      n=1, f0="relu", w_mxu=t + 1) for t in range(tiles)]
    cores = [s] + [[] for _ in range(chip.cores.count - 1)]
    return Program(chip, cores, 2**16, 0, (Tensor("x", "dram", 0, (M * K + K * N,), "bf16"),), ())


@pytest.mark.parametrize("rate,bound", [("", "mxu"), ("elements_per_cycle = 4", "epi")])
def test_the_output_stage_overlaps_the_array(rate, bound):
    """time ~ max(array, output stage): the array never waits for the Fixpipes; a slow stage is the bound."""
    chip = variant(rate=rate, path=f"n7-rate-{bound}.toml")
    t = sim.Timing.from_chip(chip)
    M, K, N, tiles = 256, 128, 128, 6
    r = sim.simulate(_tile_program(chip, tiles, M, K, N), [np.zeros(M * K + K * N, np.float32)], count_only=True)
    mm = isa.matmul_occupancy(t.geom, M, K, N, "bf16")
    fix = sim.fixpipe_cycles(t, M, N, M * N * 2)
    assert t.epilogue_per_cycle == (chip.cores.matrix.array_cols if not rate else 4)
    assert r.stats["engine_busy_cycles"]["mxu"] == tiles * mm and r.stats["engine_busy_cycles"]["epi"] == tiles * fix
    starts = sorted(e[2] for e in r.events if e[1] == isa.QUEUES.index("mxu"))
    assert all(b - a == mm for a, b in zip(starts, starts[1:]))             # back to back
    span, lat = r.stats["cycles"] - starts[0], isa.matmul_latency(t.geom)      # from the first Matmul's issue
    if bound == "mxu":                                                   # the last tile's drain is all that shows
        assert fix <= mm and span == tiles * mm + lat + fix
    else:                                                                # the stage trails the first result
        assert fix > mm and span == mm + lat + tiles * fix


def test_a_fixpipe_or_pool_on_a_chip_without_the_unit_is_an_isa_error():
    p = _tile_program(PLAIN, 1, 16, 16, 16)
    with pytest.raises(isa.IsaError, match="no matrix output stage"):
        sim.simulate(p, [np.zeros(512, np.float32)], count_only=True)
    pool = isa.Pool(func="max", rows=1, cols=1, kh=1, kw=1, d_addr=0, d_dtype="fp32", d_rs=1, a_addr=64,
                    a_dtype="fp32", a_rs=1, a_cs=1, a_ks=1, a_ls=1)
    with pytest.raises(isa.IsaError, match="no pooling engine"):
        sim.simulate(Program(PLAIN, [[pool]] + [[]] * 15, 64, 0), [], count_only=True)


@pytest.mark.parametrize("ops,rate,pool,key,reason", [
    ('["bias", "reluu"]', "", "elements_per_cycle = 64", "cores.matrix.epilogue.ops[1]", r"must be one of .*did you mean 'relu'"),
    ("[]", "", "elements_per_cycle = 64", "cores.matrix.epilogue.ops", "must be a non-empty list"),
    ('"relu"', "", "elements_per_cycle = 64", "cores.matrix.epilogue.ops", "must be a non-empty list, got str"),
    ('["relu", "relu"]', "", "elements_per_cycle = 64", "cores.matrix.epilogue.ops", "lists 'relu' twice"),
    ('["relu"]', "elements_per_cycle = 0", "elements_per_cycle = 64", "cores.matrix.epilogue.elements_per_cycle",
     "must be positive"),
    ('["relu"]', "", "rate = 64", "cores.pooling.rate", "unknown key"),
    ('["relu"]', "", "elements_per_cycle = -3", "cores.pooling.elements_per_cycle", "must be positive"),
])
def test_bad_output_stage_or_pooling_fields_are_one_line_errors(ops, rate, pool, key, reason):
    with pytest.raises(ChipFileError) as e:
        variant(ops, rate, pool)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"n7-epi.toml: {key}: ")
    import re
    assert re.search(reason, msg), msg


def test_chip_files_declare_the_units_they_document():
    hg, a910b = load_chip("hanguang-800"), load_chip("ascend-910b")
    assert {"scale", "bias", "residual", "relu", "requantize"} <= set(hg.cores.matrix.epilogue.ops)
    assert hg.cores.pooling.elements_per_cycle > 0 and hg.source_of("cores.pooling").confidence == "reported"
    assert hg.source_of("cores.matrix.epilogue.elements_per_cycle").confidence == "assumed"
    assert "relu" in a910b.cores.matrix.epilogue.ops and a910b.cores.pooling is None
    assert PLAIN.cores.matrix.epilogue is None and PLAIN.cores.pooling is None


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(2, 12), hw=st.integers(2, 7), k=st.integers(2, 6), seed=st.integers(0, 99))
def test_an_int8_identity_shortcut_is_dequantised_by_the_output_stage(n, c, hw, k, seed):
    """ResNet's identity shortcut `cast(x: i8) * s` added to a conv's output: the output stage reads x
    in int8 and adds x * s (axpys) in fp32, so no vector kernel computes the shortcut and the result
    is the interpreter's bit for bit (the unfused chip rounds its f32 intermediates to bf16: within one
    step)."""
    rng = np.random.default_rng(seed)
    b = Builder("qres")
    x = b.input((n, c, hw, hw), "i8", name="x")
    acc = b.conv2d(x, b.const(rng.integers(-127, 128, (c, c, 1, 1)).astype(np.int8), name="w"), acc_dtype="i32",
                   dtype="i32")
    y = b.mul(b.cast(acc, dtype="f32"), b.const((rng.integers(1, 64, (1, c, 1, 1)) / 4096).astype(np.float32)))
    y = b.add(y, b.mul(b.cast(x, dtype="f32"), 2.0 ** -k))
    prog = b.build(b.cast(b.relu(y), dtype="i8"))
    xs = [rng.integers(-127, 128, (n, c, hw, hw)).astype(np.int8)]
    (pf, rf), (_, ru) = run(prog, EPI, "int8", *xs), run(prog, PLAIN, "int8", *xs)
    ref = np.asarray(evaluate(prog, *xs)[0]).astype(np.int8)
    assert np.array_equal(rf.outputs[0], ref) and np.abs(ru.outputs[0].astype(int) - ref).max() <= 1
    fix = [i for s in pf.streams for i in s if type(i) is isa.Fixpipe]
    assert fix and all(any(getattr(i, f"f{j}") == "axpys" and getattr(i, f"o{j}_dtype") == "int8"
                           for j in range(i.n)) for i in fix)
    assert not any(type(i) is isa.Vec for s in pf.streams for i in s)


def test_a_scaled_shortcut_no_gemm_takes_is_computed_on_its_own():
    rng = np.random.default_rng(3)
    b = Builder("qadd")
    x, y = b.input((2, 5, 4, 4), "i8", name="x"), b.input((2, 5, 4, 4), "f32", name="y")
    prog = b.build(b.relu(b.add(b.mul(b.cast(x, dtype="f32"), 0.25), y)))
    xs = [rng.integers(-127, 128, (2, 5, 4, 4)).astype(np.int8), (rng.integers(-40, 40, (2, 5, 4, 4)) / 4).astype(np.float32)]
    pf, rf = run(prog, EPI, "int8", *xs)
    assert np.array_equal(rf.outputs[0], evaluate(prog, *xs)[0].astype(rf.outputs[0].dtype))
