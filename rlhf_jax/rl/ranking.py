"""The reward model's K-wise ranking loss (Ouyang et al. 2022, eq. 1).

One batch element is one prompt x with its K responses (K may differ between
prompts: rows are padded to the largest K with ``valid`` false). With ``rank``
the position of each response in the labeler's ranking (0 = best)::

    loss(x) = −1/C(K,2) · Σ_{(w, l): rank_w < rank_l} log σ(r(x, y_w) − r(x, y_l))

so every response is scored once and all C(K,2) comparisons of a prompt share
one batch element, and each prompt weighs the same whatever its K.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ranked_pairs(rank: jax.Array, valid: jax.Array) -> jax.Array:
    """(B, K, K) mask of pairs (w, l) with w ranked above l, both real responses."""
    both = valid[:, :, None] & valid[:, None, :]
    return both & (rank[:, :, None] < rank[:, None, :])


def per_prompt_ranking(rewards: jax.Array, rank: jax.Array, valid: jax.Array) -> dict:
    """Per prompt (B,): ``loss`` (the mean of −log σ(r_w − r_l) over its pairs, 0 without
    pairs), ``pairs`` (C(K, 2)) and ``correct_pairs`` (r_w > r_l), all float32."""
    rewards = rewards.astype(jnp.float32)
    pairs = ranked_pairs(rank, valid)
    margin = rewards[:, :, None] - rewards[:, None, :]  # r_w − r_l for row w, column l
    n_pairs = jnp.sum(pairs, axis=(1, 2)).astype(jnp.float32)
    total = -jnp.sum(jnp.where(pairs, jax.nn.log_sigmoid(margin), 0.0), axis=(1, 2))
    return dict(loss=total / jnp.maximum(n_pairs, 1.0), pairs=n_pairs,
                correct_pairs=jnp.sum(pairs & (margin > 0), axis=(1, 2)).astype(jnp.float32))


def kwise_ranking_loss(rewards: jax.Array, rank: jax.Array,
                       valid: jax.Array) -> tuple[jax.Array, jax.Array, dict]:
    """``(Σ_x loss(x), number of prompts, metrics)`` for rewards (B, K).

    ``metrics`` holds sums and counts too: ``correct_pairs`` (r_w > r_l) and
    ``pairs``. Prompts with fewer than two responses count for nothing.
    """
    per_prompt = per_prompt_ranking(rewards, rank, valid)
    metrics = dict(correct_pairs=jnp.sum(per_prompt["correct_pairs"]),
                   pairs=jnp.sum(per_prompt["pairs"]))
    return (jnp.sum(per_prompt["loss"]), jnp.sum(per_prompt["pairs"] > 0).astype(jnp.float32),
            metrics)
