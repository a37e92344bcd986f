"""PPO's rollout and updates on the tiny model: consistency, learning, the KL leash, the ptx term."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import get_config
from rlhf_jax.data.tokenize import pack, Example
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.rl.kl import KLController
from rlhf_jax.rl.supervised import next_token_loss
from rlhf_jax.sampling import SamplingConfig
from rlhf_jax.train.actor_critic import ActorCritic, shared_value_head
from rlhf_jax.train.optim import OptimizerConfig
from rlhf_jax.train.ppo import (MINIBATCH_FIELDS, init_ppo_state, ppo_optimizer, ppo_step,
                                ppo_update)
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import Rollout, token_count_fn

CONFIG = ModelConfig.from_dict(dict(get_config("tiny")))
TOKEN = 97
EOS = 256


def setup(ppo: PPOConfig, lr=1e-2, shared=False, new_tokens=16):
    policy = CausalLM(CONFIG)
    x = np.zeros((1, 8), np.int32)
    params = nn.meta.unbox(policy.init(jax.random.key(0), x)["params"])
    trained = dict(policy=params)
    if not ppo.critic:
        models = ActorCritic(policy, None, critic=False)
    elif shared:
        models, value = ActorCritic(policy, None), shared_value_head(CONFIG.d_model)
    else:
        value_model = ScalarHeadModel(CONFIG)
        models = ActorCritic(policy, value_model)
        value = nn.meta.unbox(value_model.init(jax.random.key(1), x)["params"])
    if ppo.critic:
        trained["value"] = value
    opt = OptimizerConfig(lr, 10_000, final_fraction=1.0)
    state = init_ppo_state(trained, ppo_optimizer(opt, opt), ppo)
    sampling = SamplingConfig(max_new_tokens=new_tokens, stop_tokens=(EOS,), pad_token=EOS,
                              prompt_buckets=(16,))
    rollout = Rollout(models, policy, token_count_fn(TOKEN), ppo, sampling)
    update = jax.jit(functools.partial(ppo_update, models=models, config=ppo))
    return state, jax.tree.map(jnp.copy, params), rollout, update, models


def prompts(n=16, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, 256, (n, 12)).astype(np.int32)
    mask = (np.arange(12)[None, :] >= rng.randint(0, 6, (n, 1))).astype(np.int32)  # left-padded
    return np.where(mask > 0, ids, EOS), mask


def run(state, reference, rollout, update, iterations, ptx=None):
    ids, mask = prompts(16 // rollout.config.samples_per_prompt)
    ids, mask = (np.repeat(x, rollout.config.samples_per_prompt, axis=0) for x in (ids, mask))
    history = []
    for i in range(iterations):
        experience, metrics = rollout(state.train.params, reference, None, ids, mask,
                                      jax.random.key(i), state.kl_coef)
        state, _ = update(state, experience, ptx, jax.random.key(10_000 + i))
        history.append({k: float(v) for k, v in metrics.items()})
    return state, history


@pytest.mark.parametrize("shared", [False, True])
def test_ratio_is_one_at_the_first_minibatch(shared):
    """Rollout and update run the same forward pass in two XLA programs: ρ = 1 up to float32
    rounding (a different mask, position or token layout would be off by far more)."""
    ppo = PPOConfig(minibatches=1)
    state, reference, rollout, _, models = setup(ppo, shared=shared)
    ids, mask = prompts()
    experience, metrics = rollout(state.train.params, reference, None, ids, mask,
                                  jax.random.key(0), state.kl_coef)
    minibatch = {k: getattr(experience, k) for k in MINIBATCH_FIELDS}
    _, step_metrics = jax.jit(functools.partial(ppo_step, models=models, config=ppo))(
        state.train, minibatch, jax.random.key(1))
    assert float(step_metrics["ratio_dev"]) < 1e-6  # mean |ρ − 1| per token
    assert float(step_metrics["clip_fraction"]) == 0.0
    assert float(step_metrics["approx_kl"]) < 1e-12
    # The sampler's own log-probs agree with the training forward pass too.
    assert float(metrics["sampler_logprob_gap"]) < 1e-5


@pytest.mark.parametrize("value", ["model", "shared", "none"])
def test_sampler_logprobs_skip_the_policy_pass_and_match_it(value):
    """``old_logprobs="sampler"``: the same experience as the forward pass to float32 rounding
    (the values too: with a shared head they come from the bare trunk), and no metric that
    needs the policy's logits."""
    advantage = "reinforce_pp" if value == "none" else "gae"
    experiences = {}
    for mode in ("forward", "sampler"):
        ppo = PPOConfig(minibatches=1, advantage=advantage, old_logprobs=mode)
        state, reference, rollout, _, _ = setup(ppo, shared=value == "shared")
        params = state.train.params
        if value == "shared":  # a random head, so that the values are not all 0
            params = dict(params, value=dict(kernel=jax.random.normal(jax.random.key(3), (
                CONFIG.d_model,)), bias=jnp.float32(0.5)))
        ids, mask = prompts()
        experiences[mode], metrics = rollout(params, reference, None, ids, mask,
                                             jax.random.key(0), state.kl_coef)
        assert ("entropy" in metrics) == (mode == "forward")
    forward, sampler = experiences["forward"], experiences["sampler"]
    np.testing.assert_array_equal(forward.response, sampler.response)
    valid = np.asarray(forward.response_mask) > 0
    assert valid.sum() > 100
    for field in ("logprobs", "values", "rewards", "advantages", "returns"):
        a, b = np.asarray(getattr(forward, field)), np.asarray(getattr(sampler, field))
        np.testing.assert_allclose(b[valid], a[valid], atol=1e-5, err_msg=field)
    if value != "none":
        assert np.abs(np.asarray(sampler.values)[valid]).max() > 0.1


def test_ppo_raises_a_known_reward_and_a_large_kl_coef_holds_it_back():
    free, reference, rollout, update, _ = setup(PPOConfig(minibatches=2, kl=KLController(0.05)))
    _, learned = run(free, reference, rollout, update, 30)
    first, last = learned[0], learned[-1]
    assert first["score"] < 0.5 and last["score"] > 8.0, (first["score"], last["score"])
    # KL is bounded by what the reward pays for it: the shaped return stays positive.
    assert 0.0 < last["kl"] < last["score"] / 0.05
    held, reference, rollout, update, _ = setup(PPOConfig(minibatches=2, kl=KLController(3.0)))
    _, leashed = run(held, reference, rollout, update, 30)
    # Same steps with β = 3: the policy stays close to the reference (a few % of the free KL).
    assert leashed[-1]["kl"] < 0.1 * last["kl"] and leashed[-1]["score"] < 0.2 * last["score"], (
        leashed[-1]["kl"], last["kl"], leashed[-1]["score"], last["score"])


@pytest.mark.parametrize("advantage,k", [("rloo", 4), ("grpo", 4), ("reinforce_pp", 1)])
def test_critic_free_estimators_raise_a_known_reward_without_a_value_function(advantage, k):
    """16 episodes (16/k prompts × k samples), no value params at all; the score climbs as
    GAE's does in the test above."""
    ppo = PPOConfig(minibatches=2, kl=KLController(0.05), advantage=advantage,
                    samples_per_prompt=k, loss_aggregation="sequence" if k > 1 else "token")
    state, reference, rollout, update, _ = setup(ppo)
    assert set(state.train.params) == {"policy"}
    _, learned = run(state, reference, rollout, update, 30)
    assert learned[0]["score"] < 0.5 and learned[-1]["score"] > 4.0, (
        learned[0]["score"], learned[-1]["score"])


def test_a_critic_free_estimator_refuses_a_value_function():
    sampling = SamplingConfig(max_new_tokens=4, stop_tokens=(EOS,), pad_token=EOS)
    with pytest.raises(ValueError, match="has no value function"):
        Rollout(ActorCritic(CausalLM(CONFIG)), CausalLM(CONFIG), token_count_fn(TOKEN),
                PPOConfig(advantage="rloo", samples_per_prompt=2), sampling)
    with pytest.raises(ValueError, match="samples_per_prompt=1 must be >= 2"):
        PPOConfig(advantage="grpo")


def pretraining_rows(seed, rows=32, row_len=32):
    rng = np.random.RandomState(seed)
    # Text the policy can learn: a repeating byte pattern with a random phase.
    examples = []
    for _ in range(rows):
        start = rng.randint(0, 5)
        ids = tuple(int(40 + (start + i) % 5) for i in range(row_len))
        examples.append(Example(ids, (1,) * row_len))
    return {k: jnp.asarray(v) for k, v in pack(examples, row_len).items()}


def held_out_loss(params, rows):
    logits = CausalLM(CONFIG).apply({"params": params}, rows["tokens"],
                                    segment_ids=rows["segment_ids"])
    total, count = next_token_loss(logits, rows["tokens"], rows["loss_mask"])
    return float(total / count)


def test_ptx_term_limits_the_rise_of_the_pretraining_loss():
    ptx_rows, held_out = pretraining_rows(0), pretraining_rows(1)
    losses = {}
    for coef in (0.0, 1.0):
        ppo = PPOConfig(minibatches=2, kl=KLController(0.01), ptx_coef=coef)
        state, reference, rollout, update, _ = setup(ppo, lr=3e-3)
        before = held_out_loss(state.train.params["policy"], held_out)
        state, _ = run(state, reference, rollout, update, 15, ptx_rows if coef else None)
        losses[coef] = held_out_loss(state.train.params["policy"], held_out) - before
    assert losses[1.0] < losses[0.0] - 0.1, losses
