"""The frozen, validated description of a decoder-only transformer.

One dataclass covers the three families we support:

* **Llama** (and Qwen2): RMSNorm, rotary positions, SwiGLU MLP, grouped-query
  attention, optional q/k/v bias (Qwen2), tied or untied embeddings, optional
  Llama-3 rope scaling.
* **GPT-NeoX / Pythia**: LayerNorm, partial rotary (``rope_fraction``), parallel
  residual ``x + attn(ln1(x)) + mlp(ln2(x))``, biases, untied embeddings.
* **GPT-2**: learned absolute positions, LayerNorm, tanh-GELU MLP, biases, tied
  embeddings.

Configs in ``configs/`` are ``ml_collections`` dicts; they become a
``ModelConfig`` at the model boundary (``ModelConfig.from_dict``), where every
field is checked once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax.numpy as jnp

from rlhf_jax.models.attention import IMPLEMENTATIONS
from rlhf_jax.models.lora import LoraConfig

FAMILIES = ("llama", "qwen2", "gpt_neox", "gpt2")
NORMS = ("rmsnorm", "layernorm")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh")
POSITION_KINDS = ("rope", "learned")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama-3.1 frequency scaling of rotary embeddings (``rope_type: llama3``).

    Wavelengths ``λ = 2π/ω`` longer than ``original_max_len / low_freq_factor``
    are divided by ``factor``; those shorter than
    ``original_max_len / high_freq_factor`` are kept; in between the inverse
    frequency is interpolated with ``s = (original_max_len/λ − low) / (high − low)``:
    ``ω' = (1 − s)·ω/factor + s·ω``.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_len: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes, architecture switches and numerics of a decoder-only LM."""

    family: str  # weight naming for import/export: one of FAMILIES
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int  # < n_heads: grouped-query attention
    head_dim: int
    mlp_dim: int
    max_seq_len: int  # rows of the learned position table; rope cache size
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    activation: str = "silu"
    gated_mlp: bool = True  # act(x W_gate) * (x W_up), then W_down
    position: str = "rope"
    rope_base: float = 10000.0
    rope_fraction: float = 1.0  # share of each head's dims that rotate (NeoX)
    rope_scaling: Optional[Llama3RopeScaling] = None
    parallel_residual: bool = False
    tie_embeddings: bool = False
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False  # LayerNorm has a bias; RMSNorm never
    dropout_rate: float = 0.0  # residual dropout after each sublayer
    dtype: str = "float32"  # compute dtype of matmul inputs (accumulation is float32)
    param_dtype: str = "float32"  # master weights
    remat_policy: str = "none"
    scan_layers: bool = True  # one nn.scan over stacked layers; False: a Python loop (decoding)
    scan_unroll: int = 1  # layers per iteration of the scan's loop (0 or n_layers: no loop at all)
    # causal self-attention by query blocks of this many tokens, skipping the keys above the
    # diagonal blocks (0: one block; rlhf_jax/models/attention.py)
    attention_block: int = 64
    attention: str = "xla"  # or "cudnn": cuDNN flash attention (NVIDIA GPU, bf16/fp16 dtype)
    # matmuls of 2–64 rows as (W·xᵀ)ᵀ, the weight as left operand (models/matmul.py):
    # faster on XLA:CPU; the sampler sets it there for its decode steps
    weights_left: bool = False
    lora: LoraConfig = LoraConfig()  # low-rank adapters (rank 0: none); not part of the weights' file

    def __post_init__(self):
        def need(ok: bool, field: str, why: str):
            if not ok:
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {why}")

        need(self.family in FAMILIES, "family", f"must be one of {FAMILIES}")
        for f in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                  "mlp_dim", "max_seq_len"):
            need(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f,
                 "must be a positive integer")
        need(self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
             f"must divide n_heads={self.n_heads}")
        need(self.norm in NORMS, "norm", f"must be one of {NORMS}")
        need(self.norm_eps > 0, "norm_eps", "must be positive")
        need(self.activation in ACTIVATIONS, "activation", f"must be one of {ACTIVATIONS}")
        need(self.position in POSITION_KINDS, "position", f"must be one of {POSITION_KINDS}")
        need(0 < self.rope_fraction <= 1, "rope_fraction", "must be in (0, 1]")
        need(self.rotary_dim % 2 == 0, "rope_fraction",
             f"head_dim*rope_fraction={self.head_dim * self.rope_fraction} must be an even integer")
        need(self.rope_base > 0, "rope_base", "must be positive")
        need(not (self.norm == "rmsnorm" and self.norm_bias), "norm_bias",
             "RMSNorm has no bias")
        need(0 <= self.dropout_rate < 1, "dropout_rate", "must be in [0, 1)")
        need(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}")
        need(self.param_dtype in DTYPES, "param_dtype", f"must be one of {DTYPES}")
        need(isinstance(self.scan_unroll, int) and self.scan_unroll >= 0, "scan_unroll",
             "must be a non-negative integer (0: all layers, no loop)")
        need(isinstance(self.attention_block, int) and self.attention_block >= 0,
             "attention_block", "must be a non-negative integer (0: one block)")
        need(self.attention in IMPLEMENTATIONS, "attention", f"must be one of {IMPLEMENTATIONS}")
        need(self.attention != "cudnn" or self.dtype in ("bfloat16", "float16"), "attention",
             f"cuDNN attention needs a bfloat16 or float16 dtype, not {self.dtype!r}")
        need(self.remat_policy in REMAT_POLICIES, "remat_policy",
             f"must be one of {REMAT_POLICIES}")
        need(not (self.tie_embeddings and "lm_head" in self.lora.targets and self.lora.rank),
             "lora", "tied embeddings have no lm_head: the 'embed' target adapts the LM head too")

    @property
    def rotary_dim(self) -> int:
        """Number of rotated dimensions per head (all of them unless NeoX-style partial)."""
        return int(round(self.head_dim * self.rope_fraction))

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Builds a config from a plain or ``ml_collections`` mapping; unknown keys are errors."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        if d.get("rope_scaling") is not None and not isinstance(d["rope_scaling"],
                                                                Llama3RopeScaling):
            d["rope_scaling"] = Llama3RopeScaling(**dict(d["rope_scaling"]))
        if d.get("lora") is not None and not isinstance(d["lora"], LoraConfig):
            d["lora"] = LoraConfig(**dict(d["lora"]))
        return cls(**d)

    def num_params(self) -> int:
        """Parameter count (embeddings included, tied ones counted once)."""
        d, h = self.d_model, self.head_dim
        attn = d * h * (2 * self.n_heads + 2 * self.n_kv_heads)
        if self.qkv_bias:
            attn += h * (self.n_heads + 2 * self.n_kv_heads)
        if self.attn_out_bias:
            attn += d
        mlp = d * self.mlp_dim * (3 if self.gated_mlp else 2)
        if self.mlp_bias:
            mlp += self.mlp_dim * (2 if self.gated_mlp else 1) + d
        norm = d * (2 if self.norm_bias else 1)
        layer = attn + mlp + 2 * norm
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        if self.position == "learned":
            emb += self.max_seq_len * d
        return self.n_layers * layer + emb + norm

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token: 2·(matmul params) + attention scores and mixing.

        Embedding lookups are free; the LM head counts. Attention adds
        ``2·2·n_layers·seq_len·n_heads·head_dim`` per token (QKᵀ and AV over the
        full, unmasked length, as in the PaLM MFU convention).
        """
        d, h = self.d_model, self.head_dim
        per_layer = d * h * (2 * self.n_heads + 2 * self.n_kv_heads) + d * self.mlp_dim * (
            3 if self.gated_mlp else 2)
        matmul_params = self.n_layers * per_layer + self.vocab_size * d
        attention = 2 * self.n_layers * seq_len * self.n_heads * h
        return 2.0 * matmul_params + 2.0 * attention
