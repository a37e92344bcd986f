"""Comparison records become the reward step's arrays; centering makes demonstrations score 0."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.models import get_config
from rlhf_jax.checkpoints import load_tokenizer, smollm2_path
from rlhf_jax.data.collate import comparison_batch, demonstration_examples
from rlhf_jax.data.records import Comparison, Demonstration
from rlhf_jax.data.tokenize import encode
from rlhf_jax.models import ModelConfig, ScalarHeadModel
from rlhf_jax.train.reward import center_reward, score_responses


@functools.lru_cache(maxsize=None)
def tokenizer():
    return load_tokenizer(smollm2_path())


def test_comparison_batch_layout():
    comps = [Comparison("Pick one.", ("a", "bb", "ccc"), (2, 0, 1)),
             Comparison("Again.", ("x", "y"), (1, 0))]
    batch = comparison_batch(tokenizer(), comps, max_len=64, k_max=4, chat=True)
    assert batch["tokens"].shape == (2, 4, 64)
    np.testing.assert_array_equal(batch["valid"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(batch["rank"][0, :3], [1, 2, 0])  # response 2 is best
    np.testing.assert_array_equal(batch["rank"][1, :2], [1, 0])
    head, tail = encode(tokenizer(), "Pick one.", "bb", chat=True)
    n = len(head) + len(tail)
    np.testing.assert_array_equal(batch["tokens"][0, 1, :n], head + tail)
    assert batch["mask"][0, 1].sum() == n and batch["mask"][0, 3].sum() == 0


def test_prompt_once_layout_holds_the_rows_tokens_and_cuts_each_part_apart():
    """Prompt once (left-padded) + each response alone give the tokens of the rows layout when
    nothing is cut; a long prompt keeps its end, a long response its start."""
    comps = [Comparison("Pick one.", ("a", "bb", "ccc"), (2, 0, 1)),
             Comparison("Again, " * 30, ("x", "y " * 60), (1, 0))]
    rows = comparison_batch(tokenizer(), comps[:1], max_len=80, k_max=4, chat=True)
    once = comparison_batch(tokenizer(), comps, max_len=80, k_max=4, chat=True, prompt_len=40)
    assert once["prompt"].shape == (2, 40) and once["tokens"].shape == (2, 4, 40)
    for key in ("rank", "valid"):
        np.testing.assert_array_equal(once[key][:1], rows[key])
    prompt = once["prompt"][0][once["prompt_mask"][0] > 0]
    for i in range(3):
        whole = rows["tokens"][0, i][rows["mask"][0, i] > 0]
        response = once["tokens"][0, i][once["mask"][0, i] > 0]
        np.testing.assert_array_equal(np.concatenate([prompt, response]), whole)
        np.testing.assert_array_equal(once["response_mask"][0, i], once["mask"][0, i])
    head, tail = encode(tokenizer(), comps[1].prompt, comps[1].responses[1], chat=True)
    assert len(head) > 40 and len(tail) > 40
    np.testing.assert_array_equal(once["prompt"][1], head[-40:])
    assert once["prompt_mask"][1].all()
    np.testing.assert_array_equal(once["tokens"][1, 1], tail[:40])


def test_demonstration_examples_mask_the_response_only():
    demos = [Demonstration("Say hi.", "Hi!")]
    (ex,) = demonstration_examples(tokenizer(), demos, max_len=64, chat=True)
    head, tail = encode(tokenizer(), "Say hi.", "Hi!", chat=True)
    assert ex.tokens == tuple(head + tail) and sum(ex.loss_mask) == len(tail)


def test_centering_makes_demonstrations_average_zero():
    config = ModelConfig.from_dict(get_config("tiny"))
    model = ScalarHeadModel(config)
    tokens = jax.random.randint(jax.random.key(0), (5, 1, 12), 1, config.vocab_size)
    mask = jnp.ones_like(tokens)
    params = nn.meta.unbox(model.init(jax.random.key(1), tokens[:, 0])["params"])
    before = score_responses(model, params, tokens, mask)
    centered = center_reward(params, jnp.mean(before))
    after = score_responses(model, centered, tokens, mask)
    assert abs(float(jnp.mean(after))) < 1e-5
    np.testing.assert_allclose(after - before, -jnp.mean(before), atol=1e-5)
