"""LLM architectures from Hugging Face `config.json` files (shipped ones or the user's).

Only shapes are read; weights are never loaded and nothing is downloaded.

    >>> m = load_model("llama-3.1-8b")
    >>> m.layers, m.kv_heads, round(m.n_params / 1e9, 2)
    (32, 8, 8.03)
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import TapeoutError
from ..sourced import shipped_names


class ModelConfigError(TapeoutError):
    pass


@dataclass(frozen=True)
class Moe:
    experts: int              # routed experts
    top_k: int
    intermediate: int         # per routed expert
    shared_experts: int = 0
    shared_intermediate: int = 0   # per shared expert
    dense_layers: int = 0     # the first layers use a dense MLP instead (DeepSeek)
    dense_intermediate: int = 0


@dataclass(frozen=True)
class Mla:
    """DeepSeek multi-head latent attention."""
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    moe: Moe | None = None
    mla: Mla | None = None
    max_position: int = 0
    activation: str = "silu"  # of the gated MLP (SwiGLU: silu; GeGLU: gelu...); the same shapes either way
    norm_eps: float = 1e-6        # RMSNorm epsilon (HF LlamaConfig's default when the config omits it)
    rope_theta: float = 10000.0   # RoPE base (HF LlamaConfig's default when the config omits it)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_bytes: float = 2.0) -> float:
        """KV-cache bytes per token over all layers (MLA caches the latent plus the rope key)."""
        if self.mla:
            return self.layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim) * kv_bytes
        return self.layers * 2 * self.kv_dim * kv_bytes

    def attn_params(self) -> int:
        h = self.hidden
        if self.mla:
            a = self.mla
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            q = h * a.q_lora_rank + a.q_lora_rank * self.heads * qk if a.q_lora_rank else h * self.heads * qk
            kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * self.heads * (a.qk_nope_head_dim + a.v_head_dim)
            return q + kv + self.heads * a.v_head_dim * h
        p = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        return p + ((self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0)

    def mlp_params(self, layer: int) -> tuple[int, int]:
        """(total, active per token) MLP parameters of `layer`."""
        h = self.hidden
        m = self.moe
        if m is None or layer < m.dense_layers:
            inter = m.dense_intermediate if m and layer < m.dense_layers else self.intermediate
            return 3 * h * inter, 3 * h * inter
        shared = 3 * h * m.shared_intermediate * m.shared_experts
        router = h * m.experts
        return (m.experts * 3 * h * m.intermediate + shared + router,
                m.top_k * 3 * h * m.intermediate + shared + router)

    def check_parallel(self, tp: int = 1, ep: int = 1, strict: bool = False) -> None:
        """Raise unless `tp` chips can split the attention heads and `ep` the experts. Engines pad heads
        to a multiple of tp (Neuron shards 32 heads over 24 cores) and place redundant experts (EP over
        160 chips of 256 experts), so the model only needs tp <= heads and ep <= experts; `strict` (the
        CLI's check of what a user types) also wants tp to divide the heads and divide or be a multiple
        of the KV heads, and ep to divide the experts."""
        for what, n in (("tp", tp), ("ep", ep)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ModelConfigError(f"{self.name}: {what} must be a whole number >= 1, got {n!r}")
        if tp > self.heads:
            raise ModelConfigError(f"{self.name}: tensor parallelism tp={tp} exceeds its {self.heads} attention heads")
        if ep > 1 and (self.moe is None or ep > self.moe.experts):
            raise ModelConfigError(f"{self.name}: expert parallelism ep={ep} needs an MoE model with at least ep experts"
                                   + (f" ({self.moe.experts} experts)" if self.moe else " (this one is dense)"))
        if not strict:
            return
        if self.heads % tp:
            raise ModelConfigError(f"{self.name}: tensor parallelism tp={tp} does not divide its {self.heads} attention heads")
        if not self.mla and self.kv_heads % tp and tp % self.kv_heads:
            raise ModelConfigError(f"{self.name}: tensor parallelism tp={tp} neither divides nor is a multiple of its "
                                   f"{self.kv_heads} KV heads")
        if ep > 1 and self.moe.experts % ep:
            raise ModelConfigError(f"{self.name}: expert parallelism ep={ep} does not divide its {self.moe.experts} experts")

    @property
    def n_params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return emb + sum(self.attn_params() + self.mlp_params(i)[0] for i in range(self.layers))

    @property
    def n_active_params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return emb + sum(self.attn_params() + self.mlp_params(i)[1] for i in range(self.layers))


# model types whose Hugging Face config class ties the input and output embeddings unless the
# config.json says otherwise (GemmaConfig.tie_word_embeddings defaults to True; Llama's, Qwen's to False)
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3_text"})


def _get(cfg: dict, src: str, *keys, default=None, required=True):
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if required and default is None:
        raise ModelConfigError(f"{src}: missing '{keys[0]}' in config.json")
    return default


def spec_from_config(cfg: dict, name: str, src: str = "<config>") -> ModelSpec:
    """A ModelSpec from a Hugging Face config dict (Llama, Mistral, Gemma, Qwen2/3, Qwen3-MoE, Mixtral,
    DeepSeek-V3). Gemma's `hidden_activation` (its GeGLU's tanh-approximate GELU) takes precedence over
    `hidden_act`, as in transformers' GemmaConfig."""
    if "text_config" in cfg:  # multimodal wrappers
        cfg = {**cfg, **cfg["text_config"]}
    g = lambda *k, **kw: _get(cfg, src, *k, **kw)
    h, heads = int(g("hidden_size", "n_embd", "d_model")), int(g("num_attention_heads", "n_head"))
    mt = str(cfg.get("model_type", ""))
    moe = mla = None
    if "n_routed_experts" in cfg or "num_experts" in cfg or "num_local_experts" in cfg:
        experts = int(g("n_routed_experts", "num_experts", "num_local_experts"))
        inter = int(g("moe_intermediate_size", "intermediate_size"))
        shared = int(cfg.get("n_shared_experts") or 0)
        shared_inter = int(cfg.get("shared_expert_intermediate_size") or (inter if shared else 0))
        if cfg.get("shared_expert_intermediate_size") and not shared:
            shared = 1
        moe = Moe(experts, int(g("num_experts_per_tok", "top_k")), inter, shared, shared_inter,
                  int(cfg.get("first_k_dense_replace") or 0), int(cfg.get("intermediate_size") or 0))
    if cfg.get("kv_lora_rank"):
        mla = Mla(int(cfg.get("q_lora_rank") or 0), int(cfg["kv_lora_rank"]), int(g("qk_nope_head_dim")),
                  int(g("qk_rope_head_dim")), int(g("v_head_dim")))
    head_dim = int(cfg.get("head_dim") or (mla.v_head_dim if mla else h // heads))
    tied = cfg.get("tie_word_embeddings")
    spec = ModelSpec(
        name=name, hidden=h, layers=int(g("num_hidden_layers", "n_layer")), heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=head_dim,
        intermediate=int(g("intermediate_size", "n_inner", default=4 * h, required=False)),
        vocab=int(g("vocab_size")), tied_embeddings=bool(mt in _TIED_BY_DEFAULT if tied is None else tied),
        qkv_bias=bool(cfg.get("attention_bias", mt == "qwen2" or mt == "qwen2_moe")),
        qk_norm=mt.startswith("qwen3"), moe=moe, mla=mla,
        max_position=int(cfg.get("max_position_embeddings") or 0),
        activation=str(cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu"),
        norm_eps=float(cfg.get("rms_norm_eps") or ModelSpec.norm_eps),
        rope_theta=float(cfg.get("rope_theta") or ModelSpec.rope_theta))
    for field in ("hidden", "layers", "heads", "kv_heads", "head_dim", "vocab"):
        if getattr(spec, field) <= 0:
            raise ModelConfigError(f"{src}: {field} must be positive")
    if spec.heads % spec.kv_heads:
        raise ModelConfigError(f"{src}: num_attention_heads {spec.heads} is not a multiple of num_key_value_heads {spec.kv_heads}")
    return spec


def model_names() -> list[str]:
    """Names of the model configs shipped with tapeout."""
    return list(shipped_names("tapeout.models", ".json"))


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> ModelSpec:
    text = (resources.files("tapeout.models") / f"{name}.json").read_text()
    return spec_from_config(json.loads(text), name, f"models/{name}.json")


def load_model(spec: "str | Path | ModelSpec") -> ModelSpec:
    """A model from a shipped name, a config.json path, or a local HF model folder."""
    if isinstance(spec, ModelSpec):
        return spec
    s = str(spec)
    if s in shipped_names("tapeout.models", ".json"):
        return _load_shipped(s)
    p = Path(s)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        try:
            cfg = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelConfigError(f"{p}: not a valid config.json: {e}") from None
        if not isinstance(cfg, dict):
            raise ModelConfigError(f"{p}: not a config.json object")
        return spec_from_config(cfg, p.parent.name if p.name == "config.json" else p.stem, str(p))
    hint = difflib.get_close_matches(s, model_names(), n=1)
    raise ModelConfigError(f"{s}: not a shipped model or a config.json path"
                           + (f" (did you mean '{hint[0]}'?)" if hint else "")
                           + f"; shipped: {', '.join(model_names())}")
