"""Saved models as the evaluation uses them: likelihoods, scores and samples."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import models as presets
from rlhf_jax import parallel
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.scalar_model import save_scalar_model
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.data.tokenize import encode
from rlhf_jax.evaluation.models import Policy, RewardModel
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.parallel import Partitioner


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    config = ModelConfig.from_dict(presets.get_config("tiny"))
    tokenizer = byte_tokenizer()
    ids = jnp.zeros((1, 8), jnp.int32)
    params = nn.meta.unbox(CausalLM(config).init(jax.random.key(0), ids)["params"])
    export_hf(config, params, str(root / "policy"), tokenizer)
    head = nn.meta.unbox(ScalarHeadModel(config).init(jax.random.key(1), ids)["params"])
    save_scalar_model(str(root / "rm"), config, head, {}, tokenizer)
    return root, config, params, head, tokenizer


def test_loglik_is_the_sum_of_continuation_log_probs(saved):
    root, config, params, _, tokenizer = saved
    policy = Policy(str(root / "policy"))
    contexts, continuations = ["The color of snow is", "A", "Q: hi\nA:"], [" white.", "bc", " yo"]
    got = policy.loglik(contexts, continuations, batch_size=2)  # two batches, the last padded
    for context, continuation, value in zip(contexts, continuations, got):
        c = tokenizer(context)["input_ids"]
        x = tokenizer(continuation)["input_ids"]
        logits = CausalLM(config).apply({"params": params}, jnp.array([c + x]))[0]
        logp = jax.nn.log_softmax(logits)
        want = sum(float(logp[len(c) + i - 1, t]) for i, t in enumerate(x))
        assert value == pytest.approx(want, abs=1e-4)


def test_reward_scores_each_pair_as_the_model_does_alone(saved):
    root, config, _, head, tokenizer = saved
    reward = RewardModel(str(root / "rm"), max_len=64)
    prompts, responses = ["[ab] Name two fruits."] * 3, ["Apple, fig.", "No.", "Pear, plum, lime."]
    got = reward.score(prompts, responses, batch_size=2)
    for p, r, value in zip(prompts, responses, got):
        head_ids, tail = encode(tokenizer, p, r, chat=True)
        want = ScalarHeadModel(config).apply({"params": head}, jnp.array([head_ids + tail]))[0]
        assert value == pytest.approx(float(want), abs=1e-5)


def test_samples_are_per_prompt_deterministic_and_cut_at_a_newline(saved):
    root = saved[0]
    policy = Policy(str(root / "policy"))
    kw = dict(max_prompt_len=32, max_new_tokens=12, temperature=1.0, batch_size=4)
    a = policy.sample(["x", "yy", "zzz"], 3, seed=5, chat=True, **kw)
    assert [len(s) for s in a] == [3, 3, 3]
    assert a == policy.sample(["x", "yy", "zzz"], 3, seed=5, chat=True, **kw)
    assert a != policy.sample(["x", "yy", "zzz"], 3, seed=6, chat=True, **kw)
    lines = policy.sample(["Q: a\nA:"] * 8, 2, seed=0, chat=False, line_stop=True, **kw)
    assert all("\n" not in text for group in lines for text in group)


def test_on_a_mesh_the_models_give_what_they_give_on_one_device(saved):
    """Loaded onto a (2, 2, 2) mesh of 8 devices under the fsdp_tp rules, the policy samples the
    same responses (greedy) and the same likelihoods, and the reward model the same scores."""
    root = saved[0]
    mesh = Partitioner(parallel.make_mesh(2, 2, 2), parallel.get_rules("fsdp_tp"))
    one, sharded = Policy(str(root / "policy")), Policy(str(root / "policy"), partitioner=mesh)
    assert "tensor" in str(sharded.params["trunk"]["layers"]["mlp"]["up"]["kernel"].sharding.spec)
    kw = dict(chat=True, max_prompt_len=32, max_new_tokens=8, temperature=0.0, batch_size=4)
    prompts = ["x", "yy", "zzz", "a b", "cd"]  # two batches, the second padded with 3 zero rows
    assert one.sample(prompts, 1, seed=0, **kw) == sharded.sample(prompts, 1, seed=0, **kw)
    contexts, continuations = ["The sky is", "A"], [" blue.", "bc"]
    np.testing.assert_allclose(sharded.loglik(contexts, continuations, batch_size=8),
                               one.loglik(contexts, continuations, batch_size=8), atol=1e-4)
    rm_one = RewardModel(str(root / "rm"), max_len=64)
    rm_sharded = RewardModel(str(root / "rm"), max_len=64, partitioner=mesh)
    np.testing.assert_allclose(rm_sharded.score(prompts, prompts, batch_size=8),
                               rm_one.score(prompts, prompts, batch_size=8), atol=1e-5)
