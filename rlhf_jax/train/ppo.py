"""PPO and PPO-ptx updates of the policy and its value function.

``ppo_step`` is one minibatch update of ``params = {'policy', 'value'}`` (one
TrainState whose optimizer gives each subtree its own AdamW and learning rate,
``ppo_optimizer``); ``ppo_update`` runs the epochs × minibatches of one
iteration, then moves the policy's EMA and the KL coefficient; ``scored_ppo_update`` is
scoring and ``ppo_update`` in one program, sharing one forward pass. The loss of a
minibatch with T valid response tokens (and, for PPO-ptx, T_ptx pretraining
tokens)::

    L = (Σ_t ℓ^policy_t + c_V·Σ_t ℓ^value_t − c_H·Σ_t H_t) / T  +  γ·Σ −log π(x_ptx) / T_ptx

so the PPO-ptx objective of the paper, E[r − β·KL] + γ·E_pretrain[log π], is
maximized.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from rlhf_jax.models import CausalLM
from rlhf_jax.models.lora import combine
from rlhf_jax.rl.kl import entropy
from rlhf_jax.rl.ppo import policy_loss, value_loss
from rlhf_jax.rl.supervised import next_token_loss
from rlhf_jax.sampling.generate import Samples
from rlhf_jax.train.accumulate import accumulated_update, apply_summed_gradients
from rlhf_jax.train.actor_critic import ActorCritic, token_logprobs
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import Experience, RewardFn, check_critic, score_samples

MINIBATCH_FIELDS = ("sequences", "sequence_mask", "response", "response_mask", "logprobs",
                    "values", "advantages", "returns")


@flax.struct.dataclass
class PPOState:
    """Everything PPO updates; saved whole in checkpoints."""

    train: TrainState  # params {'policy', 'value'} and both optimizers' states
    ema: Any  # exponential moving average of the policy params
    kl_coef: jax.Array  # β, the KL controller's state
    iteration: jax.Array  # completed iterations

    @property
    def params(self) -> dict:
        """The trained parameters ``{'policy', 'value'}``, named as a TrainState names them."""
        return self.train.params


def ppo_optimizer(policy: OptimizerConfig, value: OptimizerConfig) -> optax.GradientTransformation:
    """Separate AdamW (and clipping) for ``params['policy']`` and ``params['value']``."""
    return optax.multi_transform({"policy": make_optimizer(policy), "value": make_optimizer(value)},
                                 lambda params: {k: k for k in params})


def init_ppo_state(params: dict, tx: optax.GradientTransformation, config: PPOConfig) -> PPOState:
    return PPOState(train=TrainState.create(apply_fn=None, params=params, tx=tx),
                    ema=jax.tree.map(jnp.copy, params["policy"]),
                    kl_coef=jnp.float32(config.kl.init_coef), iteration=jnp.int32(0))


def token_weights(mask: jax.Array, aggregation: str) -> jax.Array:
    """Each response token's weight in the loss: 1 (``token``: every token of the minibatch
    counts the same) or ``1/L`` of its response's L tokens (``sequence``: every response
    counts the same, its tokens averaged)."""
    mask = mask.astype(jnp.float32)
    if aggregation == "token":
        return mask
    return mask / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)


def response_loss(models: ActorCritic, config: PPOConfig, totals: dict, outputs: tuple,
                  batch: dict) -> tuple[jax.Array, dict]:
    """``(L's policy, value and entropy terms, metric sums)`` from the forward pass's ``outputs
    = (logits, values)`` of the batch's responses, normalized by the minibatch's ``totals``
    (``tokens``: the summed token weights). Without a critic there is no value term."""
    logits, values = outputs
    mask = batch["response_mask"].astype(jnp.float32)
    weights = token_weights(mask, config.loss_aggregation)
    logprobs = token_logprobs(logits, batch["response"])
    total, pg_metrics = policy_loss(logprobs, batch["logprobs"], batch["advantages"], mask,
                                    config.clip_ratio, weights)
    sums = dict(pg_metrics, policy_loss=total, tokens=jnp.sum(weights))
    if models.critic:
        vf_sum, vf_metrics = value_loss(values, batch["values"], batch["returns"], mask,
                                        config.value_clip, weights)
        total = total + config.value_coef * vf_sum
        sums.update(vf_metrics, value_loss=vf_sum)
    if config.entropy_coef:
        ent_sum = jnp.sum(entropy(logits) * weights)
        total, sums["entropy"] = total - config.entropy_coef * ent_sum, ent_sum
    return total / jnp.maximum(totals["tokens"], 1e-8), sums


def ptx_loss(models: ActorCritic, config: PPOConfig, totals: dict, params,
             ptx: dict) -> tuple[jax.Array, dict]:
    """``(γ·Σ −log π(x_ptx) / T_ptx, sums)`` of the pretraining rows ``ptx``, with the
    minibatch's ``totals['ptx_tokens']``."""
    logits = models.policy.apply({"params": params["policy"]}, ptx["tokens"],
                                 segment_ids=ptx["segment_ids"])
    ptx_sum, ptx_count = next_token_loss(logits, ptx["tokens"], ptx["loss_mask"])
    total = config.ptx_coef * ptx_sum / jnp.maximum(totals["ptx_tokens"], 1.0)
    return total, dict(ptx_loss=ptx_sum, ptx_tokens=ptx_count)


def response_forward(models: ActorCritic, params, batch: dict) -> tuple:
    """``(logits, values)`` of the batch's responses (``ActorCritic.response_outputs``)."""
    prompt_length = batch["sequences"].shape[1] - batch["response"].shape[1]
    return models.response_outputs(params, batch["sequences"], batch["sequence_mask"],
                                    prompt_length)


def ppo_loss_terms(models: ActorCritic, config: PPOConfig, totals: dict, params, batch: dict):
    """``(L of this microbatch, its share of the minibatch, metric sums)``; L is normalized by the
    whole minibatch's ``totals`` (``tokens``, ``ptx_tokens``), so the shares add up to 1."""
    total, sums = response_loss(models, config, totals, response_forward(models, params, batch),
                                batch)
    if "ptx" in batch:
        ptx_total, ptx_sums = ptx_loss(models, config, totals, params, batch["ptx"])
        total = total + ptx_total
        sums.update(ptx_sums)
    return total, jnp.float32(1.0 / config.microbatches), sums


def minibatch_totals(minibatch: dict, config: PPOConfig) -> dict:
    """What the minibatch's loss is normalized by: summed token weights and, for PPO-ptx, the
    predicted pretraining tokens (``next_token_loss`` predicts all but each row's first)."""
    totals = dict(tokens=jnp.sum(token_weights(minibatch["response_mask"],
                                               config.loss_aggregation)))
    if "ptx" in minibatch:
        totals["ptx_tokens"] = jnp.sum(minibatch["ptx"]["loss_mask"][:, 1:]).astype(jnp.float32)
    return totals


def step_metrics(m: dict, critic: bool) -> dict:
    """``ppo_step``'s metrics from ``accumulated_update``'s sums."""
    per_token = lambda key: m[key] / jnp.maximum(m["tokens"], 1e-8)
    metrics = dict(loss=m["loss"], grad_norm=m["grad_norm"], update_norm=m["update_norm"],
                   policy_loss=per_token("policy_loss"), clip_fraction=per_token("clipped"),
                   approx_kl=per_token("approx_kl"), ratio_dev=per_token("ratio_dev"))
    if critic:
        metrics.update(value_loss=per_token("value_loss"),
                       value_clip_fraction=per_token("value_clipped"))
    if "entropy" in m:
        metrics["entropy_bonus"] = per_token("entropy")
    if "ptx_loss" in m:
        metrics["ptx_loss"] = m["ptx_loss"] / jnp.maximum(m["ptx_tokens"], 1.0)
    return metrics


def ppo_step(train: TrainState, minibatch: dict, rng: jax.Array, frozen=None, *,
             models: ActorCritic, config: PPOConfig) -> tuple[TrainState, dict]:
    """One update of policy and value on a minibatch of experience (fields ``MINIBATCH_FIELDS``,
    plus ``ptx``: pretraining rows ``tokens``, ``segment_ids``, ``loss_mask`` for PPO-ptx).
    ``train.params`` holds what trains, ``frozen`` the rest: with LoRA on one base,
    ``{'policy': base, 'value': base}`` (see ``accumulated_update``).

    Metrics are means per valid token, or per response with ``loss_aggregation='sequence'``
    (``policy_loss``, ``clip_fraction``, ``approx_kl``, ``ratio_dev``, with a critic
    ``value_loss`` and ``value_clip_fraction``, ``entropy`` if used), ``ptx_loss`` per
    pretraining token, and the update's norms.
    """
    totals = minibatch_totals(minibatch, config)
    loss_terms = lambda params, batch, _: ppo_loss_terms(models, config, totals, params, batch)
    train, m = accumulated_update(train, minibatch, rng, loss_terms, config.microbatches, frozen)
    return train, step_metrics(m, models.critic)


def ppo_step_from_forward(train: TrainState, minibatch: dict, forward: tuple, frozen=None, *,
                          models: ActorCritic, config: PPOConfig) -> tuple[TrainState, dict]:
    """``ppo_step`` in one microbatch whose policy and value forward pass is already taken:
    ``forward = jax.vjp(f, train.params)`` with ``f(trainable) = response_forward(models,
    combine(trainable, frozen), minibatch)``. The gradient is the pullback of ∂L/∂(logits,
    values) plus the ptx term's own: the same update, without a second forward pass."""
    totals = minibatch_totals(minibatch, config)
    outputs, pullback = forward
    with_aux = lambda loss_and_sums: (loss_and_sums[0], loss_and_sums)
    output_grads, (total, sums) = jax.grad(
        lambda o: with_aux(response_loss(models, config, totals, o, minibatch)),
        has_aux=True)(outputs)
    (grads,) = pullback(output_grads)
    if "ptx" in minibatch:
        ptx_grads, (ptx_total, ptx_sums) = jax.grad(lambda t: with_aux(ptx_loss(
            models, config, totals, combine(t, frozen), minibatch["ptx"])), has_aux=True)(
            train.params)
        grads = jax.tree.map(jnp.add, grads, ptx_grads)
        total = total + ptx_total
        sums = dict(sums, **ptx_sums)
    train, m = apply_summed_gradients(train, grads, total, jnp.float32(1.0), sums)
    return train, step_metrics(m, models.critic)


def ppo_update(state: PPOState, experience: Experience, ptx: Optional[dict], rng: jax.Array,
               frozen=None, *, models: ActorCritic, config: PPOConfig,
               forward: Optional[tuple] = None) -> tuple[PPOState, dict]:
    """One iteration's optimization: ``config.epochs`` passes, each over ``config.minibatches``
    minibatches of a fresh permutation of the episodes (the pretraining rows ``ptx`` are cut
    into as many slices, the same every pass); then EMA (of the policy's trainable params:
    its adapters under LoRA) and KL-coefficient updates. ``frozen``: as in ``ppo_step``.
    ``forward``: the whole batch's forward pass at the current parameters, as
    ``ppo_step_from_forward`` takes it; the first update then runs on the batch in its own
    order (one minibatch of one microbatch: ``PPOConfig.scores_in_update``) without a forward
    pass of its own.

    Metrics: the mean over all minibatch updates of ``ppo_step``'s metrics, the first
    update's ``ratio_dev_first`` (0 when rollout and training agree) and the new ``kl_coef``.
    """
    check_critic(models, config)
    episodes = experience.response.shape[0]
    n_mb = config.minibatches
    if episodes % n_mb:
        raise ValueError(f"{episodes} episodes do not split into {n_mb} minibatches")
    data = {k: getattr(experience, k) for k in MINIBATCH_FIELDS}
    keys = jax.random.split(rng, config.epochs + 1)
    order = jnp.concatenate([jax.random.permutation(k, episodes) for k in keys[1:]])
    order = order.reshape(config.epochs * n_mb, episodes // n_mb)
    ptx_slices = None
    if ptx is not None:
        ptx_slices = jax.tree.map(lambda x: x.reshape(n_mb, x.shape[0] // n_mb, *x.shape[1:]), ptx)

    def body(train, xs):
        index, rows = xs
        minibatch = jax.tree.map(lambda x: x[rows], data)
        if ptx_slices is not None:
            minibatch["ptx"] = jax.tree.map(lambda x: x[index % n_mb], ptx_slices)
        return ppo_step(train, minibatch, jax.random.fold_in(keys[0], index), frozen,
                        models=models, config=config)

    train, updates = state.train, jnp.arange(order.shape[0])
    if forward is not None:
        if n_mb != 1 or config.microbatches != 1:
            raise ValueError("a forward pass of the whole batch is the first update's only with "
                             "one minibatch of one microbatch")
        train, first = ppo_step_from_forward(train, dict(data, **({} if ptx is None else {
            "ptx": ptx})), forward, frozen, models=models, config=config)
        order, updates = order[1:], updates[1:]
    train, per_update = jax.lax.scan(body, train, (updates, order))
    if forward is not None:
        per_update = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, per_update)
    metrics = jax.tree.map(jnp.mean, per_update)
    metrics["ratio_dev_first"] = per_update["ratio_dev"][0]
    observed_kl = jnp.mean(jnp.sum((experience.logprobs - experience.ref_logprobs)
                                   * experience.response_mask, axis=1))
    kl_coef = config.kl.update(state.kl_coef, observed_kl, episodes)
    decay = config.ema_decay
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p.astype(e.dtype), state.ema,
                       train.params["policy"])
    metrics["kl_coef_next"] = kl_coef
    return PPOState(train=train, ema=ema, kl_coef=kl_coef, iteration=state.iteration + 1), metrics


def scored_ppo_update(state: PPOState, ref_params, reward_params, samples: Samples,
                      ptx: Optional[dict], rng: jax.Array, frozen=None, *, models: ActorCritic,
                      reference: CausalLM, reward_fn: RewardFn, config: PPOConfig,
                      stop_tokens: tuple[int, ...]) -> tuple[PPOState, Experience, dict]:
    """``score_samples`` and ``ppo_update`` as one program, for epochs of one minibatch in one
    microbatch (``PPOConfig.scores_in_update``): scoring's forward pass of policy and value,
    taken with ``jax.vjp``, is the first update's, so it runs once instead of twice, and
    log π_old comes from it (exact: ρ = 1 at the first update, whatever ``old_logprobs``).
    Returns ``(state, experience, metrics)``, scoring's and the update's metrics together."""
    trainable = state.train.params
    forward = jax.vjp(lambda t: models.response_outputs(
        combine(t, frozen), samples.sequences, samples.sequence_mask, samples.prompt_length),
        trainable)
    experience, metrics = score_samples(
        combine(trainable, frozen), ref_params, reward_params, samples, state.kl_coef,
        models=models, reference=reference, reward_fn=reward_fn, config=config,
        stop_tokens=stop_tokens, outputs=forward[0])
    state, update_metrics = ppo_update(state, experience, ptx, rng, frozen, models=models,
                                       config=config, forward=forward)
    return state, experience, dict(metrics, **update_metrics)
