"""PPO's clipped objectives (Schulman et al. 2017), as sums over valid tokens.

With ``ρ_t = exp(log π(y_t) − log π_old(y_t))`` and advantages ``A_t``::

    policy:  ℓ_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε))
    value:   ℓ_t = ½·max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_V, ε_V) − R_t)²)

Every function returns sums over the tokens where ``mask`` is 1, each token
counted with its ``weights`` (default: the mask; ``m_t / L`` for a per-response
mean over a response's L tokens), and leaves the division to the caller, so
minibatch and microbatch accumulation stay exact.
Metric sums: ``clipped`` (tokens where the clipped branch is active),
``approx_kl`` (k3 of π_old against π: ``ρ − 1 − log ρ``) and ``ratio_dev``
(``|ρ − 1|``, exactly 0 at the first minibatch of an iteration).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def policy_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                mask: jax.Array, clip_ratio: float = 0.2,
                weights: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """``(Σ w·ℓ_t, metric sums weighted alike)`` of the clipped surrogate, all inputs (B, N)."""
    mask = mask.astype(jnp.float32)
    weights = mask if weights is None else weights * mask
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = jnp.maximum(unclipped, clipped)
    return jnp.sum(loss * weights), dict(
        clipped=jnp.sum((clipped > unclipped) * weights),
        approx_kl=jnp.sum((jnp.expm1(log_ratio) - log_ratio) * weights),
        ratio_dev=jnp.sum(jnp.abs(ratio - 1.0) * weights))


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array,
               clip_range: float = 0.2,
               weights: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """``(Σ w·ℓ_t, {'value_clipped': weight where the clipped error is larger})``, inputs
    (B, N)."""
    mask = mask.astype(jnp.float32) if weights is None else weights * mask
    clipped_values = old_values + jnp.clip(values - old_values, -clip_range, clip_range)
    error = jnp.square(values - returns)
    clipped_error = jnp.square(clipped_values - returns)
    loss = 0.5 * jnp.maximum(error, clipped_error)
    return jnp.sum(loss * mask), dict(value_clipped=jnp.sum((clipped_error > error) * mask))
