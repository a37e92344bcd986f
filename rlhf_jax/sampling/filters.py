"""Next-token distributions: temperature, top-k and nucleus (top-p) filtering, and one draw.

All functions act on float32 logits (..., V) and return logits in which
filtered-out tokens are ``-inf``, so ``log_softmax`` of the result is the
log-probability under the distribution actually sampled from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.sampling.config import SamplingConfig


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the k largest logits (ties with the k-th are kept too)."""
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Keeps the smallest most-likely set whose probability reaches p.

    With tokens sorted by probability ``π_(1) ≥ π_(2) ≥ …``, token (i) is kept
    iff ``Σ_{j<i} π_(j) < p``: the mass strictly before it has not yet reached p.
    The most likely token is always kept.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    order = jnp.argsort(-logits, axis=-1)
    sorted_probs = jnp.take_along_axis(probs, order, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep_sorted = keep_sorted.at[..., 0].set(True)
    keep = jnp.zeros_like(keep_sorted).at[
        tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def sampling_logits(logits: jax.Array, config: SamplingConfig) -> jax.Array:
    """Raw logits → the logits of the distribution tokens are drawn from (not used when greedy)."""
    logits = logits.astype(jnp.float32) / config.temperature
    if config.top_k:
        logits = top_k_filter(logits, min(config.top_k, logits.shape[-1]))
    if config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    return logits


def draw(logits: jax.Array, rng: jax.Array, config: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """One token per row and its log-probability under the sampling distribution.

    Greedy decoding takes the argmax; its sampling distribution is a point mass,
    so the reported log-probability is 0.
    """
    if config.greedy:
        token = jnp.argmax(logits, axis=-1)
        return token, jnp.zeros(token.shape, jnp.float32)
    filtered = sampling_logits(logits, config)
    logp_all = jax.nn.log_softmax(filtered, axis=-1)
    token = inverse_cdf_sample(jnp.exp(logp_all), rng)
    return token, jnp.take_along_axis(logp_all, token[..., None], -1)[..., 0]


def inverse_cdf_sample(probs: jax.Array, rng: jax.Array) -> jax.Array:
    """Index i with ``F(i−1) ≤ u·F(V) < F(i)``, F the cumulative sum, u ~ U[0, 1) per row.

    One uniform number per row instead of one Gumbel per vocabulary entry
    (``jax.random.categorical``), which at a 49k vocabulary dominates a decode
    step on CPU. Zero-probability tokens are never drawn: F is flat there.
    """
    cdf = jnp.cumsum(probs, axis=-1)
    u = jax.random.uniform(rng, probs.shape[:-1] + (1,), jnp.float32) * cdf[..., -1:]
    return jnp.minimum(jnp.sum(cdf <= u, axis=-1), probs.shape[-1] - 1)
