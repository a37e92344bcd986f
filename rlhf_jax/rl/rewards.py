"""The per-token reward of the bandit episode: a KL penalty at every token, the RM score at the end.

For a response y_1..y_L (L = its valid tokens) to prompt x::

    r_t = −β·(log π_old(y_t | x, y_<t) − log π_SFT(y_t | x, y_<t))  +  [t = L]·s(x, y)

where ``s`` is the reward model's score, normalized so that demonstrations
score 0 (its bias), minus ``missing_stop_penalty`` when the response reached
the length limit without a stop token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.rl.advantages import whiten


def final_scores(scores: jax.Array, stopped: jax.Array, missing_stop_penalty: float = 0.0,
                 whiten_scores: bool = False) -> jax.Array:
    """``s − penalty·[no stop token]`` (B,), optionally whitened over the batch (mean 0, std 1)."""
    scores = scores.astype(jnp.float32) - missing_stop_penalty * (1.0 - stopped.astype(jnp.float32))
    if whiten_scores:
        scores = whiten(scores, jnp.ones_like(scores))
    return scores


def kl_shaped_rewards(scores: jax.Array, logprobs: jax.Array, ref_logprobs: jax.Array,
                      mask: jax.Array, kl_coef: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(rewards, kl)``, each (B, N): r_t as above, and the per-token k1 ``log π − log π_SFT``.

    ``scores`` (B,); ``logprobs``, ``ref_logprobs`` and ``mask`` (B, N). A row
    with no valid token gets no reward at all.
    """
    mask = mask.astype(jnp.float32)
    kl = (logprobs - ref_logprobs) * mask
    n = mask.shape[1]
    last = jnp.sum(mask, axis=1).astype(jnp.int32) - 1  # −1 for an empty response
    at_last = (jnp.arange(n)[None, :] == last[:, None]).astype(jnp.float32)
    return -kl_coef * kl + at_last * scores[:, None], kl
