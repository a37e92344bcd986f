"""The DPO family's losses against plain NumPy loops, on fractional numbers with ragged K."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.rl.preference import (LOSSES, pairwise_loss, plackett_luce_loss,
                                    preference_loss)

KS = (2, 3, 4, 1)  # responses per prompt; the last prompt has no pair
K_MAX = 5
BETA = 0.7


def ragged(ks=KS, k_max=K_MAX, seed=0):
    """``(logratios, rank, valid, orders)``: ``orders[b]`` lists prompt b's responses best
    first; padding holds large garbage and has rank K_max."""
    rng = np.random.default_rng(seed)
    logratios = rng.normal(0.3, 1.5, (len(ks), k_max)).astype(np.float32)
    rank = np.full((len(ks), k_max), k_max, np.int32)
    valid = np.zeros((len(ks), k_max), bool)
    orders = []
    for b, k in enumerate(ks):
        order = rng.permutation(k)
        orders.append(order)
        rank[b, order] = np.arange(k)
        valid[b, :k] = True
        logratios[b, k:] = rng.normal(0, 40.0, k_max - k)
    return logratios, rank, valid, orders


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def numpy_pairwise(logratios, orders, beta, loss, eps=0.0):
    """``(loss_sum, prompts, pairs, correct_pairs, margin_sum)`` by a loop over the pairs."""
    loss_sum, prompts, pairs, correct, margin_sum = 0.0, 0, 0, 0, 0.0
    for b, order in enumerate(orders):
        if len(order) < 2:
            continue
        prompts += 1
        total = 0.0
        for w, l in itertools.combinations(order, 2):  # w is ranked first
            h = float(logratios[b, w]) - float(logratios[b, l])
            if loss == "ipo":
                total += (h - 1 / (2 * beta)) ** 2
            else:
                smoothing = eps if loss == "cdpo" else 0.0
                total += (-(1 - smoothing) * log_sigmoid(beta * h)
                          - smoothing * log_sigmoid(-beta * h))
            pairs += 1
            correct += beta * h > 0
            margin_sum += beta * h
        loss_sum += total / math.comb(len(order), 2)
    return loss_sum, prompts, pairs, correct, margin_sum


def numpy_plackett_luce(logratios, orders, beta):
    """Σ_x loss(x): walks each ranking, taking the log-probability of each choice among the
    responses not yet chosen."""
    loss_sum = 0.0
    for b, order in enumerate(orders):
        if len(order) < 2:
            continue
        rewards = [beta * float(logratios[b, i]) for i in order]
        log_likelihood = 0.0
        for j in range(len(order) - 1):
            left = rewards[j:]
            log_likelihood += rewards[j] - math.log(sum(math.exp(r) for r in left))
        loss_sum -= log_likelihood / (len(order) - 1)
    return loss_sum


def as_jax(logratios, rank, valid):
    return jnp.asarray(logratios), jnp.asarray(rank), jnp.asarray(valid)


@pytest.mark.parametrize("loss,eps", [("dpo", 0.0), ("ipo", 0.0), ("cdpo", 0.2)])
def test_pairwise_losses_and_metrics_equal_a_loop_over_pairs(loss, eps):
    logratios, rank, valid, orders = ragged()
    loss_sum, prompts, metrics = preference_loss(*as_jax(logratios, rank, valid), BETA, loss, eps)
    want, want_prompts, pairs, correct, margin_sum = numpy_pairwise(logratios, orders, BETA,
                                                                    loss, eps)
    np.testing.assert_allclose(float(loss_sum), want, rtol=1e-5)
    assert float(prompts) == want_prompts == 3
    assert float(metrics["pairs"]) == pairs == 1 + 3 + 6
    assert float(metrics["correct_pairs"]) == correct and 0 < correct < pairs
    np.testing.assert_allclose(float(metrics["margin_sum"]), margin_sum, rtol=1e-5)
    assert all(v.dtype == jnp.float32 for v in (loss_sum, prompts, *metrics.values()))


def test_plackett_luce_equals_a_walk_down_each_ranking():
    logratios, rank, valid, orders = ragged(seed=1)
    loss_sum, prompts, metrics = preference_loss(*as_jax(logratios, rank, valid), BETA,
                                                 "plackett_luce")
    np.testing.assert_allclose(float(loss_sum), numpy_plackett_luce(logratios, orders, BETA),
                               rtol=1e-5)
    _, want_prompts, pairs, correct, margin_sum = numpy_pairwise(logratios, orders, BETA, "dpo")
    assert float(prompts) == want_prompts == 3
    assert float(metrics["pairs"]) == pairs
    assert float(metrics["correct_pairs"]) == correct
    np.testing.assert_allclose(float(metrics["margin_sum"]), margin_sum, rtol=1e-5)


def test_plackett_luce_for_two_responses_is_dpo():
    batch = as_jax(*ragged(ks=(2, 2, 1, 2), k_max=3, seed=2)[:3])
    pl, pl_prompts, pl_metrics = plackett_luce_loss(*batch, BETA)
    dpo, dpo_prompts, dpo_metrics = pairwise_loss(*batch, BETA, "dpo")
    np.testing.assert_allclose(float(pl), float(dpo), rtol=1e-6)
    assert float(pl_prompts) == float(dpo_prompts) == 3
    assert {k: float(v) for k, v in pl_metrics.items()} == {
        k: float(v) for k, v in dpo_metrics.items()}


def test_cdpo_without_label_smoothing_is_dpo():
    batch = as_jax(*ragged(seed=3)[:3])
    cdpo = pairwise_loss(*batch, BETA, "cdpo", label_smoothing=0.0)[0]
    smoothed = pairwise_loss(*batch, BETA, "cdpo", label_smoothing=0.1)[0]
    dpo = pairwise_loss(*batch, BETA, "dpo")[0]
    np.testing.assert_allclose(float(cdpo), float(dpo), rtol=1e-7)
    assert abs(float(smoothed) - float(dpo)) > 1e-3


def test_dpo_limits_large_beta_is_a_hinge_and_small_beta_is_log_two():
    logratios, rank, valid, orders = ragged(seed=4)
    hinge = 0.0
    for b, order in enumerate(orders):
        if len(order) >= 2:
            gaps = [max(0.0, float(logratios[b, l]) - float(logratios[b, w]))
                    for w, l in itertools.combinations(order, 2)]
            hinge += sum(gaps) / len(gaps)
    assert hinge > 0.1
    large = 1e4
    loss_sum = pairwise_loss(*as_jax(logratios, rank, valid), large, "dpo")[0]
    np.testing.assert_allclose(float(loss_sum) / large, hinge, rtol=1e-4, atol=1e-4)
    loss_sum, prompts, _ = pairwise_loss(*as_jax(logratios, rank, valid), 1e-6, "dpo")
    np.testing.assert_allclose(float(loss_sum), float(prompts) * math.log(2), rtol=1e-5)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_equal_central_differences_of_the_float64_loop(loss):
    logratios, rank, valid, orders = ragged(seed=5)
    eps = 0.2 if loss == "cdpo" else 0.0

    def reference(x):
        if loss == "plackett_luce":
            return numpy_plackett_luce(x, orders, BETA)
        return numpy_pairwise(x, orders, BETA, loss, eps)[0]

    fn = jax.jit(lambda x, beta: preference_loss(x, jnp.asarray(rank), jnp.asarray(valid), beta,
                                                 loss, eps)[0])
    grad = np.asarray(jax.grad(fn)(jnp.asarray(logratios), jnp.float32(BETA)))
    x = logratios.astype(np.float64)
    step = 1e-5
    want = np.zeros_like(x)
    for b, i in zip(*np.nonzero(valid)):
        up, down = x.copy(), x.copy()
        up[b, i] += step
        down[b, i] -= step
        want[b, i] = (reference(up) - reference(down)) / (2 * step)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
    assert np.abs(want[valid]).max() > 0.05


@pytest.mark.parametrize("loss", LOSSES)
def test_padding_gets_finite_zero_gradients_and_changes_nothing(loss):
    logratios, rank, valid, _ = ragged(seed=6)
    clean = np.where(valid, logratios, 0.0).astype(np.float32)
    garbage = clean.copy()
    garbage[~valid] = np.resize(np.float32([np.nan, np.inf, -np.inf, 1e30, -3.7]),
                                (~valid).sum())
    low_rank = np.where(valid, rank, 0)  # padding's rank does not matter either

    def value_and_grad(x, rank):
        loss_of = lambda d: preference_loss(d, jnp.asarray(rank), jnp.asarray(valid), BETA,
                                            loss, 0.1)[0]
        return jax.value_and_grad(loss_of)(jnp.asarray(x))

    value, grad = value_and_grad(garbage, low_rank)
    with jax.debug_nans(True):  # not even inside the backward pass
        want_value, want_grad = value_and_grad(clean, rank)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[~valid] == 0)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6)
    assert np.abs(np.asarray(grad)).max() > 0.01


def test_a_tie_is_not_a_correct_pair():
    batch = as_jax(np.float32([[0.25, 0.25, -0.5]]), np.int32([[0, 1, 2]]), np.ones((1, 3), bool))
    for loss in LOSSES:
        metrics = preference_loss(*batch, BETA, loss)[2]
        assert (float(metrics["pairs"]), float(metrics["correct_pairs"])) == (3.0, 2.0)
        np.testing.assert_allclose(float(metrics["margin_sum"]), BETA * 1.5, rtol=1e-6)


def test_unknown_loss_names_raise():
    batch = as_jax(*ragged()[:3])
    with pytest.raises(ValueError, match="plackett_luce"):
        preference_loss(*batch, BETA, "kto")
    with pytest.raises(ValueError, match="ipo"):
        pairwise_loss(*batch, BETA, "plackett_luce")
