"""The DPO step on the tiny model: log-probs against a NumPy loop, the gradient against finite
differences, the prompt-once layout against whole rows, exact microbatching, and learning the
labelled order."""

import functools

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from configs.models import get_config
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.train.dpo import DPOConfig, dpo_loss_terms, dpo_step, response_logprobs

CONFIG = ModelConfig.from_dict(dict(get_config("tiny")))
B, K, T = 4, 3, 12
LENGTHS = ((12, 9, 7), (10, 12, 8), (6, 11, 9), (9, 7, 0))  # prompt + response; 0: no response
PROMPT = 5  # the first 5 tokens of every row are the prompt


def batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, (B, K, T)).astype(np.int32)
    length = np.array(LENGTHS)[..., None]
    mask = (np.arange(T) < length).astype(np.int32)
    response_mask = mask * (np.arange(T) >= PROMPT)
    valid = np.array(LENGTHS) > 0
    rank = np.stack([rng.permutation(K) for _ in range(B)]).astype(np.int32)
    rank[3] = (1, 0, K)  # K = 2, the third response padding
    return dict(tokens=np.where(mask > 0, tokens, 0), mask=mask, response_mask=response_mask,
                rank=rank, valid=valid,
                ref_logprobs=(rng.normal(size=(B, K)) * 3 - 30).astype(np.float32))


def params(seed=0):
    x = np.zeros((1, 8), np.int32)
    return nn.meta.unbox(CausalLM(CONFIG).init(jax.random.key(seed), x)["params"])


def test_response_logprobs_equal_a_loop_over_unpadded_rows():
    b, p, model = batch(), params(), CausalLM(CONFIG)
    got = response_logprobs(model, p, b)
    for i in range(B):
        for k in range(K):
            n = LENGTHS[i][k]
            want = 0.0
            if n:
                row = b["tokens"][i, k, :n][None]
                logits = np.asarray(model.apply({"params": p}, row)[0], np.float64)
                logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)),
                                              -1, keepdims=True)) - logits.max(-1, keepdims=True)
                want = sum(logp[t - 1, row[0, t]] for t in range(PROMPT, n))
            np.testing.assert_allclose(got[i, k], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss", ["dpo", "plackett_luce"])
def test_gradient_matches_central_differences(loss):
    """The step's gradient (through the model) along a random direction of all parameters."""
    b, p, model = batch(), params(), CausalLM(CONFIG)
    config = DPOConfig(beta=0.5, loss=loss)

    def mean_loss(q):
        total, prompts, _ = dpo_loss_terms(model, config, q, b, None)
        return total / prompts

    grad = jax.grad(mean_loss)(p)
    leaves, tree = jax.tree.flatten(grad)
    rng = np.random.default_rng(1)
    unit = lambda xs: [x / np.sqrt(sum(np.sum(np.square(y)) for y in xs)) for x in xs]
    # Half along the gradient (a signal well above float32 rounding), half a random direction.
    direction = [g + r for g, r in zip(unit([np.asarray(g, np.float64) for g in leaves]),
                                       unit([rng.normal(size=g.shape) for g in leaves]))]
    direction = jax.tree.unflatten(tree, [d.astype(np.float32) for d in direction])
    analytic = sum(float(np.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad),
                                                        jax.tree.leaves(direction)))
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda x, d: x + s * eps * d, p, direction)
    numeric = (float(mean_loss(shifted(1))) - float(mean_loss(shifted(-1)))) / (2 * eps)
    np.testing.assert_allclose(numeric, analytic, rtol=1e-3)


def test_prompt_once_layout_gives_the_whole_rows_log_probs_loss_and_gradient():
    """Each prompt computed once (``comparison_batch`` with a ``prompt_len``) scores the same
    responses as the whole rows when they share their prompt: the log-probs, the loss and its
    gradient, with a response that is padding (row 3) and one that fills the row."""
    rows, p, model = batch(), params(), CausalLM(CONFIG)
    rows["tokens"][:, :, :PROMPT] = rows["tokens"][:, :1, :PROMPT]  # one prompt per row
    once = dict(rows, prompt=rows["tokens"][:, 0, :PROMPT],
                prompt_mask=np.ones((B, PROMPT), np.int32),
                **{k: rows[k][:, :, PROMPT:] for k in ("tokens", "mask", "response_mask")})
    np.testing.assert_allclose(response_logprobs(model, p, once),
                               response_logprobs(model, p, rows), rtol=1e-5, atol=1e-4)
    config = DPOConfig(beta=0.5)
    (loss_once, grad_once), (loss_rows, grad_rows) = (
        jax.value_and_grad(lambda q, b=b: dpo_loss_terms(model, config, q, b, None)[0])(p)
        for b in (once, rows))
    np.testing.assert_allclose(loss_once, loss_rows, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, atol=1e-5 * max(1.0, float(np.max(np.abs(b))))), grad_once, grad_rows)


def make_state(p, tx):
    return TrainState.create(apply_fn=None, params=p, tx=tx)


def test_microbatches_give_the_same_update():
    b, model, config = batch(), CausalLM(CONFIG), DPOConfig(beta=0.2)
    results = []
    for microbatches in (1, 2):
        step = jax.jit(functools.partial(dpo_step, model=model, config=config,
                                         microbatches=microbatches))
        # plain SGD: the update is the gradient itself (Adam would magnify rounding in tiny ones)
        results.append(step(make_state(params(), optax.sgd(1.0)), b, jax.random.key(0)))
    (one, m1), (two, m2) = results
    for key in ("loss", "accuracy", "margin", "chosen_logprob", "rejected_logprob"):
        np.testing.assert_allclose(m1[key], m2[key], rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_steps_learn_the_labelled_order():
    """On a fixed batch the implicit rewards come to rank every pair as labelled."""
    b, model = batch(), CausalLM(CONFIG)
    step = jax.jit(functools.partial(dpo_step, model=model, config=DPOConfig(beta=0.1)))
    state = make_state(params(), optax.adam(3e-3))
    state, first = step(state, b, jax.random.key(0))
    for i in range(30):
        state, last = step(state, b, jax.random.key(i + 1))
    assert float(first["loss"]) > 0.6 and float(last["loss"]) < 0.2, (first["loss"], last["loss"])
    assert float(last["accuracy"]) == 1.0 and float(last["margin"]) > float(first["margin"]) + 1
