"""The SFT and K-wise ranking losses against plain NumPy loops on fractional numbers."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.rl.ranking import kwise_ranking_loss
from rlhf_jax.rl.supervised import next_token_loss


def test_kwise_loss_equals_brute_force_over_all_pairs():
    rng = np.random.RandomState(0)
    ks = [2, 4, 9, 5, 1]  # variable K in one batch; the last prompt has no pair
    k_max = max(ks)
    rewards = rng.normal(0, 1.7, (len(ks), k_max)).astype(np.float32)  # fractional
    rank = np.full((len(ks), k_max), 99, np.int32)
    valid = np.zeros((len(ks), k_max), bool)
    orders = []
    for b, k in enumerate(ks):
        order = rng.permutation(k)  # response order[0] is best
        orders.append(order)
        rank[b, order] = np.arange(k)
        valid[b, :k] = True
    loss_sum, count, metrics = kwise_ranking_loss(jnp.asarray(rewards), jnp.asarray(rank),
                                                  jnp.asarray(valid))

    expected, prompts, correct, pairs = 0.0, 0, 0, 0
    for b, k in enumerate(ks):
        if k < 2:
            continue
        prompts += 1
        total = 0.0
        for better, worse in itertools.combinations(orders[b], 2):  # better is ranked first
            diff = float(rewards[b, better]) - float(rewards[b, worse])
            total += -math.log(1 / (1 + math.exp(-diff)))
            correct += diff > 0
            pairs += 1
        expected += total / math.comb(k, 2)
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-5)
    assert float(count) == prompts == 4
    assert float(metrics["pairs"]) == pairs == 1 + 6 + 36 + 10
    assert float(metrics["correct_pairs"]) == correct


def test_kwise_loss_ignores_padded_responses():
    rewards = jnp.asarray([[0.3, -1.2, 55.0, -70.0]])
    rank = jnp.asarray([[1, 0, 2, 3]])
    padded = kwise_ranking_loss(rewards, rank, jnp.asarray([[True, True, False, False]]))
    alone = kwise_ranking_loss(rewards[:, :2], rank[:, :2], jnp.asarray([[True, True]]))
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-6)
    np.testing.assert_allclose(float(padded[0]), math.log(1 + math.exp(-(-1.2 - 0.3))), rtol=1e-6)


def test_next_token_loss_equals_per_example_numpy():
    rng = np.random.RandomState(1)
    b, t, v = 3, 7, 11
    logits = rng.normal(0, 2.3, (b, t, v)).astype(np.float32)
    tokens = rng.randint(0, v, (b, t))
    mask = (rng.uniform(size=(b, t)) < 0.6).astype(np.int32)
    loss_sum, count = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask))
    expected, n = 0.0, 0
    for row in range(b):
        for pos in range(1, t):
            if mask[row, pos]:
                z = logits[row, pos - 1].astype(np.float64)
                logp = z[tokens[row, pos]] - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
                expected -= logp
                n += 1
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-5)
    assert float(count) == n


def test_next_token_loss_gradient_is_softmax_minus_onehot():
    logits = jax.random.normal(jax.random.key(0), (1, 2, 5))
    tokens = jnp.asarray([[0, 3]])
    grad = jax.grad(lambda z: next_token_loss(z, tokens, jnp.ones((1, 2)))[0])(logits)
    expected = jax.nn.softmax(logits[0, 0]) - jax.nn.one_hot(3, 5)
    np.testing.assert_allclose(grad[0, 0], expected, atol=1e-6)
    assert np.all(np.asarray(grad[0, 1]) == 0)
