"""IR program -> per-core NPU instruction streams.

The compiler walks the IR equations in order, keeping for every value a `View` (where it
lives and its strides). Shape ops (reshape, transpose, broadcast_to, slice -- negative steps
too --, split, value-preserving casts) only make new views; equations whose inputs are all
constants are folded with the reference interpreter at compile time (full and iota always);
everything else goes through `LOWER`, a table from op name to a function that instantiates a
kernel of `tapeout.npu.kernels`:

    linear/matmul/conv2d -> gemm (+ fused elementwise epilogue; int8/fp8/int4 paths);
                            grouped conv: one GEMM per group; depthwise: depthwise_conv (vector unit)
    attention            -> flash-style attention
    elementwise chains   -> row_kernel (fused: a chain of single-use elementwise ops is one kernel)
    softmax, norms, reductions, cumsum, quantize/dequantize -> row_kernel with Reduce/Scan steps
    gather/concat/pad/pools -> DMA copies (+ row_kernel)

Every op of the IR op table is handled (`handled_ops`, checked by tests/test_npu_ops.py) with
the interpreter's semantics; what the chip cannot do (integer GEMMs wider than 8 bits, rows
that do not fit SRAM) raises UnsupportedOpError naming the op. Tensors live in the shared
buffer when they fit (freed after their last use), else in DRAM; weights in DRAM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ..errors import UnsupportedOpError
from ..ir.core import Program as IRProgram
from ..ir.dtypes import FLOATS, INTS, float_max, int_range
from ..ir.interp import avg_pool_divisor, evaluate, pool_pads
from .emit import Sram, Stream, View, dma_copy, split_even
from .isa import DTYPES, Geometry
from .kernels import GemmJob, RowProgram, Windows, attention, depthwise_conv, gather_rows, gemm, pool_planes, row_kernel
from .program import Program, Tensor

MODES = ("bf16", "fp16", "fp8", "int8", "int4-weights", "nvfp4", "mxfp4")
BLOCK_MODES = ("nvfp4", "mxfp4")    # FP4 weight-only: tapeout.ir.blockfp rewrites the GEMM weights first
CHAIN_OPS = ("conv2d", "max_pool2d", "avg_pool2d")   # ops whose kernels chain on a chip with a conv engine (Compiler.chained_barriers)
INT4_GROUP = 128

UNARY = {"exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "reciprocal": "recip", "sin": "sin",
         "cos": "cos", "tanh": "tanh", "sigmoid": "sigmoid", "silu": "silu", "erf": "erf", "neg": "neg",
         "abs": "abs", "relu": "relu", "floor": "floor", "ceil": "ceil", "round": "round", "sign": "sign"}
BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "maximum": "max",
          "minimum": "min", "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
          "logical_and": "mul", "logical_or": "max", "logical_xor": "ne"}
ELEMENTWISE = set(UNARY) | set(BINARY) | {"gelu", "clamp", "where", "cast", "logical_not"}
CUR = object()   # marks the running value in an elementwise step
STORE_RANGE = {"int8": (-128, 127), "u8": (0, 255), "int32": (-2**31, 2**31 - 1)}   # what a store saturates to


def ew_steps(e, ins):
    """An elementwise eqn as vector steps: [(func, operands, imm)], operands from `ins` (CUR: the previous step)."""
    op, p = e.op, e.params
    if op in UNARY:
        return [(UNARY[op], ins[:1], 0.0)]
    if op == "gelu":
        return [("gelu_tanh" if p["approximate"] == "tanh" else "gelu", ins[:1], 0.0)]
    if op == "clamp":
        out = [("maxs", ins[:1], p["min"])] if p["min"] is not None else []
        return out + [("mins", [CUR] if out else ins[:1], p["max"])] if p["max"] is not None else out or [("copy", ins[:1], 0.0)]
    if op == "cast":
        return cast_steps(e.inputs[0].dtype, p["dtype"], ins[0])
    if op == "logical_not":
        return [("rsubs", ins[:1], 1.0)]
    if op == "where":
        return [("where", ins[:3], 0.0)]
    if op == "div" and e.outputs[0].dtype in INTS:     # integer division truncates; x / 0 = 0
        if isinstance(ins[1], float):                   # (divs: exact, where muls by 1/b may land below q)
            return [("divs", ins[:1], ins[1]), ("trunc", [CUR], 0.0)] if ins[1] else [("muls", ins[:1], 0.0)]
        return [("div", ins[:2], 0.0), ("trunc", [CUR], 0.0), ("select", [CUR, ins[1]], 0.0)]
    return [(BINARY[op], ins[:2], 0.0)]


def cast_steps(src: str, dst: str, x):
    """The IR's cast (docs/ir-contract.md) as vector steps; the final store rounds to nearest even
    and saturates at the storage type, so only what differs from that needs a step."""
    if dst == "bool":
        return [("ne", [x, 0.0], 0.0)]
    if dst not in INTS:
        return [("copy", [x], 0.0)]                     # float: one RNE rounding at the store
    lo, hi = int_range(dst)
    slo, shi = STORE_RANGE[isa_dtype(dst, "bf16")]
    if src in INTS or src == "bool":                    # int -> int wraps (two's complement)
        if src == "bool" or (int_range(src)[0] >= lo and int_range(src)[1] <= hi):
            return [("copy", [x], 0.0)]
        return [("adds", [x], float(-lo)), ("mods", [CUR], float(hi - lo + 1)), ("adds", [CUR], float(lo))]
    clip = ([("maxs", [CUR], float(lo))] if lo > slo else []) + ([("mins", [CUR], float(hi))] if hi < shi else [])
    return [("trunc", [x], 0.0)] + clip                 # float -> int truncates toward zero and saturates


def _imm_form(func, ops):
    """Binary step with one scalar literal -> unary immediate form, or None."""
    (a, b) = ops
    la, lb = isinstance(a, float), isinstance(b, float)
    if lb and not la:
        x = {"add": ("adds", b), "sub": ("adds", -b), "mul": ("muls", b), "div": ("muls", 1.0 / b if b else math.inf),
             "pow": ("pows", b), "max": ("maxs", b), "min": ("mins", b)}.get(func)
        return (x[0], [a], x[1]) if x else None
    if la and not lb:
        x = {"add": ("adds", a), "mul": ("muls", a), "sub": ("rsubs", a), "max": ("maxs", a), "min": ("mins", a)}.get(func)
        return (x[0], [b], x[1]) if x else None
    return None


class Heap:
    """First-fit allocator of one memory space (64-byte aligned)."""

    def __init__(self, cap: float):
        self.cap, self.free, self.top = cap, [], 0

    def alloc(self, nbytes: int) -> int | None:
        n = -(-max(int(nbytes), 1) // 64) * 64
        for k, (a, sz) in enumerate(self.free):
            if sz >= n:
                self.free[k] = (a + n, sz - n)
                return a
        if self.top + n > self.cap:
            return None
        self.top += n
        return self.top - n

    def release(self, addr: int, nbytes: int):
        self.free.append((addr, -(-max(int(nbytes), 1) // 64) * 64))


def isa_dtype(ir_dtype: str, act: str) -> str:
    return {"f32": act, "f64": act, "bf16": "bf16", "f16": "fp16", "f8e4m3": "fp8", "f8e5m2": "fp8e5m2", "i8": "int8",
            "i16": "int32", "i32": "int32", "i64": "int32", "bool": "int8", "u8": "u8", "i4": "int8",
            "u4": "int8", "f4e2m1": "fp4", "f8e8m0": "e8m0"}[ir_dtype]


@dataclass(frozen=True)
class Options:
    mode: str = "bf16"
    fold_limit: int = 1 << 22     # fold constant subgraphs up to this many elements


class Compiler:
    def __init__(self, ir, chip, opts: Options):
        if opts.mode not in MODES:
            raise UnsupportedOpError(f"dtype {opts.mode!r}: the NPU compiler supports {', '.join(MODES)}")
        self.ir, self.chip, self.opts = ir, chip, opts
        self.geom = Geometry.from_chip(chip)
        self.ncores, self.sram_bytes = self.geom.cores, self.geom.sram_bytes
        self.streams = [Stream() for _ in range(self.ncores)]
        self.act = "fp16" if opts.mode == "fp16" else "bf16"
        self.dram, self.shared = Heap(chip.dram.bytes or chip.shared_buffer.bytes), Heap(chip.shared_buffer.bytes)
        if not (chip.dram.bytes or chip.shared_buffer.bytes):   # the cores' local memories hold it all (hanguang-800):
            self.dram = self.shared = Heap(chip.cores.count * chip.cores.sram.bytes)   # one capacity for both spaces
        self.env: dict = {}            # var name -> View
        self.val: dict = {}            # var name -> numpy value (constants; None if abstract)
        self.consts: list = []
        self.op_name = ""
        self.kernels: list = []        # op name of each kernel, in barrier order
        self.chain_kernels: list = []  # whether each kernel may chain with its neighbours (chained_barriers)
        self.chaining = False
        self.full_sram = self.sram_bytes
        self.eqn_index = -1            # the IR eqn being lowered (-1: the outputs' copies)
        self.kernel_eqns: list = []    # eqn index of each kernel
        self.root: dict = {}           # value name -> name of the value owning its memory
        self.live: dict = {}           # owner name -> values viewing it not yet dead
        self.owned: dict = {}          # owner name -> its shared-buffer View
        self.fused: dict = {}          # eqn index -> indices of the eqns fused into it
        self.fp4: dict = {}            # var name -> the dequantize eqn of constant e2m1 data it came from
        self.deferred: dict = {}       # var name -> (int8 var, scale, eqn indices): a scaled shortcut for an epilogue
        self.vars = ir.vars()
        self.outputs = {o.name for o in ir.outputs if hasattr(o, "name")}

    # ---- memory
    def alloc(self, shape, dtype, space=None) -> View:
        n = max(1, math.prod(shape)) * DTYPES[dtype].itemsize
        if space != "dram":
            a = self.shared.alloc(n)
            if a is not None:
                return View.contiguous("shared", a, dtype, tuple(shape))
        a = self.dram.alloc(n)
        if a is None:
            raise UnsupportedOpError(f"npu compiler: {self.op_name}: {n} more bytes do not fit the chip's memory")
        return View.contiguous("dram", a, dtype, tuple(shape))

    def place_const(self, name, arr, dtype, shape=None) -> View:
        shape = tuple(arr.shape) if arr is not None else tuple(shape)
        v = self.alloc(shape, dtype, "dram")
        data = None if arr is None else _to_isa(arr, dtype)
        self.consts.append((Tensor(name, "dram", v.addr, shape, dtype), data))
        return v

    def barrier(self):
        for s in self.streams:
            s.barrier()
        self.kernels.append(self.op_name)
        self.chain_kernels.append(self.chaining)
        self.kernel_eqns.append(self.eqn_index)

    def sram(self) -> Sram:
        """This kernel's SRAM of each core: all of it, or in a chain of conv kernels (see
        `chained_barriers`) alternate halves, so that two kernels in flight share no buffer."""
        if not self.chaining:
            return Sram(self.sram_bytes)
        return Sram(self.sram_bytes, (len(self.kernels) % 2) * self.sram_bytes)

    def chained_barriers(self) -> list[int]:
        """The barriers between two conv kernels (and their layout and window copies) on a chip with a
        conv engine: the simulator lets the kernel after one issue while the one before drains
        (sim._Chain). Other chips and other ops keep full barriers."""
        k = self.chain_kernels
        return [b for b in range(len(k) - 1) if k[b] and k[b + 1]]

    # ---- values
    def view(self, atom) -> View:
        if hasattr(atom, "name") and atom.name in self.env:
            return self.env[atom.name]
        if hasattr(atom, "name") and atom.name in self.deferred:      # a scaled shortcut no epilogue took
            _, _, idx = self.deferred.pop(atom.name)
            _elementwise(self, idx[0], self.ir.eqns[idx[0]], list(idx))
            return self.env[atom.name]
        if hasattr(atom, "name"):
            arr = self.val[atom.name]
            v = self.place_const(atom.name, arr, isa_dtype(atom.dtype, self.act), atom.shape)
            self.env[atom.name] = v
            return v
        dt = isa_dtype(atom.dtype, self.act)
        dt = "fp32" if dt in ("bf16", "fp16", "fp8", "fp8e5m2") else dt
        arr = np.asarray(atom.value).astype(np.float32 if dt == "fp32" else DTYPES[dt]).reshape(())
        v = self.place_const(f"lit{len(self.consts)}", arr.reshape(1), dt)
        return View(v.space, v.addr, v.dtype, (), ())

    def out_view(self, var) -> View:
        v = self.alloc(var.shape, isa_dtype(var.dtype, self.act), "dram" if var.name in self.outputs else None)
        self.env[var.name] = v
        if v.space == "shared":
            self.owned[var.name] = v
        return v

    def materialize(self, v: View) -> View:
        out = self.alloc(v.shape, v.dtype)
        copy_kernel(self, v, out)
        return out

    def contiguous(self, v: View, shape) -> View:
        r = v.reshape(shape)
        return r if r is not None else self.materialize(v).reshape(shape)


def _to_isa(arr, dtype):
    if arr is None:
        return None
    a = np.asarray(arr)
    if dtype == "int8" and a.dtype == np.bool_:
        return a.astype(np.int8)
    if dtype in ("int32", "int8", "u8") and a.dtype.kind in "iub":
        return a.astype(DTYPES[dtype])
    return a.astype(np.float32).astype(DTYPES[dtype]) if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16 else \
        a.astype(DTYPES[dtype])


def copy_kernel(cc, src: View, dst: View):
    """dst[...] = src[...] by DMA, split over the cores along the first axis with enough work
    for all of them (else the longest one)."""
    if not src.shape:
        dma_copy(cc.streams[0], src.broadcast((1,)), dst.broadcast((1,)))
        cc.barrier()
        return
    ax = min(range(len(src.shape)), key=lambda d: (-min(src.shape[d], cc.ncores), d))
    for core, (a, b) in enumerate(split_even(src.shape[ax], cc.ncores)):
        st = tuple(a if d == ax else 0 for d in range(len(src.shape)))
        sz = tuple(b - a if d == ax else n for d, n in enumerate(src.shape))
        dma_copy(cc.streams[core], src.box(st, sz), dst.box(st, sz))
    cc.barrier()


# ----------------------------------------------------------------------------- the walk

def compile_ir(ir, chip, mode: str = "bf16") -> Program:
    if mode in BLOCK_MODES:
        from ..ir.blockfp import quantize_weights
        ir = quantize_weights(ir, mode)
    cc = Compiler(ir, chip, Options(mode))
    inputs = []
    for v in ir.inputs:
        view = cc.alloc(v.shape, isa_dtype(v.dtype, cc.act), "dram")
        cc.env[v.name] = view
        inputs.append(Tensor(v.name, "dram", view.addr, tuple(v.shape), view.dtype))
    for name, arr in ir.consts.items():
        cc.val[name] = None if _abstract(arr) else arr
    consumers: dict = {}
    for i, e in enumerate(ir.eqns):
        for a in e.inputs:
            if hasattr(a, "name"):
                consumers.setdefault(a.name, []).append(i)
    cc.consumers = consumers
    cc.done: set = set()
    last_use = None
    cc.remaining = {n: len(set(ix)) for n, ix in consumers.items()}
    if "residual" in cc.geom.epilogue_ops:
        cc.deferred = _scaled_shortcuts(cc)
    waiting = {j for _, _, idx in cc.deferred.values() for j in idx}
    for i, e in enumerate(ir.eqns):
        if i in cc.done or (i in waiting and any(i in idx for *_, idx in cc.deferred.values())):
            continue
        cc.op_name, cc.eqn, cc.eqn_index = e.op, e, i
        cc.chaining = bool(cc.geom.conv) and e.op in CHAIN_OPS
        cc.sram_bytes = cc.full_sram // 2 if cc.chaining else cc.full_sram
        before = set(cc.done)
        _lower(cc, i, e)
        cc.fused[i] = tuple(sorted(cc.done - before - {i}))
        cc.done.add(i)
        _free_dead(cc, i, e, last_use)
    outputs = []
    cc.op_name, cc.chaining, cc.sram_bytes, cc.eqn_index = "output", False, cc.full_sram, -1
    for o in ir.outputs:
        v = cc.view(o)
        if v.space != "dram" or not v.is_contiguous() or v.shape != tuple(o.shape):
            dst = cc.alloc(o.shape, v.dtype, "dram")
            copy_kernel(cc, v.reshape(o.shape) or v.broadcast(o.shape) if v.shape != tuple(o.shape) else v, dst)
            v = dst
        outputs.append(Tensor(getattr(o, "name", "out"), "dram", v.addr, tuple(o.shape), v.dtype))
    streams = [s.ins for s in cc.streams]
    return Program(chip, streams, cc.dram.top, cc.shared.top, tuple(inputs), tuple(outputs), tuple(cc.consts),
                   {"mode": mode, "ir_outputs": [getattr(o, "dtype", "f32") for o in ir.outputs], "kernels": cc.kernels,
                    "kernel_eqns": cc.kernel_eqns,
                    **({"chained": cc.chained_barriers()} if cc.geom.conv else {})})


def _abstract(arr) -> bool:
    a = np.asarray(arr)
    return a.size > 1 and all(s == 0 for s in a.strides)


def _free_dead(cc, i, e, last_use):
    """Release a shared-buffer allocation once every value viewing it has had its last use."""
    for o in e.outputs:
        if o.name in cc.env and o.name not in cc.val:
            r = cc.root.setdefault(o.name, o.name)
            cc.live[r] = cc.live.get(r, 0) + 1
    for j in _fused_here(cc, i):
        for o in cc.ir.eqns[j].outputs:
            if o.name in cc.env and o.name not in cc.root:
                cc.root[o.name] = o.name
                cc.live[o.name] = cc.live.get(o.name, 0) + 1
    for j in (i, *_fused_here(cc, i)):
        for n in {getattr(a, "name", None) for a in cc.ir.eqns[j].inputs} - {None}:
            cc.remaining[n] -= 1
            if cc.remaining[n] or n in cc.outputs or n not in cc.root:
                continue
            r = cc.root[n]
            cc.live[r] -= 1
            if cc.live[r] == 0 and r in cc.owned:
                v = cc.owned.pop(r)
                cc.shared.release(v.addr, v.size * v.esize)


def _fused_here(cc, i):
    return cc.fused.get(i, ())


def _scaled_shortcuts(cc) -> dict:
    """`r = cast(x: i8 -> f32) * s` (s a scalar literal) whose only use is an `add`: a quantised
    network's identity shortcut. On a chip whose output stage adds a second tensor, such an r is not
    computed on its own: the GEMM epilogue that reaches the add reads x in int8 and adds x * s
    (`axpys`), as the stage converts its input (Hanguang 800: "convert data to FP and push down the
    pipe"). If no epilogue takes it, the first read of r computes it as a row kernel (Compiler.view)."""
    out = {}
    for i, e in enumerate(cc.ir.eqns):
        if e.op != "cast" or e.inputs[0].dtype != "i8" or e.outputs[0].dtype != "f32":
            continue
        c = e.outputs[0]
        users = cc.consumers.get(c.name, [])
        if len(users) != 1 or c.name in cc.outputs or cc.ir.eqns[users[0]].op != "mul":
            continue
        m = cc.ir.eqns[users[0]]
        lits = [a for a in m.inputs if not hasattr(a, "name")]
        r = m.outputs[0]
        after = cc.consumers.get(r.name, [])
        if len(m.inputs) != 2 or len(lits) != 1 or np.ndim(lits[0].value) or r.name in cc.outputs or \
                len(after) != 1 or cc.ir.eqns[after[0]].op != "add" or tuple(r.shape) != tuple(c.shape):
            continue
        out[r.name] = (e.inputs[0], float(lits[0].value), (i, users[0]))
    return out


def _lower(cc, i, e):
    op = e.op
    ins = e.inputs
    consts = all(not hasattr(a, "name") or a.name in cc.val for a in ins)
    if consts and op == "dequantize" and ins[0].dtype == "f4e2m1":
        cc.fp4[e.outputs[0].name] = e            # GEMMs read it packed (_linear_like); others the folded value
        if _foldable(cc, e):
            _fold(cc, e)
        else:
            cc.val[e.outputs[0].name] = None     # shape-only
        return
    if consts and _foldable(cc, e):
        _fold(cc, e)
        return
    if op in VIEWS:
        VIEWS[op](cc, e)
        return
    if op in ELEMENTWISE:
        _elementwise(cc, i, e)
        return
    fn = LOWER.get(op)
    if fn is None:
        raise UnsupportedOpError(f"npu compiler: op {op!r} ({e.outputs[0]}) is not supported on the NPU")
    fn(cc, i, e)


def _foldable(cc, e) -> bool:
    if any(hasattr(a, "name") and cc.val[a.name] is None for a in e.inputs):
        return False
    return sum(o.size for o in e.outputs) <= cc.opts.fold_limit or not e.inputs


def _fold(cc, e):
    vars_ = [a for a in e.inputs if hasattr(a, "name")]
    uniq = list({v.name: v for v in vars_}.values())
    p = IRProgram(tuple(uniq), {}, (e,), tuple(e.outputs))
    outs = evaluate(p, *[cc.val[v.name] for v in uniq])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for o, val in zip(e.outputs, outs):
        cc.val[o.name] = np.asarray(val)


# ----------------------------------------------------------------------------- views

def _alias(cc, e, v):
    cc.env[e.outputs[0].name] = v
    src = getattr(e.inputs[0], "name", None)
    if src in cc.root:
        cc.root[e.outputs[0].name] = cc.root[src]


def _reshape(cc, e):
    _alias(cc, e, cc.contiguous(cc.view(e.inputs[0]), e.params["shape"]))


def _slice(cc, e):
    p = e.params                    # a negative step is a negative stride: DMA descriptors walk backwards
    _alias(cc, e, cc.view(e.inputs[0]).slice(p["starts"], p["steps"], e.outputs[0].shape))


def _split(cc, e):
    v, ax, a = cc.view(e.inputs[0]), e.params["axis"], 0
    for o, n in zip(e.outputs, e.params["sizes"]):
        st = [0] * len(v.shape)
        st[ax] = a
        cc.env[o.name] = v.box(tuple(st), o.shape)
        if e.inputs[0].name in cc.root:
            cc.root[o.name] = cc.root[e.inputs[0].name]
        a += n


def _cast(cc, e):
    """A cast that changes neither the stored type nor any value is a view."""
    v, o = cc.view(e.inputs[0]), e.outputs[0]
    funcs = [f for f, *_ in cast_steps(e.inputs[0].dtype, o.dtype, None)]
    if isa_dtype(o.dtype, cc.act) == v.dtype and funcs == ["copy"]:
        _alias(cc, e, v)
        return True
    return False


VIEWS = {
    "reshape": _reshape,
    "transpose": lambda cc, e: _alias(cc, e, cc.view(e.inputs[0]).transpose(e.params["perm"])),
    "broadcast_to": lambda cc, e: _alias(cc, e, cc.view(e.inputs[0]).broadcast(e.params["shape"])),
    "slice": _slice, "split": _split,
}


# ----------------------------------------------------------------------------- elementwise chains

def _chain(cc, i, var, shape, allow3=True, max_other=2, ready=()):
    """Eqn indices of single-use elementwise consumers following `var`, all of shape `shape`
    (their other operands computed already, or named in `ready`)."""
    out = []
    while True:
        users = cc.consumers.get(var.name, [])
        if len(users) != 1 or var.name in cc.outputs:
            return out
        j = users[0]
        e = cc.ir.eqns[j]
        if e.op not in ELEMENTWISE or tuple(e.outputs[0].shape) != tuple(shape) or (e.op == "where" and not allow3):
            return out
        others = [a for a in e.inputs if getattr(a, "name", None) != var.name]
        if sum(1 for a in e.inputs if getattr(a, "name", None) == var.name) != 1 or len(others) > max_other:
            return out
        if any(hasattr(a, "name") and a.name not in cc.env and a.name not in cc.val and a.name not in ready
               for a in others):
            return out
        out.append(j)
        var = e.outputs[0]


def _operand(cc, a, cur_name):
    if cur_name is not None and getattr(a, "name", None) == cur_name:
        return CUR
    if not hasattr(a, "name") and np.ndim(a.value) == 0 and a.dtype not in ("bool",):
        return float(a.value)
    return a


def _elementwise(cc, i, e, chain=None):
    if chain is None and e.op == "cast" and _cast(cc, e):
        return
    out = e.outputs[0]
    chain = chain or [i] + _chain(cc, i, out, out.shape)
    loads, steps, cur = {}, [], None
    for j in chain:
        ej = cc.ir.eqns[j]
        ops = [_operand(cc, a, cur) if cur else _operand(cc, a, None) for a in ej.inputs]
        for func, srcs, imm in ew_steps(ej, ops):
            if len(srcs) == 2 and any(isinstance(x, float) for x in srcs):
                f = _imm_form(func, srcs)
                if f:
                    func, srcs, imm = f
            names = []
            for x in srcs:
                if x is CUR:
                    names.append(steps[-1][2] if steps else "t0")
                elif isinstance(x, float):
                    names.append(_lit_tile(cc, loads, x))
                else:
                    names.append(_load_tile(cc, loads, x))
            steps.append(("vec", func, f"t{len(steps) + 1}", names, imm))
        cur = ej.outputs[0].name
        cc.done.add(j)
    last = cc.ir.eqns[chain[-1]].outputs[0]
    ov = cc.out_view(last)
    final = steps[-1][2]
    rp = RowProgram(tuple(out.shape) or (1,), loads, steps, {final: _nd(ov, out.shape)}, dtypes={final: ov.dtype})
    row_kernel(cc, rp)


def _nd(v: View, shape):
    return v if shape else View(v.space, v.addr, v.dtype, (1,), (1,))


def _load_tile(cc, loads, atom):
    name = f"in_{atom.name}"
    v = cc.view(atom)
    loads[name] = v if v.shape else View(v.space, v.addr, v.dtype, (1,), (0,))
    return name


def _lit_tile(cc, loads, x):
    v = cc.view(_Lit(x))
    name = f"lit{len(loads)}"
    loads[name] = View(v.space, v.addr, v.dtype, (1,), (0,))
    return name


@dataclass(frozen=True)
class _Lit:
    value: float
    dtype: str = "f32"
    shape: tuple = ()


# ----------------------------------------------------------------------------- GEMMs

def _epilogue(cc, i, out_var, shape2d, to2d):
    """Fuse the single-use elementwise chain after a GEMM output: epilogue entries + final var."""
    chain = _chain(cc, i, out_var, out_var.shape, allow3=False, max_other=1, ready=cc.deferred)
    ep, cur = [], out_var
    for j in chain:
        e = cc.ir.eqns[j]
        sc = [a for a in e.inputs if getattr(a, "name", None) in cc.deferred]
        if e.op == "add" and sc and any(getattr(a, "name", None) == cur.name for a in e.inputs):
            x, scale, idx = cc.deferred.pop(sc[0].name)          # + x * scale, x read in int8
            v = cc.view(x)
            ep.append(("axpys", to2d(v.broadcast(out_var.shape) if v.shape != tuple(out_var.shape) else v), scale,
                       False))
            cc.done.update((*idx, j))
            cur = e.outputs[0]
            continue
        ops = [_operand(cc, a, cur.name) for a in e.inputs]
        steps = ew_steps(e, ops)
        entries = []
        for func, srcs, imm in steps:
            if len(srcs) == 2 and any(isinstance(x, float) for x in srcs):
                f = _imm_form(func, srcs)
                if f is None:
                    break
                func, srcs, imm = f
            other = [x for x in srcs if x is not CUR]
            if not other:
                entries.append((func, None, imm, False))
                continue
            v = cc.view(other[0])
            full = v.broadcast(out_var.shape) if v.shape != tuple(out_var.shape) else v
            entries.append((func, to2d(full), imm, srcs[0] is not CUR))
        else:
            ep += entries
            cc.done.add(j)
            cur = e.outputs[0]
            continue
        break
    return ep, cur


def _linear_like(cc, i, e, x: View, wval, wshape, bias, out_var, wdtype="f32", wname=None):
    """x[..., K] @ W^T with W[N, K] a constant of IR dtype `wdtype` (or a runtime view when wval is a View);
    `wname`: the IR weight, read packed when it is a dequantized e2m1 constant (`_fp4_weight`)."""
    K = x.shape[-1]
    N = wshape[0]
    M = math.prod(x.shape[:-1])
    a = cc.contiguous(x, (M, K)) if M > 0 else x
    to2d = lambda v: _as2d(cc, v, M, N)
    ep = [("add", to2d(cc.view(bias).broadcast(out_var.shape)), 0.0, False)] if bias is not None else []
    ep2, last = _epilogue(cc, i, out_var, (M, N), to2d)
    ov = cc.out_view(last)
    o2 = ov.reshape((M, N))
    mode = cc.opts.mode
    fp4 = _fp4_weight(cc, wname, (N, K))
    if fp4 is not None:
        packed, scales, sdt, g, ts, dt = fp4
        pv = cc.place_const(f"{e.outputs[0].name}_w4", packed, "u8", (K, N // 2))
        sv = cc.place_const(f"{e.outputs[0].name}_w4s", scales, sdt, (K // g, N))
        gemm(cc, [GemmJob(_as_dtype(cc, a, dt), pv, o2, ep + ep2, w_scales=sv, w_code="e2m1", w_imm=ts)],
             dt, "fp32", group=g)
    elif isinstance(wval, View) or mode in ("bf16", "fp16", *BLOCK_MODES) or a.dtype != cc.act:
        dt = _gemm_dtype(cc, a, wval.dtype if isinstance(wval, View) else isa_dtype(wdtype, cc.act))
        w = _as_dtype(cc, wval, dt).transpose((1, 0)) if isinstance(wval, View) else _place_w(cc, e, wval, (K, N), dt)
        gemm(cc, [GemmJob(_as_dtype(cc, a, dt), w, o2, ep + ep2)], dt, "int32" if dt == "int8" else "fp32")
    elif mode in ("int8", "fp8"):
        qdt, qmax = ("int8", 127.0) if mode == "int8" else ("fp8", 448.0)
        wq, sw = _quant_weight(wval, qdt, qmax, (N, K))
        wv = cc.place_const(f"{e.outputs[0].name}_wq", wq, qdt, (K, N))
        sv = cc.place_const(f"{e.outputs[0].name}_ws", sw, "fp32", (N,))
        xq, sx = _quant_act(cc, a, qdt, qmax)
        deq = [("mul", sx.broadcast((M, N)), 0.0, False), ("mul", sv.broadcast((M, N)), 0.0, False)]
        gemm(cc, [GemmJob(xq, wv, o2, deq + ep + ep2)], qdt, "int32" if qdt == "int8" else "fp32")
    else:  # int4-weights
        g = INT4_GROUP if K % INT4_GROUP == 0 else K
        packed, scales = _quant_int4(wval, g, (N, K))
        pv = cc.place_const(f"{e.outputs[0].name}_w4", packed, "u8", (K, N // 2))
        sv = cc.place_const(f"{e.outputs[0].name}_w4s", scales, "fp32", (K // g, N))
        gemm(cc, [GemmJob(a, pv, o2, ep + ep2, w_scales=sv)], cc.act, "fp32", group=g)


def _as2d(cc, v: View, M, N):
    r = v.reshape((M, N))
    return r if r is not None else cc.materialize(v).reshape((M, N))


def _place_w(cc, e, wval, kn, dtype=None):
    w = None if wval is None else np.ascontiguousarray(np.asarray(wval).T)
    return cc.place_const(f"{e.outputs[0].name}_w", w, dtype or cc.act, kn)


def _gemm_dtype(cc, a: View, w_dtype: str) -> str:
    """The array's input type: int8 or fp8 when both operands are stored so (exact products), else
    the activation type (operands in another type are converted by a vector copy first)."""
    if "int32" in (a.dtype, w_dtype):
        raise UnsupportedOpError(f"npu compiler: {cc.op_name} on integers wider than 8 bits "
                                 f"(the array multiplies int8; ints go through bf16 exactly only up to 256)")
    return a.dtype if a.dtype == w_dtype and a.dtype in ("int8", "fp8") else cc.act


def _as_dtype(cc, v: View, dtype: str) -> View:
    """v stored as `dtype`: itself, or a converted copy (a vector copy kernel; DMA does not convert)."""
    if v.dtype == dtype:
        return v
    out = cc.alloc(v.shape, dtype)
    row_kernel(cc, RowProgram(v.shape, {"x": v}, [("vec", "copy", "y", ["x"], 0.0)], {"y": out}, dtypes={"y": dtype}))
    return out


def _quant_weight(w, qdt, qmax, nk):
    """Per-output-channel symmetric quantisation: W[n, k] ~ q[k, n] * s[n]."""
    if w is None:
        return None, None
    w = np.asarray(w, np.float32)
    s = np.maximum(np.abs(w).max(axis=1), 1e-30) / qmax
    q = w / s[:, None]
    q = np.clip(np.rint(q), -128, 127).astype(np.int8) if qdt == "int8" else \
        np.clip(q, -448, 448).astype(ml_dtypes.float8_e4m3fn)
    return np.ascontiguousarray(q.T), s.astype(np.float32)


def _fp4_weight(cc, wname, nk):
    """Packed form of a GEMM weight that is `dequantize` of constant e2m1 data with block scales along
    K: (e2m1 codes [K, N/2] two per byte, scales [K/g, N], their ISA dtype, g, tensor scale, the GEMM's
    input type), or None (the folded dense value is used then). Shape-only weights give None data."""
    if wname is None or wname[0] not in cc.fp4 or wname[0] in cc.env:
        return None
    e = cc.fp4[wname[0]]
    if len(e.inputs) > 2 or not all(hasattr(a, "name") for a in e.inputs) or len(e.inputs[0].shape) != 2:
        return None
    q, s = (cc.val[a.name] for a in e.inputs)
    qs, ss = e.inputs[0].shape, e.inputs[1].shape or (1, 1)
    if not wname[1]:                                   # linear: w[N, K]; matmul: b[K, N]
        q, s, qs, ss = _t(q), _t(s), qs[::-1], ss[::-1]
    K, N = qs
    if N % 2 or K % ss[0] or ss[1] not in (1, N) or (K, N) != (nk[1], nk[0]):
        return None
    sdt = {"f8e4m3": "fp8", "f8e8m0": "e8m0"}.get(e.inputs[1].dtype, "fp32")
    packed = scales = None
    if q is not None and s is not None:
        codes = np.ascontiguousarray(q).astype(DTYPES["fp4"]).view(np.uint8) & 0xF
        packed = np.ascontiguousarray(codes[:, 0::2] | (codes[:, 1::2] << 4))
        s = np.asarray(s).reshape(ss)
        scales = np.ascontiguousarray(np.broadcast_to(s, (ss[0], N)).astype(np.float32).astype(DTYPES[sdt]))
    dt = isa_dtype(e.outputs[0].dtype, cc.act)          # the IR's weight type (bf16/fp16) is the array's
    return packed, scales, sdt, K // ss[0], e.params["tensor_scale"], dt if dt in ("bf16", "fp16") else cc.act


def _t(a):
    return None if a is None else np.asarray(a).T


def _quant_int4(w, g, nk):
    """Group-wise int4: W[n, k] ~ q[k, n] * s[k // g, n], q in -8..7, packed two per byte along n."""
    if w is None:
        return None, None
    wt = np.asarray(w, np.float32).T                              # K x N
    K, N = wt.shape
    s = np.maximum(np.abs(wt.reshape(K // g, g, N)).max(axis=1), 1e-30) / 7.0
    q = np.clip(np.rint(wt / np.repeat(s, g, axis=0)), -8, 7).astype(np.int8)
    u = (q & 0xF).astype(np.uint8)
    return np.ascontiguousarray(u[:, 0::2] | (u[:, 1::2] << 4)), s.astype(np.float32)


def _quant_act(cc, a: View, qdt, qmax):
    """Dynamic per-row quantisation kernel: s = absmax(row) / qmax, q = x / s."""
    M, K = a.shape
    xq, sx = cc.alloc((M, K), qdt), cc.alloc((M, 1), "fp32")
    steps = [("red", "absmax", "am", "x", 1.0 / qmax), ("vec", "maxs", "s", ["am"], 1e-30),
             ("vec", "div", "q", ["x", "s"], 0.0)]
    row_kernel(cc, RowProgram((M, K), {"x": a}, steps, {"q": xq, "s": sx}, dtypes={"q": qdt},
                              kinds={"am": "col", "s": "col"}, whole_rows=True))
    return xq, sx


def _linear(cc, i, e):
    x, w = e.inputs[0], e.inputs[1]
    bias = e.inputs[2] if len(e.inputs) > 2 else None
    wval = cc.val[w.name] if w.name in cc.val and w.name not in cc.env else cc.view(w)
    _linear_like(cc, i, e, cc.view(x), wval, w.shape, bias, e.outputs[0], w.dtype, (w.name, False))


def _matmul(cc, i, e):
    a, b = e.inputs
    out = e.outputs[0]
    if len(b.shape) == 2 and b.name in cc.val and b.name not in cc.env and len(a.shape) >= 1:
        x = cc.view(a) if len(a.shape) > 1 else cc.view(a).reshape((1, a.shape[0]))
        wv = cc.val[b.name]
        wt = None if wv is None else np.asarray(wv).T
        _linear_like(cc, i, e, x, wt, (b.shape[1], b.shape[0]), None, out, b.dtype, (b.name, True))
        return
    av, bv = cc.view(a), cc.view(b)
    if len(a.shape) == 1:
        av = av.reshape((1,) + av.shape)
    if len(b.shape) == 1:
        bv = bv.reshape(bv.shape + (1,))
    M, K, N = av.shape[-2], av.shape[-1], bv.shape[-1]
    batch = tuple(np.broadcast_shapes(av.shape[:-2], bv.shape[:-2]))
    dt = _gemm_dtype(cc, av, bv.dtype)
    av, bv = _as_dtype(cc, av, dt).broadcast(batch + (M, K)), _as_dtype(cc, bv, dt).broadcast(batch + (K, N))
    ov = cc.alloc(batch + (M, N), isa_dtype(out.dtype, cc.act))
    jobs = []
    for idx in np.ndindex(*batch) if batch else [()]:
        st = tuple(idx)
        one = (1,) * len(st)
        jobs.append(GemmJob(av.box(st + (0, 0), one + (M, K)).reshape((M, K)),
                            bv.box(st + (0, 0), one + (K, N)).reshape((K, N)),
                            ov.box(st + (0, 0), one + (M, N)).reshape((M, N)), []))
    gemm(cc, jobs, dt, "int32" if dt == "int8" else "fp32")
    cc.env[out.name] = ov.reshape(out.shape)


def _attention(cc, i, e):
    q, k, v = (_as_dtype(cc, cc.view(a), cc.act) for a in e.inputs[:3])
    out = e.outputs[0]
    lead = q.shape[:-3]
    B = math.prod(lead)
    q4, k4, v4 = (cc.contiguous(x, (B,) + x.shape[-3:]) if x.reshape((B,) + x.shape[-3:]) is None else
                  x.reshape((B,) + x.shape[-3:]) for x in (q, k, v))
    mask = None
    if len(e.inputs) > 3:
        mv = cc.view(e.inputs[3]).broadcast(q.shape[:-1] + (k.shape[-2],))
        mask = mv.reshape((B,) + mv.shape[-3:]) or cc.materialize(mv).reshape((B,) + mv.shape[-3:])
    ov = cc.out_view(out)
    attention(cc, q4, k4, v4, ov.reshape((B,) + ov.shape[-3:]), mask, e.params["causal"], e.params["scale"], cc.act)


def _conv2d(cc, i, e):
    """im2col through a strided DMA view, then one GEMM per (image, group) on the array, with the
    single-use elementwise chain after it fused as the epilogue; int8 x int8 operands multiply as
    int8 into int32. With one input channel per group (depthwise) the vector unit runs the taps
    instead (kernels.depthwise_conv). On a chip with a conv engine an ungrouped conv reads its
    input's channels-last pixel rows in place (1x1, stride 1) or has the memory engine gather its
    windows tile by tile (kernels.Windows): no padded copy, no im2col pass; its output stays
    channels-last (`_conv_gemm`)."""
    p = e.params
    x, w, out = e.inputs[0], e.inputs[1], e.outputs[0]
    N, C, H, W = x.shape
    O, cg, kh, kw = w.shape
    g, og, K = p["groups"], O // p["groups"], cg * kh * kw
    _, _, Ho, Wo = out.shape
    (pt, pb), (pl, pr) = p["padding"]
    dt = "int8" if x.dtype == w.dtype == "i8" else cc.act
    xv = _as_dtype(cc, cc.view(x), dt)
    direct = _pixel_rows(cc, xv) if g == 1 and (kh, kw) == (1, 1) and tuple(p["stride"]) == (1, 1) and \
        not (pt or pb or pl or pr) else None
    bv = cc.view(e.inputs[2]) if len(e.inputs) > 2 else None
    if direct is not None:             # conv engine, 1x1: the input's channels-last rows are the GEMM's rows
        _conv_gemm(cc, i, e, direct, _weight_view(cc, e, w, (O, K), (1, 0), dt), bv)
        _release(cc, xv if xv is not cc.env.get(x.name) else None)
        return
    if cc.geom.conv and g == 1:        # conv engine: the memory engine forms the windows as it loads them
        zero = cc.place_const(f"zero{len(cc.consts)}", np.zeros((1,), np.float32), dt)
        win = Windows(xv, (Ho, Wo), (kh, kw), tuple(p["stride"]), tuple(p["dilation"]), (pt, pl), zero)
        _conv_gemm(cc, i, e, win, _weight_view(cc, e, w, (O, cg, kh, kw), (2, 3, 1, 0), dt).reshape((K, O)), bv)
        _release(cc, xv if xv is not cc.env.get(x.name) else None)
        return
    if pt or pb or pl or pr:
        xv = _pad_view(cc, xv, ((0, 0), (0, 0), (pt, pb), (pl, pr)), 0.0)
    if cg == 1 and g > 1:
        depthwise_conv(cc, xv, _weight_view(cc, e, w, (O, kh * kw)), bv, cc.out_view(out), (kh, kw), p["stride"],
                       p["dilation"])
        return
    cols = _im2col(cc, xv, (Ho, Wo), (kh, kw), p["stride"], p["dilation"]).reshape((N, Ho * Wo, g, K))
    wv = _weight_view(cc, e, w, (g, og, K), (0, 2, 1), dt)                 # (g, K, og)
    if g == 1:
        _conv_gemm(cc, i, e, cols.reshape((N * Ho * Wo, K)), wv.reshape((K, O)), bv)
    else:
        ov = cc.out_view(out)
        jobs = []
        for n in range(N):
            for gi in range(g):
                b = bv.box((gi * og,), (og,)) if bv is not None else None
                ep = [("add", View(b.space, b.addr, b.dtype, (Ho * Wo, og), (0, b.strides[0])), 0.0, False)] if b else []
                o = ov.box((n, gi * og, 0, 0), (1, og, Ho, Wo)).reshape((og, Ho * Wo)).transpose((1, 0))
                jobs.append(GemmJob(cols.box((n, 0, gi, 0), (1, Ho * Wo, 1, K)).reshape((Ho * Wo, K)),
                                    wv.box((gi, 0, 0), (1, K, og)).reshape((K, og)), o, ep))
        gemm(cc, jobs, dt, "int32" if dt == "int8" else "fp32", conv=True)
    _release(cc, cols, xv if xv is not cc.env.get(x.name) else None)


def _feeds_output(cc, name: str) -> bool:
    """Whether value `name` is a program output or viewed (transpose / reshape, its only use) by one."""
    for _ in range(4):
        if name in cc.outputs:
            return True
        uses = cc.consumers.get(name, [])
        if len(uses) != 1 or cc.ir.eqns[uses[0]].op not in ("transpose", "reshape"):
            return False
        name = cc.ir.eqns[uses[0]].outputs[0].name
    return False


def _pixel_rows(cc, xv: View) -> View | None:
    """On a chip with a conv engine, x[N, C, H, W] as [N*H*W, C] rows without a copy when it is
    stored channels-last (a conv engine's output, `_conv_gemm`), else None."""
    if not cc.geom.conv:
        return None
    N, C, H, W = xv.shape
    return xv.transpose((0, 2, 3, 1)).reshape((N * H * W, C))


def _im2col(cc, xv: View, out_hw, kernel, stride, dilation) -> View:
    """cols[n, ho, wo, c, i, j] = x[n, c, ho*sh + i*dh, wo*sw + j*dw] (x padded): one DMA per (tap,
    image), each a 3-D strided copy of the [Ho, Wo, C] window plane, spread over the cores."""
    N, C = xv.shape[:2]
    (Ho, Wo), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel, stride, dilation
    s0, s1, s2, s3 = xv.strides
    cols = cc.alloc((N, Ho, Wo, C, kh, kw), xv.dtype)
    jobs = [(i, j, n) for i in range(kh) for j in range(kw) for n in range(N)]
    for k, (i, j, n) in enumerate(jobs):
        src = View(xv.space, xv.addr + (n * s0 + i * dh * s2 + j * dw * s3) * xv.esize, xv.dtype, (Ho, Wo, C),
                   (s2 * sh, s3 * sw, s1))
        dst = View(cols.space, cols.addr + ((n * Ho * Wo * C) * kh * kw + i * kw + j) * cols.esize, cols.dtype,
                   (Ho, Wo, C), (Wo * C * kh * kw, C * kh * kw, kh * kw))
        dma_copy(cc.streams[k % cc.ncores], src, dst)
    cc.barrier()
    return cols


def _conv_gemm(cc, i, e, a: View, w: View, bv):
    """An ungrouped conv as one GEMM over all images (rows = image x output pixel, so small feature
    maps still fill the array), its single-use elementwise chain fused as the epilogue; the result
    [N*Ho*Wo, O] (NHWC) is copied to the NCHW output by DMA."""
    out = e.outputs[0]
    N, O, Ho, Wo = out.shape
    M = N * Ho * Wo
    temps = []

    def to2d(v):                                       # an operand of the output's shape, as [M, O] rows
        nhwc = v.reshape((N, O, Ho * Wo)).transpose((0, 2, 1))
        if nhwc.reshape((M, O)) is None:
            temps.append(cc.materialize(nhwc))
            return temps[-1].reshape((M, O))
        return nhwc.reshape((M, O))
    ep4, last = _epilogue(cc, i, out, None, lambda v: v)
    ep = [("add", View(bv.space, bv.addr, bv.dtype, (M, O), (0, bv.strides[0])), 0.0, False)] if bv is not None else []
    ep += [(f, None if v is None else to2d(v), imm, b) for f, v, imm, b in ep4]
    if cc.geom.conv:        # the conv engine's output stays channels-last; consumers read it through a view
        space = "dram" if _feeds_output(cc, last.name) else None
        t = cc.alloc((N, Ho, Wo, O), isa_dtype(last.dtype, cc.act), space)
        cc.env[last.name] = t.transpose((0, 3, 1, 2))
        if t.space == "shared":
            cc.owned[last.name] = t
        gemm(cc, [GemmJob(a, w, t.reshape((M, O)), ep)], w.dtype, "int32" if w.dtype == "int8" else "fp32", conv=True)
        _release(cc, *temps)
        return
    ov = cc.out_view(last)
    t = cc.alloc((N, Ho * Wo, O), ov.dtype)
    gemm(cc, [GemmJob(a, w, t.reshape((M, O)), ep)], w.dtype, "int32" if w.dtype == "int8" else "fp32", conv=True)
    copy_kernel(cc, t.transpose((0, 2, 1)), ov.reshape((N, O, Ho * Wo)))
    _release(cc, t, *temps)


def _release(cc, *temps):
    """Free a kernel's temporaries (padded input, im2col windows) held in the shared space."""
    for v in temps:
        if v is not None and v.space == "shared":
            cc.shared.release(v.addr, v.size * v.esize)


def _weight_view(cc, e, w, shape, perm=None, dtype=None) -> View:
    """A weight reshaped to `shape` (then permuted) in `dtype` (default: the activation type): a
    constant placed in DRAM in that layout, or a view of the runtime tensor."""
    perm, dtype = perm or tuple(range(len(shape))), dtype or cc.act
    if w.name in cc.val and w.name not in cc.env:
        arr = cc.val[w.name]
        arr = None if arr is None else np.ascontiguousarray(np.asarray(arr).reshape(shape).transpose(perm))
        return cc.place_const(f"{e.outputs[0].name}_w", arr, dtype, tuple(shape[d] for d in perm))
    return _as_dtype(cc, cc.contiguous(cc.view(w), shape), dtype).transpose(perm)


def _pad_view(cc, v: View, pads, value) -> View:
    shape = tuple(d + lo + hi for d, (lo, hi) in zip(v.shape, pads))
    out = cc.alloc(shape, v.dtype)
    fill = cc.place_const(f"pad{len(cc.consts)}", np.full((1,), value, np.float32), v.dtype)
    n = math.prod(shape)                                    # the fill, split over the cores
    copy_kernel(cc, View(fill.space, fill.addr, fill.dtype, (n,), (0,)), out.reshape((n,)))
    copy_kernel(cc, v, out.box(tuple(lo for lo, _ in pads), v.shape))
    return out


# ----------------------------------------------------------------------------- row ops

def _rows_view(cc, v: View, axes):
    """v with `axes` moved last and merged into one: (kept..., R)."""
    kept = [d for d in range(len(v.shape)) if d not in axes]
    t = v.transpose(tuple(kept) + tuple(axes))
    shape = tuple(v.shape[d] for d in kept) + (math.prod(v.shape[d] for d in axes),)
    return cc.contiguous(t, shape)


def _out_rows(cc, out_var, kept_shape):
    ov = cc.out_view(out_var)
    return ov, View.contiguous(ov.space, ov.addr, ov.dtype, tuple(kept_shape) + (1,))


def _reduce(cc, i, e):
    x = cc.view(e.inputs[0])
    axes = e.params.get("axes", (e.params.get("axis"),))
    rv = _rows_view(cc, x, axes)
    func = {"reduce_sum": "sum", "reduce_mean": "sum", "reduce_max": "max", "reduce_min": "min",
            "argmax": "argmax", "argmin": "argmin"}[e.op]
    imm = 1.0 / rv.shape[-1] if e.op == "reduce_mean" else 1.0
    _, o = _out_rows(cc, e.outputs[0], rv.shape[:-1])
    row_kernel(cc, RowProgram(rv.shape, {"x": rv}, [("red", func, "y", "x", imm)], {"y": o},
                              dtypes={"y": o.dtype}, whole_rows=True))


def _last_axis(cc, e, x: View, axes):
    """(rows view with the normalised axes last, output view in the same layout)."""
    rv = _rows_view(cc, x, axes)
    ov = cc.out_view(e.outputs[0])
    kept = [d for d in range(len(x.shape)) if d not in axes]
    ot = ov.transpose(tuple(kept) + tuple(axes))
    return rv, cc.contiguous(ot, rv.shape) if ot.reshape(rv.shape) is not None else None, ov


def _softmax(cc, i, e):
    if e.op == "softmax":
        steps = [("red", "max", "m", "x", 1.0), ("vec", "subexp", "p", ["x", "m"], 1.0),
                 ("red", "sum", "s", "p", 1.0), ("vec", "div", "y", ["p", "s"], 0.0)]
    else:
        steps = [("red", "max", "m", "x", 1.0), ("vec", "sub", "t", ["x", "m"], 0.0), ("vec", "exp", "p", ["t"], 0.0),
                 ("red", "sum", "s", "p", 1.0), ("vec", "log", "ls", ["s"], 0.0), ("vec", "sub", "y", ["t", "ls"], 0.0)]
    _along_axis(cc, e, e.params["axis"], steps, {"ls": "col"})


def _cumsum(cc, i, e):
    _along_axis(cc, e, e.params["axis"], [("scan", "sum", "y", "x", 0.0)], {})


def _along_axis(cc, e, axis, steps, kinds):
    """A row kernel over whole rows along `axis` (moved last, copied back if the output cannot take it)."""
    x = cc.view(e.inputs[0])
    rv, o, ov = _last_axis(cc, e, x, (axis,))
    tmp = o if o is not None else cc.alloc(rv.shape, ov.dtype)
    row_kernel(cc, RowProgram(rv.shape, {"x": rv}, steps, {"y": tmp}, dtypes={"y": ov.dtype}, kinds=kinds,
                              whole_rows=True))
    if o is None:
        _unpermute(cc, tmp, ov, x, (axis,))


def _unpermute(cc, tmp, ov, x, axes):
    kept = [d for d in range(len(x.shape)) if d not in axes]
    perm = tuple(kept) + tuple(axes)
    t = tmp.reshape(tuple(x.shape[d] for d in perm))
    inv = tuple(np.argsort(perm))
    copy_kernel(cc, t.transpose(inv), ov)


def _norm(cc, i, e):
    x = cc.view(e.inputs[0])
    axes, eps = e.params["axes"], e.params["eps"]
    rv, o, ov = _last_axis(cc, e, x, axes)
    n = rv.shape[-1]
    loads = {"x": rv}
    if e.op == "layer_norm":
        steps = [("red", "sum", "mu", "x", 1.0 / n), ("vec", "sub", "d", ["x", "mu"], 0.0),
                 ("vec", "mul", "d2", ["d", "d"], 0.0), ("red", "sum", "var", "d2", 1.0 / n)]
        src = "d"
    else:
        steps = [("vec", "mul", "d2", ["x", "x"], 0.0), ("red", "sum", "var", "d2", 1.0 / n)]
        src = "x"
    steps += [("vec", "adds", "ve", ["var"], eps), ("vec", "rsqrt", "r", ["ve"], 0.0),
              ("vec", "mul", "y", [src, "r"], 0.0)]
    for k, a in enumerate(e.inputs[1:]):
        wv = cc.view(a)
        loads[f"w{k}"] = wv.reshape((1, n)) if wv.reshape((1, n)) is not None else cc.materialize(wv).reshape((1, n))
        steps.append(("vec", "mul" if k == 0 else "add", "y", ["y", f"w{k}"], 0.0))
    steps[-1] = steps[-1][:2] + ("out",) + steps[-1][3:]
    kinds = {"ve": "col", "r": "col"}
    row_kernel(cc, RowProgram(rv.shape, {k: (v.broadcast(rv.shape) if k != "x" else v) for k, v in loads.items()},
                              steps, {"out": o if o is not None else cc.alloc(rv.shape, ov.dtype)},
                              dtypes={"out": ov.dtype}, kinds=kinds, whole_rows=True))
    if o is None:
        raise UnsupportedOpError("npu compiler: norm over non-trailing axes")


def _gather(cc, i, e):
    """np.take along any axis: the table viewed as rows [V, P*D] (axis first), row gathers, and the
    rows stored through a strided view of the output [P, n, D]."""
    table, idx = e.inputs
    ax = e.params["axis"]
    V, P, D = table.shape[ax], math.prod(table.shape[:ax]), math.prod(table.shape[ax + 1:])
    t3 = cc.contiguous(cc.view(table), (P, V, D)).transpose((1, 0, 2))
    t2 = t3.reshape((V, P * D))
    if t2 is None or (P * D > 1 and t2.strides[1] != 1):       # Gather reads contiguous rows
        t2 = cc.materialize(t3).reshape((V, P * D))
    n = idx.size
    iv = _wrap_indices(cc, idx, V)
    ov = cc.out_view(e.outputs[0])
    gather_rows(cc, t2, iv, ov.reshape((P, n, D)).transpose((1, 0, 2)))


def _wrap_indices(cc, idx, V) -> View:
    """idx as int32[n] with negative indices wrapped once (idx mod V): folded for constants, else a
    vector kernel."""
    n = idx.size
    if idx.name in cc.val and idx.name not in cc.env and cc.val[idx.name] is not None:
        a = np.asarray(cc.val[idx.name]).reshape(n).astype(np.int64)
        return cc.place_const(f"{idx.name}_wrapped", np.where(a < 0, a + V, a).astype(np.int32), "int32")
    out = cc.alloc((n,), "int32")
    row_kernel(cc, RowProgram((n,), {"i": cc.contiguous(cc.view(idx), (n,))}, [("vec", "mods", "y", ["i"], float(V))],
                              {"y": out}, dtypes={"y": "int32"}))
    return out


def _concat(cc, i, e):
    ov = cc.out_view(e.outputs[0])
    ax, a = e.params["axis"], 0
    for k, x in enumerate(e.inputs):
        st = [0] * len(ov.shape)
        st[ax] = a
        xv = cc.view(x)
        dma_copy(cc.streams[k % cc.ncores], xv, ov.box(tuple(st), x.shape))
        a += x.shape[ax]
    cc.barrier()


def _pad(cc, i, e):
    v = _pad_view(cc, cc.view(e.inputs[0]), e.params["pads"], e.params["value"])
    cc.env[e.outputs[0].name] = v


def _pool(cc, i, e):
    """Pads as the IR's (ceil_mode widens the high side); avg divides by the IR's divisor map
    (count_include_pad rules). On a chip with a pooling engine (max, or avg with one divisor) it
    reads the windows in place (kernels.pool_planes); else windows through a strided DMA view,
    one row per output pixel, reduced by a row kernel on the vector unit."""
    p, out = e.params, e.outputs[0]
    x = cc.view(e.inputs[0])
    N, C, H, W = x.shape
    _, _, Ho, Wo = out.shape
    mx = e.op == "max_pool2d"
    (kh, kw), (sh, sw), (dh, dw) = p["kernel"], p["stride"], p.get("dilation", (1, 1))
    pads = pool_pads((H, W), p["kernel"], p["stride"], p["padding"], (dh, dw), p["ceil_mode"])
    if any(lo or hi for lo, hi in pads):
        low = STORE_RANGE[x.dtype][0] if x.dtype in STORE_RANGE else -math.inf
        x = _pad_view(cc, x, ((0, 0), (0, 0), *pads), low if mx else 0.0)
    inv = 1.0 if mx else 1.0 / avg_pool_divisor((H, W), p["kernel"], p["stride"], p["padding"], p["ceil_mode"],
                                                p["count_include_pad"])
    if cc.geom.pooling and np.ptp(inv) == 0:
        pool_planes(cc, x, cc.out_view(out), (kh, kw), (sh, sw), (dh, dw), "max" if mx else "sum", float(np.max(inv)))
        _release(cc, x if x is not cc.env.get(e.inputs[0].name) else None)
        return
    s0, s1, s2, s3 = x.strides
    win = View(x.space, x.addr, x.dtype, (N, C, Ho, Wo, kh, kw), (s0, s1, s2 * sh, s3 * sw, s2 * dh, s3 * dw))
    rv = cc.materialize(win).reshape((N * C, Ho * Wo, kh * kw))
    _, o = _out_rows(cc, out, (N * C, Ho * Wo))
    loads, steps = {"x": rv}, [("red", "max" if mx else "sum", "y", "x", float(np.max(inv)))]
    if np.ptp(inv) > 0:                               # windows with different divisors: a per-pixel scale
        c = cc.place_const(f"{out.name}_inv", inv.astype(np.float32), "fp32")
        loads["inv"] = View(c.space, c.addr, c.dtype, (1, Ho * Wo, 1), (0, 1, 0))
        steps = [("red", "sum", "s", "x", 1.0), ("vec", "mul", "y", ["s", "inv"], 0.0)]
    row_kernel(cc, RowProgram(rv.shape, loads, steps, {"y": o}, dtypes={"y": o.dtype}, kinds={"y": "col"},
                              whole_rows=True))
    _release(cc, rv, x if x is not cc.env.get(e.inputs[0].name) else None)


# ----------------------------------------------------------------------------- quantisation

def _blocked(v: View, xshape):
    """x's shape with every blocked axis split in (blocks, block size), and the scale view `v` over
    it (stride 0 along the block): x[i] pairs with scale[i // (x.shape // scale.shape)]."""
    if not v.shape:
        return tuple(xshape), v.broadcast(xshape)
    shape, st = [], []
    for X, S, ss in zip(xshape, v.shape, v.strides):
        if 1 < S < X:
            shape, st = shape + [S, X // S], st + [ss, 0]
        else:
            shape, st = shape + [X], st + [ss if S > 1 else 0]
    return tuple(shape), View(v.space, v.addr, v.dtype, tuple(shape), tuple(st))


def _quant(cc, i, e):
    """quantize: x / (scale * tensor_scale) (+ zero point), clipped to the type's range, then rounded
    by the store (ints: half to even, NaN -> 0; fp8/fp4: RNE); dequantize: ((q - zero point) * scale)
    * tensor_scale. All in fp32."""
    x, out, ts = e.inputs[0], e.outputs[0], e.params["tensor_scale"]
    shape, sv = _blocked(_quant_operand(cc, e.inputs[1]), x.shape)
    xv = cc.view(x)
    loads = {"x": xv.reshape(shape) or cc.materialize(xv).reshape(shape), "s": sv}
    z = len(e.inputs) > 2
    if z:
        loads["z"] = _blocked(_quant_operand(cc, e.inputs[2]), x.shape)[1]
    if e.op == "quantize":
        dt = out.dtype
        lo, hi = (-float_max(dt), float_max(dt)) if dt in FLOATS else int_range(dt)
        slo, shi = STORE_RANGE.get(isa_dtype(dt, cc.act), (-math.inf, math.inf))
        ops = ([("muls", ["s"], ts), ("div", ["x", CUR], 0.0)] if ts != 1.0 else [("div", ["x", "s"], 0.0)]) + \
            ([("add", [CUR, "z"], 0.0)] if z else []) + \
            ([("maxs", [CUR], float(lo))] if lo > slo else []) + ([("mins", [CUR], float(hi))] if hi < shi else [])
    else:
        ops = ([("sub", ["x", "z"], 0.0)] if z else []) + [("mul", [CUR if z else "x", "s"], 0.0)] + \
            ([("muls", [CUR], ts)] if ts != 1.0 else [])
    steps = [("vec", f, "y" if k == len(ops) - 1 else f"t{k}", [f"t{k - 1}" if a is CUR else a for a in srcs], imm)
             for k, (f, srcs, imm) in enumerate(ops)]
    ov = cc.out_view(out)
    row_kernel(cc, RowProgram(shape, loads, steps, {"y": ov.reshape(shape)}, dtypes={"y": ov.dtype}))


def _quant_operand(cc, a) -> View:
    """A scale or zero point; constants keep fp32 (not the activation type), as the IR computes in f32."""
    if hasattr(a, "name") and a.name in cc.val and a.name not in cc.env and cc.val[a.name] is not None \
            and a.dtype in FLOATS:
        cc.env[a.name] = cc.place_const(a.name, np.asarray(cc.val[a.name], np.float32), "fp32")
    return cc.view(a)


LOWER = {
    "linear": _linear, "matmul": _matmul, "conv2d": _conv2d, "attention": _attention,
    **{op: _reduce for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "argmax", "argmin")},
    "softmax": _softmax, "log_softmax": _softmax, "cumsum": _cumsum, "layer_norm": _norm, "rms_norm": _norm,
    "gather": _gather, "concat": _concat, "pad": _pad, "max_pool2d": _pool, "avg_pool2d": _pool,
    "quantize": _quant, "dequantize": _quant,
}
CONSTANT_OPS = {"full", "iota"}     # no inputs: always folded at compile time (see _foldable)


def handled_ops() -> set:
    """IR ops the compiler lowers: views, elementwise chains, the LOWER table, folded constants."""
    return set(VIEWS) | ELEMENTWISE | set(LOWER) | CONSTANT_OPS
