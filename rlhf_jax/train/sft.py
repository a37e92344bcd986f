"""The SFT step: next-token loss on response tokens of packed demonstration rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from rlhf_jax.models import CausalLM
from rlhf_jax.rl.supervised import next_token_loss
from rlhf_jax.train.accumulate import accumulated_update


def sft_loss_terms(model: CausalLM, params, batch: dict, rng: jax.Array):
    """``(Σ −log p(response tokens), number of response tokens, {})`` of one batch.

    ``batch``: ``tokens``, ``segment_ids`` and ``loss_mask``, each (B, T), as
    made by ``rlhf_jax.data.tokenize.pack``. Residual dropout draws from ``rng``
    (none with ``rng=None``, for evaluation).
    """
    rngs = None if rng is None else {"dropout": rng}
    logits = model.apply({"params": params}, batch["tokens"], segment_ids=batch["segment_ids"],
                         rngs=rngs)
    loss_sum, count = next_token_loss(logits, batch["tokens"], batch["loss_mask"])
    return loss_sum, count, {}


def sft_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None, *, model: CausalLM,
             microbatches: int = 1) -> tuple[TrainState, dict]:
    """One AdamW update of the policy's trainable params (``frozen``: its frozen base, see
    ``accumulated_update``); metrics include ``loss`` and ``perplexity``."""
    state, metrics = accumulated_update(
        state, batch, rng, lambda p, b, r: sft_loss_terms(model, p, b, r), microbatches, frozen)
    return state, dict(metrics, perplexity=jnp.exp(metrics["loss"]))
