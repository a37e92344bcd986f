"""Shared building blocks of the decoder: projections, norms, rotary positions, attention, MLP.

Numerics: parameters are stored in ``config.param_dtype``; matmul inputs are cast
to ``config.dtype`` and accumulate in float32 (``preferred_element_type``), norms
and softmax run in float32, and the residual stream is float32. Shapes are named
with single letters: B batch, T query length, S key length, D model width,
N query heads, K key/value heads, G = N/K query heads per kv head, H head dim,
F MLP width, V vocabulary.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.models.attention import grouped_attention
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.lora import a_init
from rlhf_jax.models.matmul import matmul
from rlhf_jax.parallel import axes as ax

F32 = jnp.float32
kernel_init = nn.initializers.normal(stddev=0.02)


Outputs = Union[tuple[int, int], jax.Array]


def take_positions(x: jax.Array, outputs: Optional[Outputs]) -> jax.Array:
    """``x`` (B, T, …) at the positions ``outputs`` along axis 1: a static ``(start, stop)``
    range, or a (B, P) array of each row's positions; ``None``: all of x."""
    if outputs is None:
        return x
    if isinstance(outputs, tuple):
        return x[:, outputs[0]:outputs[1]]
    return jnp.take_along_axis(x, outputs.reshape(outputs.shape + (1,) * (x.ndim - 2)), axis=1)


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
    """Sharding constraint by logical names (a no-op outside a mesh and rules context)."""
    return nn.with_logical_constraint(x, tuple(names))


class Dense(nn.Module):
    """``y = x·W + b``, contracting the last ``n_contract`` dims of x with the first of W.

    The kernel keeps its named dimensions (for example (D, N, H)) for sharding
    and is multiplied as one matrix (D, N·H), a free reshape, so the matmul never
    transposes weights. x and W are cast to the compute dtype; the product
    accumulates in float32. The bias (if any) has the kernel's output dims. If
    ``config.lora`` targets this module's name, ``(α/r)·(drop(x)·A)·B`` is added
    (``rlhf_jax.models.lora``).
    """

    config: ModelConfig
    shape: tuple[int, ...]
    names: tuple[str, ...]  # logical axis names of the kernel dimensions
    n_contract: int = 1
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kernel = self.param("kernel", nn.with_logical_partitioning(kernel_init, self.names),
                            self.shape, cfg.weights_dtype)
        batch_dims, out_dims = x.shape[:x.ndim - self.n_contract], self.shape[self.n_contract:]
        contract = math.prod(self.shape[:self.n_contract])
        x = x.reshape(*batch_dims, contract)
        y = matmul(x, kernel.reshape(contract, -1), cfg)
        if cfg.lora.adapts(self.name):
            y = y + self._adapter(x)
        y = y.reshape(*batch_dims, *out_dims)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(
                nn.initializers.zeros, self.names[self.n_contract:]), out_dims, cfg.weights_dtype)
            y = y + bias.astype(F32)
        return y

    def _adapter(self, x: jax.Array) -> jax.Array:
        """``(α/r)·(drop(x)·A)·B`` on the flattened input (…, K) → (…, N), float32."""
        cfg, lora, n = self.config, self.config.lora, self.n_contract
        a = self.param("lora_a", nn.with_logical_partitioning(
            a_init(n), self.names[:n] + (ax.LORA_RANK,)), self.shape[:n] + (lora.rank,), F32)
        b = self.param("lora_b", nn.with_logical_partitioning(
            nn.initializers.zeros, (ax.LORA_RANK,) + self.names[n:]),
            (lora.rank,) + self.shape[n:], F32)
        x = nn.Dropout(lora.dropout, deterministic=not self.has_rng("dropout"))(x)
        low = matmul(x, a.reshape(-1, lora.rank), cfg)  # (…, r)
        return lora.scale * matmul(low, b.reshape(lora.rank, -1), cfg)


class Norm(nn.Module):
    """RMSNorm ``x·rsqrt(mean(x²)+ε)·g`` or LayerNorm ``(x−μ)·rsqrt(σ²+ε)·g + b``, in float32."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        x = x.astype(F32)
        if cfg.norm == "layernorm":
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (ax.EMBED,)),
                           (cfg.d_model,), cfg.weights_dtype)
        y = y * scale.astype(F32)
        if cfg.norm_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (ax.EMBED,)),
                              (cfg.d_model,), cfg.weights_dtype)
            y = y + bias.astype(F32)
        return y


class Embed(nn.Module):
    """Token embedding table ``E`` (V, D); ``attend`` is the tied LM head ``h·Eᵀ``.

    With an ``embed`` adapter the table is ``E + (α/r)·A·B``, A (V, r), B (r, D),
    in the lookup and in ``attend`` alike, computed without forming ``A·B``.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(kernel_init, (ax.VOCAB, ax.EMBED)),
            (cfg.vocab_size, cfg.d_model), cfg.weights_dtype)
        lora = cfg.lora
        if lora.adapts("embed"):
            self.lora_a = self.param("lora_a", nn.with_logical_partitioning(
                a_init(1), (ax.VOCAB, ax.LORA_RANK)), (cfg.vocab_size, lora.rank), F32)
            self.lora_b = self.param("lora_b", nn.with_logical_partitioning(
                nn.initializers.zeros, (ax.LORA_RANK, ax.EMBED)), (lora.rank, cfg.d_model), F32)

    def __call__(self, ids: jax.Array) -> jax.Array:
        x = jnp.take(self.embedding, ids, axis=0).astype(F32)
        if self.config.lora.adapts("embed"):
            x = x + self.config.lora.scale * (jnp.take(self.lora_a, ids, axis=0) @ self.lora_b)
        return x

    def attend(self, h: jax.Array) -> jax.Array:
        cfg = self.config
        x, table = h.astype(cfg.compute_dtype), self.embedding.astype(cfg.compute_dtype)
        logits = matmul(x, table.T, cfg)
        if cfg.lora.adapts("embed"):
            low = jnp.einsum("BTD,RD->BTR", h, self.lora_b)
            logits = logits + cfg.lora.scale * jnp.einsum("BTR,VR->BTV", low, self.lora_a)
        return logits


def rope_inverse_frequencies(config: ModelConfig) -> jax.Array:
    """``ω_i = base^(−2i/r)`` for i < r/2, r the rotary dim; Llama-3 scaling if configured."""
    r = config.rotary_dim
    inv_freq = 1.0 / (config.rope_base ** (jnp.arange(0, r, 2, dtype=F32) / r))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    wavelen = 2 * jnp.pi / inv_freq
    smooth = (s.original_max_len / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    interpolated = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    scaled = jnp.where(wavelen > s.original_max_len / s.low_freq_factor, inv_freq / s.factor,
                       interpolated)
    return jnp.where(wavelen < s.original_max_len / s.high_freq_factor, inv_freq, scaled)


def rope_tables(config: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin of ``positions·ω``, each (B, T, r), halves repeated (rotate-half layout)."""
    angles = positions.astype(F32)[..., None] * rope_inverse_frequencies(config)  # (B, T, r/2)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates the first r dims of each head: ``x·cos + rotate_half(x)·sin``; x is (B, T, N, H)."""
    r = cos.shape[-1]
    x = x.astype(F32)
    rot, rest = x[..., :r], x[..., r:]
    half = r // 2
    rotated = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    rot = rot * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return jnp.concatenate([rot, rest], axis=-1)


class Attention(nn.Module):
    """Causal grouped-query attention ``softmax(QKᵀ/√H + mask)·V`` with an optional KV cache.

    ``mask`` (B, T, S) is True where query t may attend key s. With a cache
    ``(k, v)`` of shape (B, K, S, H) the new keys and values are written at
    slot ``cache_index`` and attention runs over all S slots. ``outputs`` (see
    ``take_positions``): keys and values from every position, queries (and the
    output) at those positions only.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, rope, mask, layer_cache=None, cache_index=None,
                 outputs: Optional[Outputs] = None):
        cfg = self.config
        n, k_heads, h, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model

        def project(name, heads, names, inputs):
            return Dense(cfg, (d, heads, h), (ax.EMBED, names, ax.HEAD_DIM),  # (B, T, ·, H)
                         use_bias=cfg.qkv_bias, name=name)(inputs)

        q = project("q", n, ax.HEADS, take_positions(x, outputs))
        k = project("k", k_heads, ax.KV_HEADS, x)
        v = project("v", k_heads, ax.KV_HEADS, x)
        if rope is not None:
            q = apply_rope(q, *(take_positions(table, outputs) for table in rope))
            k = apply_rope(k, *rope)
        q = constrain(q.astype(cfg.compute_dtype), (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_HEADS,
                                                     ax.ACT_HEAD_DIM))
        # Keys and values head-major, (B, K, T, H): the layout of the cache, so attention over
        # the cache reads it in place.
        kv_names = (ax.ACT_BATCH, ax.ACT_KV_HEADS, ax.ACT_LENGTH, ax.ACT_HEAD_DIM)
        k = constrain(k.astype(cfg.compute_dtype).transpose(0, 2, 1, 3), kv_names)
        v = constrain(v.astype(cfg.compute_dtype).transpose(0, 2, 1, 3), kv_names)
        new_cache = None
        if layer_cache is not None:
            cache_k, cache_v = layer_cache
            start = (0, 0, cache_index, 0)
            k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
            v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
            new_cache = (k, v)
        if layer_cache is None and outputs is None:  # self-attention over the sequence, causal
            out = grouped_attention(q, k, v, mask, cfg.compute_dtype, cfg.attention_block,
                                    cfg.attention)
        else:
            out = grouped_attention(q, k, v, take_positions(mask, outputs), cfg.compute_dtype)
        out = constrain(out, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_HEADS, ax.ACT_HEAD_DIM))
        out = Dense(cfg, (n, h, d), (ax.HEADS, ax.HEAD_DIM, ax.EMBED),  # (B, T, N, H) -> (B, T, D)
                    n_contract=2, use_bias=cfg.attn_out_bias, name="o")(out)
        return out, new_cache


class Mlp(nn.Module):
    """``W_down·(act(x W_gate) ⊙ x W_up)`` when gated (SwiGLU), else ``W_down·act(x W_up)``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        d, f = cfg.d_model, cfg.mlp_dim

        def dense(name, shape, names):
            return Dense(cfg, shape, names, use_bias=cfg.mlp_bias, name=name)

        up = dense("up", (d, f), (ax.EMBED, ax.MLP))(x)  # (B, T, F)
        if cfg.activation == "silu":
            act = jax.nn.silu
        else:
            act = lambda y: jax.nn.gelu(y, approximate=cfg.activation == "gelu_tanh")  # noqa: E731
        if cfg.gated_mlp:
            hidden = act(dense("gate", (d, f), (ax.EMBED, ax.MLP))(x)) * up
        else:
            hidden = act(up)
        hidden = constrain(hidden.astype(cfg.compute_dtype),
                           (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_MLP))
        return dense("down", (f, d), (ax.MLP, ax.EMBED))(hidden)  # (B, T, D)
