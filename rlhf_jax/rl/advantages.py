"""Advantage estimators (GAE, RLOO, GRPO, REINFORCE++) and masked whitening.

Time runs over the N response tokens of each row; ``mask`` (B, N) is 1 on the
tokens the policy emitted (up to and including its stop token) and 0 after.

The critic-free estimators need no value function. RLOO and GRPO take one
return per episode, ``R = Σ_t m_t·r_t``, and compare it with the other samples
of its prompt: a batch is laid out prompt-major, rows [i·k, (i+1)·k) being the
k ≥ 2 samples of prompt i (as ``jnp.repeat(prompts, k, axis=0)`` makes them)::

    RLOO   A_i = R_i − 1/(k−1)·Σ_{j≠i} R_j = k/(k−1)·(R_i − mean_g R)
    GRPO   A_i = (R_i − mean_g R) / (std_g R + eps),   std with ddof = 1

and the episode's advantage is then given to each of its valid tokens.
REINFORCE++ works per token: the return-to-go ``G_t = Σ_{s≥t} γ^{s−t}·m_s·r_s``,
whitened over all valid tokens of the batch.
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


ESTIMATORS = ("gae", "rloo", "grpo", "reinforce_pp")
CRITIC_FREE = ("rloo", "grpo", "reinforce_pp")
GROUPED = ("rloo", "grpo")  # those needing k ≥ 2 samples per prompt


def sequence_returns(rewards: jax.Array, mask: jax.Array) -> jax.Array:
    """``R = Σ_t m_t·r_t`` (B,): the episode's total (KL-shaped) reward."""
    return jnp.sum(rewards * mask.astype(jnp.float32), axis=1)


def token_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """A per-episode advantage (B,) spread over its valid tokens (B, N); 0 elsewhere."""
    return jnp.where(mask > 0, advantages[:, None], 0.0).astype(jnp.float32)


def _centred(returns: jax.Array, k: int) -> jax.Array:
    """``R − mean_g R`` as (B/k, k), one row per prompt; the mean is taken after shifting by the
    group's first return, so a constant group is exactly 0 in float32."""
    if k < 2:
        raise ValueError(f"a group baseline needs k >= 2 samples per prompt, got k = {k}")
    if returns.shape[0] % k:
        raise ValueError(f"batch of {returns.shape[0]} episodes is not a multiple of k = {k}")
    groups = returns.astype(jnp.float32).reshape(-1, k)
    shifted = groups - groups[:, :1]
    return shifted - jnp.mean(shifted, axis=1, keepdims=True)


def rloo_advantages(returns: jax.Array, k: int) -> jax.Array:
    """REINFORCE Leave-One-Out, within each group of k::

        A_i = R_i − 1/(k−1)·Σ_{j≠i} R_j = k/(k−1)·(R_i − mean_g R)
    """
    return (_centred(returns, k) * (k / (k - 1))).reshape(-1)


def grpo_advantages(returns: jax.Array, k: int, eps: float = 1e-4) -> jax.Array:
    """GRPO: ``A_i = (R_i − mean_g R) / (std_g R + eps)``, std with ddof = 1 (as TRL); a
    constant group gets 0."""
    centred = _centred(returns, k)
    return (centred / (jnp.std(centred, axis=1, ddof=1, keepdims=True) + eps)).reshape(-1)


def reinforce_pp_advantages(rewards: jax.Array, mask: jax.Array,
                            gamma: float = 1.0) -> jax.Array:
    """REINFORCE++ on KL-shaped rewards r_t (−β·kl_t, plus the score at the last token)::

        G_t = Σ_{s≥t} γ^{s−t}·m_s·r_s      (GAE with V ≡ 0, λ = 1: nothing flows from padding)

    whitened over the batch's valid tokens; 0 outside the mask.
    """
    returns_to_go, _ = gae(rewards, jnp.zeros_like(rewards), mask, gamma, 1.0)
    return whiten(returns_to_go, mask)
