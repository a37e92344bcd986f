"""The reward-model step: every response of a prompt scored once, all C(K,2) pairs in one loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from rlhf_jax.models import ScalarHeadModel
from rlhf_jax.rl.ranking import kwise_ranking_loss
from rlhf_jax.train.accumulate import accumulated_update


def score_responses(model: ScalarHeadModel, params, tokens, mask, rng=None) -> jax.Array:
    """Rewards (B, K) of K prompt+response sequences per prompt, read at each last real token."""
    b, k, t = tokens.shape
    rngs = None if rng is None else {"dropout": rng}
    rewards = model.apply({"params": params}, tokens.reshape(b * k, t),
                          attention_mask=mask.reshape(b * k, t), rngs=rngs)
    return rewards.reshape(b, k)


def score_comparisons(model: ScalarHeadModel, params, batch: dict, rng=None) -> jax.Array:
    """Rewards (B, K) of a comparison batch in either layout of ``comparison_batch``:
    ``tokens``, ``mask`` (B, K, T) rows of prompt + response; or with ``prompt``,
    ``prompt_mask`` (B, P) the responses alone in ``tokens``, ``mask`` (B, K, R), scored
    after the prompt computed once (``ScalarHeadModel.score_after_prompt``, the same
    rewards for P + K·R token passes instead of K·(P + R))."""
    if "prompt" not in batch:
        return score_responses(model, params, batch["tokens"], batch["mask"], rng)
    rngs = None if rng is None else {"dropout": rng}
    return model.apply({"params": params}, batch["prompt"], batch["prompt_mask"],
                       batch["tokens"], batch["mask"], rngs=rngs,
                       method=ScalarHeadModel.score_after_prompt)


def reward_loss_terms(model: ScalarHeadModel, params, batch: dict, rng: jax.Array):
    """K-wise loss terms of one batch.

    ``batch``: ``tokens`` and ``mask`` (B, K, T) (prompt + response, padded; or the
    responses after a ``prompt``, see ``score_comparisons``), ``rank`` (B, K) (0 = best)
    and ``valid`` (B, K) (false on padding responses).
    Metric sums: correct and total pairs, and reward sum and sum of squares over
    valid responses.

    The loss depends on differences of rewards only, so its gradient with
    respect to the head's bias is zero up to rounding; Adam divides a gradient
    by its own scale and would turn that rounding into steps of a sizeable share
    of the learning rate, a random walk of the rewards' level that changes with
    the order of a sum (one process or several, one mesh or another). The bias
    gets no gradient here: it stays put until ``center_reward`` sets it.
    """
    head = dict(params["head"], bias=jax.lax.stop_gradient(params["head"]["bias"]))
    params = dict(params, head=head)
    rewards = score_comparisons(model, params, batch, rng)
    loss_sum, count, metrics = kwise_ranking_loss(rewards, batch["rank"], batch["valid"])
    valid = batch["valid"].astype(jnp.float32)
    return loss_sum, count, dict(metrics, responses=jnp.sum(valid),
                                 reward_sum=jnp.sum(rewards * valid),
                                 reward_sq_sum=jnp.sum(jnp.square(rewards) * valid))


def reward_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None, *,
                model: ScalarHeadModel, microbatches: int = 1) -> tuple[TrainState, dict]:
    """One AdamW update of the reward model's trainable params (``frozen``: its frozen base, see
    ``accumulated_update``); metrics include pairwise ``accuracy`` and reward stats."""
    state, m = accumulated_update(
        state, batch, rng, lambda p, b, r: reward_loss_terms(model, p, b, r), microbatches, frozen)
    mean = m["reward_sum"] / jnp.maximum(m["responses"], 1.0)
    var = m["reward_sq_sum"] / jnp.maximum(m["responses"], 1.0) - mean ** 2
    return state, dict(m, accuracy=m["correct_pairs"] / jnp.maximum(m["pairs"], 1.0),
                       reward_mean=mean, reward_std=jnp.sqrt(jnp.maximum(var, 0.0)))


def center_reward(params, mean_demonstration_reward) -> dict:
    """Shifts the head's bias so that demonstrations score 0 on average (the paper's normalization).

    ``r'(x, y) = r(x, y) − E_demos[r]``: only the bias changes, so rankings and
    the loss are unchanged.
    """
    head = dict(params["head"], bias=params["head"]["bias"] - mean_demonstration_reward)
    return dict(params, head=head)
