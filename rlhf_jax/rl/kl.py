"""KL divergence to the reference policy: per-token estimators, the exact value, entropy, and the
controllers of the KL coefficient β.

For a token y sampled from π, with ``log_ratio = log π(y) − log π_ref(y)``
(Schulman's estimators of KL(π‖π_ref), unbiased in expectation over y ~ π)::

    k1 = log_ratio                       (can be negative; the paper's penalty)
    k2 = ½·log_ratio²
    k3 = exp(−log_ratio) − 1 + log_ratio (≥ 0, low variance)

and the exact ``KL_t = Σ_v π(v)·(log π(v) − log π_ref(v))`` from both full
distributions.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(log_ratio: jax.Array, estimator: str = "k1") -> jax.Array:
    """Per-token estimate of KL(π‖π_ref) from ``log π(y) − log π_ref(y)`` of sampled tokens."""
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * jnp.square(log_ratio)
    if estimator == "k3":
        return jnp.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {ESTIMATORS}")


def exact_kl(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
    """``Σ_v π(v)·(log π(v) − log π_ref(v))`` at every position, (…, V) → (…)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ref_logp = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp - ref_logp), axis=-1)


def entropy(logits: jax.Array) -> jax.Array:
    """``−Σ_v π(v)·log π(v)`` at every position, (…, V) → (…)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


@dataclasses.dataclass(frozen=True)
class KLController:
    """The KL coefficient β: fixed (``target=None``) or adaptive (Ziegler et al. 2019)::

        e = clip(KL / target − 1, −0.2, 0.2)
        β ← β·(1 + e·n / horizon)

    with ``KL`` the batch's mean KL per episode (summed over its tokens) and
    ``n`` the episodes in the batch. β itself is state (saved in checkpoints);
    this object only holds the settings.
    """

    init_coef: float = 0.02
    target: Optional[float] = None
    horizon: int = 10000

    def __post_init__(self):
        if self.init_coef < 0:
            raise ValueError(f"KLController.init_coef={self.init_coef} must be >= 0")
        if self.target is not None and (self.target <= 0 or self.horizon <= 0):
            raise ValueError(f"KLController: target={self.target} and horizon={self.horizon} "
                             "must be > 0 (target=None for a fixed β)")

    def update(self, coef: jax.Array, observed_kl: jax.Array, episodes: int) -> jax.Array:
        if self.target is None:
            return coef
        error = jnp.clip(observed_kl / self.target - 1.0, -0.2, 0.2)
        return coef * (1.0 + error * episodes / self.horizon)
