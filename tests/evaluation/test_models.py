"""Saved models as the evaluation uses them: likelihoods, scores and samples."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import models as presets
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.scalar_model import save_scalar_model
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.data.tokenize import encode
from rlhf_jax.evaluation.models import Policy, RewardModel
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel


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
