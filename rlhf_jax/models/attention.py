"""Grouped-query attention ``softmax(QKᵀ/√H + mask)·V`` with a memory-lean backward pass.

Shapes: B batch, T queries, S keys, N query heads, K key/value heads, G = N/K,
H head dim. Scores, softmax and accumulation run in float32; matmul inputs in
the compute dtype.

Forward, per query row t (masked scores set to the float32 minimum)::

    s = q·kᵀ/√H,  m = max_s s,  e = exp(s − m),  ℓ = Σ_s e,  o = (e·V)/ℓ

Only q, k, v, o, m and ℓ (the last two (B, K, G, T)) are kept for the backward pass,
never the (T, S) probabilities; the backward pass recomputes them (FlashAttention's
formulation, Dao 2023; m and ℓ kept apart, not as log-sum-exp m + log ℓ, which rounds
to m on a fully masked row where m is the float32 minimum)::

    p = exp(s − m)/ℓ,  dV = pᵀ·dO,  dP = dO·Vᵀ,  D = Σ_h dO ⊙ o,  dS = p ⊙ (dP − D),
    dQ = dS·K/√H,  dK = dSᵀ·Q/√H

D is a sum over the head dim (B, K, G, T), not over the (T, S) scores. With
``block`` > 0 (self-attention under a causal mask) query block i attends to the keys
0 … (i+1)·block − 1 only, the keys its mask can allow; each block's softmax still runs
over all of its keys at once, so the result is exact, and n blocks compute (n + 1)/(2n)
of the T × S scores. Blocks grow past ``block`` to keep n ≤ ``MAX_BLOCKS`` (8: 56% of the
scores), so that a long sequence does not become hundreds of small ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32
MASKED = jnp.finfo(F32).min
IMPLEMENTATIONS = ("xla", "cudnn")
MAX_BLOCKS = 8


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype,
                      block: int = 0, implementation: str = "xla") -> jax.Array:
    """q (B, T, N, H), k and v (B, K, S, H), mask (B, T, S) True where t may attend s;
    returns (B, T, N, H) in float32. ``block``: see the module docstring (needs T = S).

    ``implementation="cudnn"`` (causal self-attention, T = S, bf16 or fp16 ``dtype``, an
    NVIDIA GPU): ``jax.nn.dot_product_attention``'s cuDNN flash attention, causal, with
    the mask (padding, segments) as an additive bias; ``library_attention`` is that call.
    """
    if implementation == "cudnn":
        return library_attention(q, k, v, mask, dtype, "cudnn")
    b, t, n, h = q.shape
    k_heads, s = k.shape[1], k.shape[2]
    q = q.reshape(b, t, k_heads, n // k_heads, h).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, H)
    k, v = k.astype(dtype), v.astype(dtype)
    if block > 0:  # at most MAX_BLOCKS blocks: past that the saving is small, the ops many
        block = max(block, -(-t // MAX_BLOCKS))
    if block <= 0 or block >= t or t != s:
        out = _attention(q.astype(dtype), k, v, mask)
    else:
        ends = list(range(block, t, block)) + [t]
        out = jnp.concatenate(
            [_attention(q[:, :, :, a:e].astype(dtype), k[:, :, :e], v[:, :, :e], mask[:, a:e, :e])
             for a, e in zip([0] + ends[:-1], ends)], axis=3)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)  # (B, T, K, G, H) → (B, T, N, H)


def library_attention(q, k, v, mask, dtype, implementation: str) -> jax.Array:
    """``jax.nn.dot_product_attention`` on the same inputs (causal: T = S), float32 out."""
    k, v = (x.transpose(0, 2, 1, 3).astype(dtype) for x in (k, v))  # (B, S, K, H)
    out = jax.nn.dot_product_attention(q.astype(dtype), k, v, mask=mask[:, None], is_causal=True,
                                       implementation=implementation)
    return out.astype(F32)


def _scores(q, k, mask):
    """``s = q·kᵀ/√H`` (B, K, G, T, S) in float32, MASKED where the mask forbids."""
    s = jnp.einsum("BKGTH,BKSH->BKGTS", q, k, preferred_element_type=F32) * q.shape[-1] ** -0.5
    return jnp.where(mask[:, None, None], s, MASKED)


@jax.custom_vjp
def _attention(q, k, v, mask):
    """q (B, K, G, T, H), k and v (B, K, S, H) → o (B, K, G, T, H), float32."""
    return _forward(q, k, v, mask)[0]


def _forward(q, k, v, mask):
    s = _scores(q, k, mask)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.exp(s - m)
    denominator = jnp.sum(e, axis=-1)  # ℓ (B, K, G, T)
    out = jnp.einsum("BKGTS,BKSH->BKGTH", e.astype(q.dtype), v, preferred_element_type=F32)
    return out / denominator[..., None], m, denominator[..., None]


def _attention_fwd(q, k, v, mask):
    out, m, denominator = _forward(q, k, v, mask)
    return out, (q, k, v, mask, out, m, denominator)


def _attention_bwd(residuals, d_out):
    q, k, v, mask, out, m, denominator = residuals
    p = jnp.exp(_scores(q, k, mask) - m) / denominator  # the forward's probabilities
    d_v = jnp.einsum("BKGTS,BKGTH->BKSH", p.astype(q.dtype), d_out.astype(q.dtype),
                     preferred_element_type=F32)
    d_p = jnp.einsum("BKGTH,BKSH->BKGTS", d_out.astype(q.dtype), v, preferred_element_type=F32)
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # D (B, K, G, T, 1)
    d_s = (p * (d_p - delta) * q.shape[-1] ** -0.5).astype(q.dtype)
    d_q = jnp.einsum("BKGTS,BKSH->BKGTH", d_s, k, preferred_element_type=F32)
    d_k = jnp.einsum("BKGTS,BKGTH->BKSH", d_s, q, preferred_element_type=F32)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)
