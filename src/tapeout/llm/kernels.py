"""The kernel sequence of one LLM step (prefill, decode or a mixed serving batch).

Every kernel carries exact FLOPs and bytes read and written, so the performance, energy and
serving models all count the same work. Identical layers are built once and carry a `count`.

Two implementations:
- ``pytorch-cudagraph``: the unfused kernels of a plain PyTorch decoder (as
  `tapeout measure`, src/tapeout/perf/measure.py, times them): separate norms and residual adds, RoPE built from
  slicing, `cat` and about ten small kernels, KV-cache writes by copy, SDPA, SiLU then multiply.
- ``fused``: what a tuned engine (vLLM, TensorRT-LLM) runs: fused add+RMSNorm, RoPE and the
  KV-cache write in one kernel, flash attention / flash-decoding, fused SiLU-multiply.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import TapeoutError
from .spec import ModelSpec

IMPLEMENTATIONS = ("fused", "pytorch-cudagraph")
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
               "nvfp4": 0.5, "mxfp4": 0.5, "fp4": 0.5}
INT4_GROUP = 128  # int4 weight-only quantization: one bf16 scale per group of 128 weights
# FP4 block formats (tapeout.ir.blockfp): e2m1 codes + one 1-byte scale per block; "fp4" names NVFP4
FP4 = {"fp4": "nvfp4", "nvfp4": "nvfp4", "mxfp4": "mxfp4"}


def _fp4_bytes(fmt: str) -> float:
    """Bytes per element of a block-scaled FP4 tensor: half a byte plus its share of the block scale."""
    from ..ir.blockfp import FORMATS
    f = FORMATS[FP4[fmt]]
    return DTYPE_BYTES[fmt] + 1.0 / f.block


@dataclass(frozen=True, slots=True)
class Kernel:
    """One kernel launch (times `count` identical launches in the step).

    shape by kind: gemm (M, N, K, groups); attention (B, Sq, Skv, heads_q, heads_kv, d_qk, d_v, causal);
    elementwise/norm/softmax (rows, cols); comm (bytes, participants).
    """
    kind: str
    name: str
    flops: float
    bytes_read: float
    bytes_written: float
    shape: tuple = ()
    dtype: str = "bf16"
    count: float = 1.0
    weight_bytes: float = 0.0   # part of bytes_read that is weights (the same every step)

    @property
    def working_set(self) -> float:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True)
class Dtypes:
    """Weights, activations and KV cache dtypes. FP4 (nvfp4, mxfp4; fp4 = nvfp4) weights with
    bf16/fp16/fp8 activations are weight-only: dequantized on the fly, the GEMM runs at the
    activations' rate on any chip. FP4 activations (W4A4) run FP4 GEMMs and need a chip with
    cores.matrix.macs_per_cycle.fp4 (perf.kernels._mma_dtype says so in one line otherwise)."""
    weights: str = "bf16"
    activations: str = "bf16"
    kv: str = "bf16"

    def __post_init__(self):
        for role in ("weights", "activations", "kv"):
            v = getattr(self, role)
            if v not in DTYPE_BYTES or v == "fp32" and role != "activations":
                raise TapeoutError(f"{role} {v!r}: unsupported dtype "
                                   f"(use one of {', '.join(d for d in DTYPE_BYTES if d != 'fp32')})")
            object.__setattr__(self, role, FP4.get(v, v))
        if self.activations in ("int4",):
            raise TapeoutError("activations cannot be int4 (int4 is weight-only)")
        if self.activations in FP4 and self.weights != self.activations:
            raise TapeoutError(f"activations {self.activations} need weights {self.activations} (FP4 GEMMs take "
                               f"both operands in one block format)")

    @staticmethod
    def _bytes(d: str) -> float:
        return _fp4_bytes(d) if d in FP4 else DTYPE_BYTES[d]

    @property
    def w(self) -> float:
        b = self._bytes(self.weights)
        return b + 2.0 / INT4_GROUP if self.weights == "int4" else b

    @property
    def a(self) -> float:
        """Bytes of an activation between kernels (8- and 4-bit ones are quantized at the GEMM input)."""
        return 2.0 if self.activations in ("fp8", "int8", *FP4) else DTYPE_BYTES[self.activations]

    @property
    def kvb(self) -> float:
        return self._bytes(self.kv)

    @property
    def mma(self) -> str:
        """The dtype the matrix units run in: 8-bit (fp4) only when weights and activations are both
        8-bit (fp4); the chip-file key of every FP4 format is fp4."""
        if self.weights in ("fp8", "int8", *FP4) and self.activations == self.weights:
            return "fp4" if self.weights in FP4 else self.weights
        if self.weights in FP4 and self.activations == "fp8":
            return "fp8"            # W4A8: e2m1 widens exactly to e4m3, the GEMM runs at the fp8 rate
        return "fp16" if self.activations == "fp16" else "bf16"

    @property
    def act_kernels(self) -> str:
        """The dtype non-GEMM kernels (attention, elementwise) carry: the activations', except FP4
        activations, which live in bf16 between GEMMs (attention runs in bf16)."""
        return "bf16" if self.activations in FP4 else self.activations

    @property
    def gemm_in(self) -> float:
        return self._bytes(self.activations) if self.mma in ("fp8", "int8", "fp4") else self.a


@dataclass(frozen=True)
class Batch:
    """Sequences in one step: prefill chunks (new tokens, tokens already cached) and decodes (context)."""
    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        return sum(n for n, _ in self.prefill) + len(self.decode)

    @property
    def sequences(self) -> int:
        return len(self.prefill) + len(self.decode)

    @staticmethod
    def of(phase: str, batch: int, length: int | list[int]) -> "Batch":
        lens = list(length) if isinstance(length, (list, tuple)) else [int(length)] * batch
        if phase == "prefill":
            return Batch(prefill=tuple((int(n), 0) for n in lens))
        if phase == "decode":
            return Batch(decode=tuple(int(c) for c in lens))
        raise TapeoutError(f"phase {phase!r}: use prefill or decode")


@dataclass
class _Builder:
    spec: ModelSpec
    batch: Batch
    dt: Dtypes
    impl: str
    tp: int = 1
    ep: int = 1
    out: list[Kernel] = field(default_factory=list)
    moe_skew: float = 0.0
    rank_cores: int = 1     # cores per chip that are tensor-parallel ranks of their own (1: the chip is one rank)
    dense_moe: bool = False  # every token through every local expert (a stack without routed dispatch)

    def heads(self, n: int) -> int:
        """Attention heads (or KV heads) one chip holds: each of its rank_cores ranks holds
        ceil(n / (tp x rank_cores)), padded or replicated as engines do."""
        return self.rank_cores * _shard(n, self.tp * self.rank_cores)

    def add(self, kind, name, flops, rd, wr, shape=(), count=1.0, dtype=None, wbytes=0.0):
        if count > 0:
            self.out.append(Kernel(kind, name, float(flops), float(rd), float(wr), shape,
                                   dtype or self.dt.act_kernels, float(count), float(wbytes)))

    # ---- building blocks
    def gemm(self, name, M, N, K, count, groups=1, bias=False, w_bytes=None, dtype=None):
        wb = self.dt.w if w_bytes is None else w_bytes
        weights = groups * N * K * wb + (groups * N * 2 if bias else 0)
        rd = groups * M * K * self.dt.gemm_in + weights
        self.add("gemm", name, 2.0 * groups * M * N * K, rd, groups * M * N * self.dt.a, (M, N, K, groups),
                 count, dtype or self.dt.mma, weights)

    def ew(self, name, n, reads, count, writes=1, flops_per=1.0, kind="elementwise", cols=None):
        """An elementwise kernel over n elements reading `reads` and writing `writes` tensors of n."""
        a = self.dt.a
        self.add(kind, name, flops_per * n, reads * n * a, writes * n * a, (n // (cols or n) if cols else 1, cols or n), count)

    def norm(self, name, rows, cols, count, residual=False):
        a = self.dt.a
        rd, wr = (2 if residual else 1) * rows * cols * a + cols * 2, (2 if residual else 1) * rows * cols * a
        # a tuned engine's norm kernel (fused with the residual add) keeps a whole row in registers
        kind = "fused_norm" if self.impl == "fused" else "norm"
        self.add(kind, name, 4.0 * rows * cols, rd, wr, (rows, cols), count)

    def comm(self, name, nbytes, n, count, kind="allreduce", messages=0.0):
        """A collective of `nbytes` among `n` chips; `messages`: the messages one chip sends (an
        all-to-all sends one to each peer its tokens route to; the stack's comm_message_s each)."""
        if n > 1:
            self.add("comm", name, 0.0, nbytes, nbytes, (float(nbytes), n, kind, float(messages)), count)


def build_step(spec: ModelSpec, batch: Batch, dtypes: Dtypes = Dtypes(), impl: str = "fused",
               tp: int = 1, ep: int = 1, moe_skew: float = 0.0, rank_cores: int = 1,
               dense_moe: bool = False) -> list[Kernel]:
    """All kernels of one forward step of `batch` through `spec` on one of `tp` x `ep` chips.

    `moe_skew`: expert popularity follows a Zipf law with this exponent (0 = uniform routing).
    `rank_cores`: each chip's cores are this many tensor-parallel ranks (a stack that shards over
    cores, as Neuron does over NeuronCores: KV heads then replicate per core, not per chip).
    `dense_moe`: the routed experts run every token, weighted by zero where it was not routed (a
    stack's `moe = "dense"`)."""
    if impl not in IMPLEMENTATIONS:
        raise TapeoutError(f"implementation {impl!r}: use one of {', '.join(IMPLEMENTATIONS)}")
    if batch.tokens <= 0:
        raise TapeoutError("empty batch: no tokens to run")
    if not moe_skew >= 0:
        raise TapeoutError(f"moe_skew {moe_skew}: must be >= 0 (0 is uniform routing)")
    spec.check_parallel(tp, ep)
    b = _Builder(spec, batch, dtypes, impl, tp, ep, moe_skew=moe_skew, rank_cores=rank_cores, dense_moe=dense_moe)
    T = batch.tokens
    b.add("embed", "embedding", 0, T * spec.hidden * b.dt.a + T * 8, T * spec.hidden * b.dt.a, (T, spec.hidden))
    for count, moe_layer in _layer_groups(spec):
        _layer(b, count, moe_layer)
    _head(b)
    return b.out


def _layer_groups(spec: ModelSpec) -> list[tuple[int, bool]]:
    if spec.moe is None:
        return [(spec.layers, False)]
    d = min(spec.moe.dense_layers, spec.layers)
    return [(d, False), (spec.layers - d, True)]


def _shard(n: int, tp: int) -> int:
    return max(1, -(-n // tp))


def _layer(b: _Builder, L: int, moe_layer: bool) -> None:
    if L <= 0:
        return
    s, T, h, fused = b.spec, b.batch.tokens, b.spec.hidden, b.impl == "fused"
    b.norm("attn_norm", T, h, L, residual=fused)
    (_mla if s.mla else _attention)(b, L)
    if not fused:
        b.ew("residual_add", T * h, 2, L, cols=h)
    b.norm("mlp_norm", T, h, L, residual=fused)
    (_moe if moe_layer else _mlp)(b, L)
    if not fused:
        b.ew("residual_add", T * h, 2, L, cols=h)


def _attention(b: _Builder, L: int) -> None:
    s, T, h, fused = b.spec, b.batch.tokens, b.spec.hidden, b.impl == "fused"
    hq, hkv, d = b.heads(s.heads), b.heads(s.kv_heads), s.head_dim
    b.gemm("qkv_proj", T, (hq + 2 * hkv) * d, h, L, bias=s.qkv_bias)
    if s.qk_norm:
        b.norm("qk_norm", T * (hq + hkv), d, L)
    if fused:  # RoPE on q and k and the KV-cache write in one kernel
        n = T * (hq + 2 * hkv) * d
        b.add("elementwise", "rope_kv_write", 6 * T * (hq + hkv) * d, n * b.dt.a,
              T * hq * d * b.dt.a + 2 * T * hkv * d * b.dt.kvb, (T, (hq + 2 * hkv) * d), L)
    else:
        _rope_unfused(b, L, hq, hkv, d)
        if b.batch.decode:
            b.add("elementwise", "kv_cache_write", 0, 2 * T * hkv * d * b.dt.a, 2 * T * hkv * d * b.dt.kvb,
                  (T, hkv * d), 2 * L)
    _attn_kernels(b, L, hq, hkv, d, d)
    if not fused and any(n > 1 for n, _ in b.batch.prefill):
        b.ew("attn_out_transpose", T * hq * d, 1, L, cols=hq * d)
    b.gemm("o_proj", T, h, hq * d, L)
    b.comm("allreduce_attn", T * h * b.dt.a, b.tp, L)


def _rope_unfused(b: _Builder, L: int, hq: int, hkv: int, d: int) -> None:
    """RoPE as measure_gpu.py writes it: ~10 small kernels for cos/sin, 6 half-width ops and a cat."""
    S = max([n for n, _ in b.batch.prefill] + [1])
    for heads in (hq, hkv):
        b.add("elementwise", "rope_freqs", 0, 4 * d, 4 * d, (1, d // 2), 4 * L, "fp32")          # arange, /d, pow, 1/x
        b.add("elementwise", "rope_angles", 2 * S * d, 8 * S * d, 8 * S * d, (S, d // 2), 6 * L, "fp32")  # float, mul, cos, sin, 2 casts
        half = b.batch.tokens * heads * d // 2
        b.ew("rope_mul", half, 1, 4 * L, cols=d // 2)       # x1*cos, x2*sin, x2*cos, x1*sin (cos/sin broadcast)
        b.ew("rope_addsub", half, 2, 2 * L, cols=d // 2)
        b.ew("rope_cat", 2 * half, 1, L, cols=d)


def _attn_kernels(b: _Builder, L: int, hq: int, hkv: int, dqk: int, dv: int, kv_elem_bytes: float | None = None,
                  latent: bool = False) -> None:
    """Prefill (flash, causal over cached + new) and decode (over the KV cache) attention kernels."""
    kvb = b.dt.kvb if kv_elem_bytes is None else kv_elem_bytes
    a = b.dt.a
    kv_heads_bytes = hkv * (dqk + (0 if latent else dv)) * kvb  # bytes of K and V per token
    for (n, cached), B in Counter(b.batch.prefill).items():  # one kernel per distinct length, batched
        ctx = cached + n
        pairs = n * cached + n * (n + 1) / 2  # (query, key) pairs under the causal mask
        flops = 2.0 * B * hq * pairs * (dqk + dv)
        rd = B * (n * hq * dqk * a + ctx * kv_heads_bytes)
        b.add("attention", "attention_prefill", flops, rd, B * n * hq * dv * a, (B, n, ctx, hq, hkv, dqk, dv, True), L)
    if b.batch.decode:
        B = len(b.batch.decode)
        C = sum(b.batch.decode)
        flops = 2.0 * hq * (C + B) * (dqk + dv)
        rd = B * hq * dqk * a + (C + B) * kv_heads_bytes
        b.add("attention", "attention_decode", flops, rd, B * hq * dv * a, (B, 1, C / B + 1, hq, hkv, dqk, dv, False), L)


def _mlp(b: _Builder, L: int, inter: int | None = None, name: str = "mlp") -> None:
    s, T, h = b.spec, b.batch.tokens, b.spec.hidden
    inter = _shard(inter or (s.moe.dense_intermediate if s.moe and s.moe.dense_intermediate else s.intermediate), b.tp)
    b.gemm(f"{name}_gate_up", T, 2 * inter, h, L)
    if b.impl == "fused":
        b.ew("silu_mul", T * inter, 2, L, flops_per=5, cols=inter)
    else:
        b.ew("silu", T * inter, 1, L, flops_per=4, cols=inter)
        b.ew("mul", T * inter, 2, L, cols=inter)
    b.gemm(f"{name}_down", T, h, inter, L)
    b.comm("allreduce_mlp", T * h * b.dt.a, b.tp, L)


def _moe(b: _Builder, L: int) -> None:
    """Routed experts (uniform routing by default) plus shared experts.

    With expert parallelism each of `ep` chips holds E/ep experts and, as every chip runs a batch of
    the same size, receives T x top_k token-expert pairs on average (all-to-all dispatch/combine)."""
    m, T, h = b.spec.moe, b.batch.tokens, b.spec.hidden
    b.gemm("router", T, m.experts, h, L, w_bytes=2.0, dtype="bf16" if b.dt.mma in ("fp8", "int8") else b.dt.mma)
    b.ew("topk_route", T * m.experts, 1, L, flops_per=4, writes=0)
    pairs, active = ((T * m.experts / b.ep, m.experts / b.ep) if b.dense_moe else
                     _expert_load(m.experts, m.top_k, T, b.ep, b.moe_skew))
    per_expert = pairs / max(active, 1e-9)
    inter = _shard(m.intermediate, b.tp)
    disp = T * m.top_k * h * b.dt.a * (b.ep - 1) / b.ep
    peers = _peers(T * m.top_k, b.ep)
    b.comm("alltoall_dispatch", disp, b.ep, L, kind="alltoall", messages=peers)
    for name, N, K in (("expert_gate_up", 2 * inter, h), ("expert_down", h, inter)):
        w = active * N * K * b.dt.w
        b.add("gemm", name, 2.0 * pairs * N * K, pairs * K * b.dt.gemm_in + w, pairs * N * b.dt.a,
              (per_expert, N, K, active), L, b.dt.mma, w)
        if name == "expert_gate_up":
            b.ew("expert_silu_mul", pairs * inter, 2, L, flops_per=5, cols=inter)
    b.ew("moe_combine", pairs * h, 1, L, writes=T / pairs if b.dense_moe else 1.0 / m.top_k, cols=h)
    b.comm("alltoall_combine", disp, b.ep, L, kind="alltoall", messages=peers)
    # tensor parallelism shards each expert's intermediate dim, so the partial outputs all-reduce: once
    # per layer (with shared experts, their all-reduce carries the sum), or, run dense, once per
    # expert (DeepSpeed AutoTP makes each expert's down projection a LinearAllreduce)
    per_layer = m.experts / b.ep if b.dense_moe else (0 if m.shared_experts else 1)
    b.comm("allreduce_moe", T * h * b.dt.a, b.tp, L * per_layer)
    if m.shared_experts:
        _mlp(b, L, m.shared_intermediate * m.shared_experts, "shared_expert")


def _peers(pairs: float, ep: int) -> float:
    """Expected distinct other chips that `pairs` token-expert pairs, each on one of `ep` chips at
    random, reach: the messages of one all-to-all from this chip (ep - 1 once the batch is large)."""
    return (ep - 1) * (1.0 - (1.0 - 1.0 / ep) ** pairs) if ep > 1 else 0.0


def _expert_load(E: int, k: int, T: int, ep: int, skew: float) -> tuple[float, float]:
    """(token-expert pairs, experts hit by >= 1 token) on the busiest of `ep` chips.

    Expert i is picked by a token with probability q_i = min(1, c (i + 1)^-skew), c such that the
    q_i sum to k (each token picks k distinct experts; uniform at skew 0); chip j holds experts
    j, j + ep, ... (round robin by popularity). Every chip runs T tokens."""
    if skew == 0:
        return T * k, E / ep * (1.0 - (1.0 - k / E) ** (T * ep))
    w = [(i + 1) ** -skew for i in range(E)]
    lo, hi = 0.0, float(E) ** skew * k
    for _ in range(60):  # water-filling: the most popular experts saturate at probability 1
        c = (lo + hi) / 2
        lo, hi = (c, hi) if sum(min(1.0, c * x) for x in w) < k else (lo, c)
    q = [min(1.0, hi * x) for x in w]
    loads = [sum(q[j::ep]) for j in range(ep)]
    j = max(range(ep), key=loads.__getitem__)
    pairs = T * ep * loads[j]
    active = sum(1.0 - (1.0 - x) ** (T * ep) for x in q[j::ep])
    return pairs, active


def _mla(b: _Builder, L: int) -> None:
    """DeepSeek MLA: low-rank q and kv projections; the cache holds the kv latent plus the rope key.

    Decode absorbs the up-projections into the query and output (attention over the latent, like
    FlashMLA); prefill expands the latent into per-head keys and values (standard attention)."""
    s, a, T, h = b.spec, b.spec.mla, b.batch.tokens, b.spec.hidden
    H = _shard(s.heads, b.tp)
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    if a.q_lora_rank:
        b.gemm("q_a_proj", T, a.q_lora_rank, h, L)
        b.norm("q_a_norm", T, a.q_lora_rank, L)
        b.gemm("q_b_proj", T, H * qk, a.q_lora_rank, L)
    else:
        b.gemm("q_proj", T, H * qk, h, L)
    b.gemm("kv_a_proj", T, a.kv_lora_rank + a.qk_rope_head_dim, h, L)
    b.norm("kv_a_norm", T, a.kv_lora_rank, L)
    latent = a.kv_lora_rank + a.qk_rope_head_dim
    b.add("elementwise", "rope_kv_write", 6 * T * (H + 1) * a.qk_rope_head_dim, T * (H * qk + latent) * b.dt.a,
          T * latent * b.dt.kvb, (T, latent), L)
    if b.batch.prefill:
        pre = _Builder(s, Batch(prefill=b.batch.prefill), b.dt, b.impl, b.tp, b.ep, b.out)
        ctx = sum(c + n for n, c in b.batch.prefill)
        pre.gemm("kv_b_proj", ctx, H * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank, L)
        _attn_kernels(pre, L, H, H, qk, a.v_head_dim, kv_elem_bytes=b.dt.a)
    if b.batch.decode:
        B = len(b.batch.decode)
        dec = _Builder(s, Batch(decode=b.batch.decode), b.dt, b.impl, b.tp, b.ep, b.out)
        dec.gemm("q_absorb", B, a.kv_lora_rank, a.qk_nope_head_dim, L, groups=H)
        _attn_kernels(dec, L, H, 1, latent, a.kv_lora_rank, latent=True)
        dec.gemm("o_absorb", B, a.v_head_dim, a.kv_lora_rank, L, groups=H)
    b.gemm("o_proj", T, h, H * a.v_head_dim, L)
    b.comm("allreduce_attn", T * h * b.dt.a, b.tp, L)


def _head(b: _Builder) -> None:
    """Final norm, lm_head on each sequence's last position, and greedy sampling."""
    s = b.spec
    B = b.batch.sequences
    b.norm("final_norm", B, s.hidden, 1)
    vocab = _shard(s.vocab, b.tp)
    b.gemm("lm_head", B, vocab, s.hidden, 1)
    b.comm("allgather_logits", B * vocab * 4, b.tp, 1, kind="allgather")
    b.add("elementwise", "argmax", B * vocab, B * vocab * b.dt.a, B * 8, (B, vocab), 1)
