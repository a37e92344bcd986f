"""Generalized advantage estimation over response tokens, and masked whitening.

Time runs over the N response tokens of each row; ``mask`` (B, N) is 1 on the
tokens the policy emitted (up to and including its stop token) and 0 after.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``Σ m·x / Σ m`` (0 where nothing is valid)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_var(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Population variance ``Σ m·(x − μ)² / Σ m`` of the valid entries."""
    return masked_mean(jnp.square(x - masked_mean(x, mask)), mask)


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
    """``(x − μ) / sqrt(σ² + eps)`` over the valid entries (μ added back unless ``shift_mean``);
    0 outside the mask."""
    mean = masked_mean(x, mask)
    out = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask > 0, out, 0.0)


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array]:
    """``(advantages, returns)``, each (B, N), by a reverse ``lax.scan`` over tokens::

        δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t
        A_t = m_t·(δ_t + γλ·A_{t+1}),      A_N = 0
        R_t = m_t·(A_t + V_t)

    so the episode ends at the last valid token (its successor's value counts 0)
    and nothing flows back from padding. The paper: γ = 1, λ = 0.95.
    """
    mask = mask.astype(jnp.float32)
    values = values * mask
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = rewards + gamma * next_values - values

    def step(next_advantage, xs):
        delta, m = xs
        advantage = m * (delta + gamma * lam * next_advantage)
        return advantage, advantage

    _, advantages = jax.lax.scan(step, jnp.zeros(rewards.shape[:1]), (deltas.T, mask.T),
                                 reverse=True)
    advantages = advantages.T
    return advantages, mask * (advantages + values)


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
    """``1 − Var(R − V) / Var(R)`` over the valid tokens: 1 for a perfect value function."""
    return 1.0 - masked_var(returns - values, mask) / jnp.maximum(masked_var(returns, mask), 1e-8)
