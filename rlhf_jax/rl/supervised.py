"""The supervised (SFT and pretraining) objective: next-token cross-entropy on selected tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_loss(logits: jax.Array, tokens: jax.Array,
                    loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(Σ_t m_{t+1}·(−log p(x_{t+1} | x_≤t)), Σ_t m_{t+1})`` over the batch.

    ``logits`` (B, T, V) predict the next token; ``tokens`` (B, T);
    ``loss_mask`` (B, T) is 1 on the tokens to be predicted (the response in SFT,
    every real token in pretraining; 0 on prompts, padding and the first token of
    each packed example). Returning the sum and its count, not the mean, keeps
    gradient accumulation over microbatches exact: divide once, at the end.
    """
    # −log p(x_{t+1}) = logsumexp(logits_t) − logits_t[x_{t+1}], with targets shifted left
    # rather than logits sliced: slicing (B, T, V) logits costs a padded copy in the backward.
    logits = logits.astype(jnp.float32)
    targets = jnp.roll(tokens, -1, axis=1)
    mask = jnp.roll(loss_mask, -1, axis=1).at[:, -1].set(0).astype(jnp.float32)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logits
    return jnp.sum(nll * mask), jnp.sum(mask)
