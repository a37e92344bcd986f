"""Scoring and the first PPO update in one program: the same experience, metrics and parameters
as scoring, then ``ppo_update``, in two programs, with one policy-and-value forward pass fewer."""

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from rlhf_jax.models import CausalLM, LoraConfig, ScalarHeadModel, lora
from rlhf_jax.train.actor_critic import ActorCritic
from rlhf_jax.train.ppo import init_ppo_state, ppo_update, scored_ppo_update
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import score_samples
from tests.train.test_ppo import CONFIG, prompts, setup
from tests.train.test_ppo import pretraining_rows

LORA = CONFIG.replace(lora=LoraConfig(rank=4))
LEARNING_RATE = 1e-2


def lora_setup(ppo: PPOConfig):
    """Policy and value model with adapters on frozen bases, as ``run_ppo`` splits them."""
    state, reference, rollout, _, _ = setup(ppo)
    x = np.zeros((1, 8), np.int32)
    noisy_b = lambda path, v: (v + 0.05 * jax.random.normal(jax.random.key(len(path)), v.shape)
                               if path[-1].key == "lora_b" else v)  # noqa: E731
    trees = [jax.tree_util.tree_map_with_path(noisy_b, nn.meta.unbox(
        model.init(jax.random.key(i), x)["params"])) for i, model in enumerate(
        (CausalLM(LORA), ScalarHeadModel(LORA)))]
    (policy, policy_frozen), (value, value_frozen) = (lora.split(t, LORA.lora) for t in trees)
    models = ActorCritic(CausalLM(LORA), ScalarHeadModel(LORA))
    state = init_ppo_state(dict(policy=policy, value=value), optax.sgd(LEARNING_RATE), ppo)
    rollout = dataclasses.replace(rollout, models=models)
    return state, lora.base(trees[0]), rollout, models, dict(policy=policy_frozen,
                                                             value=value_frozen)


def initial_params(ppo: PPOConfig, value: str):
    return (lora_setup(ppo) if value == "lora" else setup(ppo, shared=value == "shared"))[
        0].train.params


def both_ways(ppo: PPOConfig, value: str, ptx=None):
    """``(fused, two programs)``: each ``(state, experience, metrics)`` from the same samples."""
    if value == "lora":
        state, reference, rollout, models, frozen = lora_setup(ppo)
    else:
        state, reference, rollout, _, models = setup(ppo, shared=value == "shared")
        frozen = None
    # SGD, so the update is the gradient itself (Adam's first step, ±lr, would hide a wrong one)
    state = init_ppo_state(state.train.params, optax.sgd(LEARNING_RATE), ppo)
    ids, mask = prompts()
    full = lora.combine(state.train.params, frozen)
    samples, _ = rollout.sample(full, ids, mask, jax.random.key(0))
    static = dict(models=models, reference=rollout.reference, reward_fn=rollout.reward_fn,
                  config=ppo, stop_tokens=rollout.sampling.stop_tokens)
    fused = jax.jit(functools.partial(scored_ppo_update, **static))(
        state, reference, None, samples, ptx, jax.random.key(1), frozen)
    exact = dataclasses.replace(ppo, old_logprobs="forward")
    experience, metrics = jax.jit(functools.partial(score_samples, **dict(static, config=exact)))(
        full, reference, None, samples, state.kl_coef)
    new, update_metrics = jax.jit(functools.partial(ppo_update, models=models, config=ppo))(
        state, experience, ptx, jax.random.key(1), frozen)
    return fused, (new, experience, dict(metrics, **update_metrics))


@pytest.mark.parametrize("value,epochs,advantage,ptx", [
    ("model", 1, "gae", False), ("shared", 2, "gae", False), ("none", 2, "rloo", False),
    ("model", 1, "gae", True), ("lora", 1, "gae", False)])
def test_one_program_gives_the_two_programs_experience_metrics_and_update(value, epochs,
                                                                          advantage, ptx):
    """Every field of the experience, every metric and every updated parameter agree to float32
    rounding (the two-program update permutes the batch, so its sums run in another order);
    the fused program's log π_old is its own forward pass's, so ρ is exactly 1 at first."""
    ppo = PPOConfig(minibatches=1, epochs=epochs, advantage=advantage, old_logprobs="sampler",
                    samples_per_prompt=2 if advantage == "rloo" else 1,
                    ptx_coef=1.0 if ptx else 0.0)
    assert ppo.scores_in_update
    rows = pretraining_rows(0, rows=16) if ptx else None
    (state, experience, metrics), (state2, experience2, metrics2) = both_ways(ppo, value, rows)
    valid = np.asarray(experience.response_mask) > 0
    assert valid.sum() > 100
    for field in ("logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns"):
        np.testing.assert_allclose(np.asarray(getattr(experience, field))[valid],
                                   np.asarray(getattr(experience2, field))[valid], atol=1e-5,
                                   err_msg=field)
    assert set(metrics) == set(metrics2)
    for key in metrics:
        np.testing.assert_allclose(metrics[key], metrics2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert float(metrics["ratio_dev_first"]) == 0.0
    steps = []
    for fused, two, start in zip(jax.tree.leaves(state.train.params),
                                 jax.tree.leaves(state2.train.params),
                                 jax.tree.leaves(initial_params(ppo, value))):
        step, gap = np.asarray(two) - np.asarray(start), np.asarray(fused) - np.asarray(two)
        assert np.linalg.norm(gap) <= 1e-4 * np.linalg.norm(step) + 1e-9, (
            np.linalg.norm(gap), np.linalg.norm(step))
        steps.append(np.linalg.norm(step))
    assert min(steps) > 0 and sum(steps) > 1e-3  # every tensor trained
    if ptx:
        assert metrics["ptx_loss"] > 0


def flops(compiled) -> float:
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_one_program_runs_one_forward_pass_of_policy_and_value_fewer():
    """XLA's count: scoring plus the update, less the fused program, is the policy and value
    forward pass over the episodes (its logits and values), within 10%; not 0, as it would be
    if the update ran its own forward pass again."""
    ppo = PPOConfig(minibatches=1, old_logprobs="forward")
    state, reference, rollout, _, models = setup(ppo)
    ids, mask = prompts()
    samples, _ = rollout.sample(state.train.params, ids, mask, jax.random.key(0))
    static = dict(models=models, reference=rollout.reference, reward_fn=rollout.reward_fn,
                  config=ppo, stop_tokens=rollout.sampling.stop_tokens)
    experience, _ = score_samples(state.train.params, reference, None, samples, state.kl_coef,
                                  **static)
    score = jax.jit(functools.partial(score_samples, **static)).lower(
        state.train.params, reference, None, samples, state.kl_coef).compile()
    update = jax.jit(functools.partial(ppo_update, models=models, config=ppo)).lower(
        state, experience, None, jax.random.key(1)).compile()
    fused = jax.jit(functools.partial(scored_ppo_update, **static)).lower(
        state, reference, None, samples, None, jax.random.key(1)).compile()
    forward = jax.jit(lambda p: models.response_outputs(
        p, samples.sequences, samples.sequence_mask, samples.prompt_length)).lower(
        state.train.params).compile()
    saved = flops(score) + flops(update) - flops(fused)
    assert abs(saved / flops(forward) - 1) < 0.1, (saved, flops(forward))


def test_two_programs_with_more_than_one_minibatch_or_when_asked():
    assert not PPOConfig(minibatches=2).scores_in_update
    assert not PPOConfig(microbatches=2).scores_in_update
    assert not PPOConfig(fuse_scoring=False).scores_in_update
    state, reference, rollout, _, models = setup(PPOConfig(minibatches=2))
    ids, mask = prompts()
    experience, _ = rollout(state.train.params, reference, None, ids, mask, jax.random.key(0),
                            state.kl_coef)
    with pytest.raises(ValueError, match="one minibatch of one microbatch"):
        ppo_update(state, experience, None, jax.random.key(1), models=models,
                   config=PPOConfig(minibatches=2), forward=((), None))
