"""PPO's rollout: sample responses with the policy, score them, shape the rewards, estimate advantages.

``rollout`` makes two jitted calls: ``generate`` (the sampler) and
``score_samples``, one program that runs the policy and value forward passes
(the training-time computation, so π/π_old is exactly 1 at the first update),
the reference policy, the reward function, the KL-shaped rewards and GAE. With
``PPOConfig.old_logprobs="sampler"`` log π_old is the sampler's own log-prob of each
token (the same model at temperature 1, unfiltered) and the policy's forward pass is
skipped; the exact KL and entropy metrics, which need its logits, are then not reported.
The four models are separate parameter trees on one mesh; the reference and
the reward model are only read. With one minibatch, ``train.ppo.scored_ppo_update``
calls ``score_samples`` inside the update's program, handing it the forward pass
(``outputs``) that the first update's backward pass reuses.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.rl.advantages import (explained_variance, gae, grpo_advantages, masked_mean,
                                    reinforce_pp_advantages, rloo_advantages, sequence_returns,
                                    token_advantages, whiten)
from rlhf_jax.rl.kl import entropy, exact_kl, kl_estimate
from rlhf_jax.rl.rewards import final_scores, kl_shaped_rewards
from rlhf_jax.sampling import SamplingConfig, generate
from rlhf_jax.sampling.generate import Samples
from rlhf_jax.train.actor_critic import ActorCritic, token_logprobs
from rlhf_jax.train.ppo_config import PPOConfig

# The quantities whose non-finite rows score_samples counts, causes before consequences.
NONFINITE = ("score", "logprob", "ref_logprob", "value", "advantage")
# reward_fn(reward_params, samples) -> scores (B,), before the missing-stop penalty.
RewardFn = Callable[[Any, Samples], jax.Array]


def reward_model_fn(model: ScalarHeadModel) -> RewardFn:
    """The reward model's score of prompt + response, read at the last real token."""
    return lambda params, samples: model.apply({"params": params}, samples.sequences,
                                               attention_mask=samples.sequence_mask)


def token_count_fn(token: int) -> RewardFn:
    """A known toy reward: how many times ``token`` occurs in the response (no parameters)."""
    return lambda params, samples: jnp.sum((samples.response == token) * samples.response_mask,
                                           axis=1).astype(jnp.float32)


@flax.struct.dataclass
class Experience:
    """One batch of episodes, (B, N) per token unless noted; P = ``prompt_length``."""

    sequences: jax.Array  # (B, P+N) prompt and response, as generated
    sequence_mask: jax.Array  # (B, P+N)
    response: jax.Array  # tokens y_t
    response_mask: jax.Array  # 1 up to and including the stop token
    logprobs: jax.Array  # log π_old(y_t), from the training forward pass
    ref_logprobs: jax.Array  # log π_SFT(y_t)
    values: jax.Array  # V_old(s_t)
    rewards: jax.Array  # KL-shaped r_t
    advantages: jax.Array  # GAE (whitened if configured) or a critic-free estimator's
    returns: jax.Array  # A_t + V_old(s_t) before whitening; without a critic, the return-to-go
    scores: jax.Array  # (B,) final scores s(x, y) after the missing-stop penalty
    prompt_length: int = flax.struct.field(pytree_node=False)


def score_samples(params, ref_params, reward_params, samples: Samples, kl_coef: jax.Array, *,
                  models: ActorCritic, reference: CausalLM, reward_fn: RewardFn,
                  config: PPOConfig, stop_tokens: tuple[int, ...],
                  outputs: Optional[tuple] = None) -> tuple[Experience, dict]:
    """``(experience, metrics)`` of sampled responses; metrics are batch means (per episode or per
    valid token) of the score, KL (k1, k3 and exact), entropy, length and value fit, and
    ``nonfinite/<quantity>``: how many of the batch's ``episodes`` hold a NaN or infinity in the
    RM scores, log-probs, reference log-probs, values or advantages (over response tokens).
    ``outputs``: the policy and value forward pass ``(logits, values)``, if already taken."""
    p = samples.prompt_length
    mask = samples.response_mask.astype(jnp.float32)
    forward = outputs is not None or config.old_logprobs == "forward"
    logits, values = outputs or models.response_outputs(
        params, samples.sequences, samples.sequence_mask, p, logits=forward)
    logprobs = token_logprobs(logits, samples.response) if forward else samples.raw_logprobs
    ref_logits = reference.apply({"params": ref_params}, samples.sequences,
                                 attention_mask=samples.sequence_mask,
                                 logit_range=(p - 1, samples.sequences.shape[1] - 1))
    ref_logprobs = token_logprobs(ref_logits, samples.response)
    last = jnp.maximum(jnp.sum(samples.response_mask, axis=1) - 1, 0)
    last_token = jnp.take_along_axis(samples.response, last[:, None], axis=1)[:, 0]
    stopped = jnp.isin(last_token, jnp.asarray(stop_tokens or (-1,))) & (jnp.sum(mask, 1) > 0)
    raw_scores = reward_fn(reward_params, samples).astype(jnp.float32)
    scores = final_scores(raw_scores, stopped, config.missing_stop_penalty, config.whiten_scores)
    rewards, kl = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
    values = values * mask
    advantages, returns = estimate_advantages(rewards, values, mask, config)
    experience = Experience(
        sequences=samples.sequences, sequence_mask=samples.sequence_mask,
        response=samples.response, response_mask=samples.response_mask, logprobs=logprobs,
        ref_logprobs=ref_logprobs, values=values, rewards=rewards, advantages=advantages,
        returns=returns, scores=scores, prompt_length=p)
    metrics = dict(
        score=jnp.mean(raw_scores), final_score=jnp.mean(scores),
        kl=jnp.mean(jnp.sum(kl, axis=1)),  # per episode, k1: what the penalty and controller use
        kl_k3_per_token=masked_mean(kl_estimate(logprobs - ref_logprobs, "k3"), mask),
        response_length=jnp.mean(jnp.sum(mask, axis=1)), stopped=jnp.mean(stopped),
        value_mean=masked_mean(values, mask), return_mean=masked_mean(returns, mask),
        explained_variance=explained_variance(values, returns, mask),
        kl_coef=kl_coef,
        episodes=jnp.float32(mask.shape[0]),
        **{f"nonfinite/{name}": nonfinite_rows(x, mask) for name, x in zip(NONFINITE, (
            raw_scores[:, None], logprobs, ref_logprobs, values, advantages))})
    if forward:  # what needs the policy's logits
        metrics.update(
            kl_exact_per_token=masked_mean(exact_kl(logits, ref_logits), mask),
            entropy=masked_mean(entropy(logits), mask),
            # How far the sampler's log-probs are from the training forward pass (precision).
            sampler_logprob_gap=jnp.max(jnp.abs(samples.raw_logprobs - logprobs) * mask))
    return experience, metrics


def check_critic(models: ActorCritic, config: PPOConfig) -> None:
    """A value function exactly when the advantage estimator uses one."""
    if models.critic != config.critic:
        raise ValueError(f"advantage={config.advantage!r} {'needs' if config.critic else 'has no'}"
                         f" value function, but ActorCritic.critic={models.critic}")


def estimate_advantages(rewards: jax.Array, values: jax.Array, mask: jax.Array,
                        config: PPOConfig) -> tuple[jax.Array, jax.Array]:
    """``(advantages, returns)`` (B, N) by ``config.advantage`` (``rl.advantages``): GAE on the
    values (whitened if ``whiten_advantages``); RLOO or GRPO on each episode's total reward
    ``R = Σ_t r_t`` within its group of ``samples_per_prompt``, given to all its tokens; or
    REINFORCE++. Without a critic, ``returns`` is the return-to-go ``Σ_{s≥t} γ^{s−t}·r_s``."""
    if config.advantage == "gae":
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
        return (whiten(advantages, mask) if config.whiten_advantages else advantages), returns
    returns, _ = gae(rewards, jnp.zeros_like(rewards), mask, config.gamma, 1.0)
    if config.advantage == "reinforce_pp":
        return reinforce_pp_advantages(rewards, mask, config.gamma), returns
    per_episode = {"rloo": rloo_advantages, "grpo": grpo_advantages}[config.advantage]
    return token_advantages(per_episode(sequence_returns(rewards, mask),
                                        config.samples_per_prompt), mask), returns


def nonfinite_rows(x: jax.Array, mask: jax.Array) -> jax.Array:
    """How many rows of ``x`` (B, N) hold a NaN or infinity where ``mask`` (B, N) is 1 (a (B, 1)
    ``x`` is one value per row)."""
    bad = ~jnp.isfinite(x) & (mask > 0) if x.shape == mask.shape else ~jnp.isfinite(x)
    return jnp.sum(jnp.any(bad, axis=1)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Rollout:
    """``rollout(params, ref_params, reward_params, prompt_ids, prompt_mask, rng, kl_coef)``,
    compiled once per shape: returns ``(experience, metrics)`` with ``generate_s`` and
    ``score_s``, the seconds of each of its two jitted calls. With ``samples_per_prompt`` k
    the prompts come prompt-major, each repeated k times (``np.repeat(ids, k, axis=0)``)."""

    models: ActorCritic
    reference: CausalLM
    reward_fn: RewardFn
    config: PPOConfig
    sampling: SamplingConfig

    @functools.cached_property
    def _score(self):
        return jax.jit(functools.partial(
            score_samples, models=self.models, reference=self.reference, reward_fn=self.reward_fn,
            config=self.config, stop_tokens=self.sampling.stop_tokens))

    def __post_init__(self):
        check_critic(self.models, self.config)

    def one_sample_per_prompt(self) -> "Rollout":
        """This rollout for a batch of distinct prompts (validation): a grouped estimator's
        advantages (RLOO, GRPO) become REINFORCE++'s, which need no groups."""
        if self.config.samples_per_prompt == 1:
            return self
        advantage = "gae" if self.config.critic else "reinforce_pp"
        return dataclasses.replace(self, config=dataclasses.replace(
            self.config, samples_per_prompt=1, advantage=advantage))

    @property
    def policy_config(self) -> ModelConfig:
        return self.models.policy.config

    def sample(self, params, prompt_ids, prompt_mask, rng) -> tuple[Samples, float]:
        """``(samples, seconds)``: the policy's responses, as the rollout samples them."""
        began = time.perf_counter()
        samples = jax.block_until_ready(generate(self.policy_config, params["policy"], prompt_ids,
                                                 prompt_mask, rng, self.sampling))
        return samples, time.perf_counter() - began

    def __call__(self, params, ref_params, reward_params, prompt_ids, prompt_mask, rng,
                 kl_coef) -> tuple[Experience, dict]:
        samples, generate_s = self.sample(params, prompt_ids, prompt_mask, rng)
        generated = time.perf_counter()
        experience, metrics = jax.block_until_ready(
            self._score(params, ref_params, reward_params, samples, kl_coef))
        return experience, dict(metrics, generate_s=generate_s,
                                score_s=time.perf_counter() - generated)
