"""The critic-free estimators against plain NumPy loops, on fractional numbers with ragged masks."""

import numpy as np
import pytest

from rlhf_jax.rl.advantages import (CRITIC_FREE, ESTIMATORS, GROUPED, grpo_advantages,
                                    reinforce_pp_advantages, rloo_advantages, sequence_returns,
                                    token_advantages)

N = 6
LENGTHS = (6, 3, 0, 1, 4)  # one response with no valid token
GROUPS = 3


def ragged():
    rng = np.random.default_rng(0)
    mask = (np.arange(N)[None, :] < np.array(LENGTHS)[:, None]).astype(np.float32)
    rewards = rng.normal(size=mask.shape).astype(np.float32) * 1.3 + 0.37  # junk on padding too
    return rng, mask, rewards


def grouped_returns(k, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=GROUPS * k).astype(np.float32) * 1.7 + 0.29


@pytest.mark.parametrize("k", [2, 3, 4])
def test_rloo_matches_a_loop(k):
    returns = grouped_returns(k)
    want = np.zeros_like(returns)
    for g in range(GROUPS):
        for i in range(g * k, (g + 1) * k):
            others = [returns[j] for j in range(g * k, (g + 1) * k) if j != i]
            want[i] = returns[i] - sum(others) / (k - 1)
    adv = np.asarray(rloo_advantages(returns, k))
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
    groups = returns.reshape(GROUPS, k)
    np.testing.assert_allclose(adv.reshape(GROUPS, k).sum(1), 0, atol=1e-5)
    scaled = k / (k - 1) * (groups - groups.mean(1, keepdims=True))
    np.testing.assert_allclose(adv, scaled.ravel(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_grpo_matches_a_loop(k):
    returns = grouped_returns(k)
    want = np.zeros_like(returns)
    for g in range(GROUPS):
        group = [float(r) for r in returns[g * k:(g + 1) * k]]
        mean = sum(group) / k
        std = (sum((r - mean) ** 2 for r in group) / (k - 1)) ** 0.5
        for i in range(k):
            want[g * k + i] = (group[i] - mean) / (std + 1e-4)
    adv = np.asarray(grpo_advantages(returns, k)).reshape(GROUPS, k)
    np.testing.assert_allclose(adv.ravel(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(adv.std(1, ddof=1), 1, rtol=1e-3)


def test_a_constant_group_gets_zero_advantage():
    returns = np.array([0.83, 0.83, 0.83, -1.1, 0.4, 2.35], np.float32)
    grpo = np.asarray(grpo_advantages(returns, 3))
    assert np.all(np.isfinite(grpo))
    np.testing.assert_array_equal(grpo[:3], 0.0)
    assert np.all(grpo[3:] != 0)
    np.testing.assert_array_equal(np.asarray(rloo_advantages(returns, 3))[:3], 0.0)


@pytest.mark.parametrize("estimator", [rloo_advantages, grpo_advantages])
def test_grouped_estimators_need_k_samples(estimator):
    returns = np.array([0.5, -0.25, 1.5, 0.75], np.float32)
    with pytest.raises(ValueError, match="k >= 2"):
        estimator(returns, 1)
    with pytest.raises(ValueError, match="multiple of k"):
        estimator(returns, 3)


def numpy_returns_to_go(rewards, lengths, gamma):
    out = np.zeros_like(rewards)
    for b, length in enumerate(lengths):
        for t in range(length):
            out[b, t] = sum(gamma ** (s - t) * rewards[b, s] for s in range(t, length))
    return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_a_loop(gamma):
    _, mask, rewards = ragged()
    adv = np.asarray(reinforce_pp_advantages(rewards, mask, gamma))
    g = numpy_returns_to_go(rewards, LENGTHS, gamma)
    valid = g[mask > 0]
    want = np.where(mask > 0, (g - valid.mean()) / np.sqrt(valid.var() + 1e-8), 0)
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv[mask > 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(adv[mask > 0].var(), 1, rtol=1e-4)
    np.testing.assert_array_equal(adv[mask == 0], 0.0)


def test_sequence_returns_and_token_advantages_match_a_loop():
    rng, mask, rewards = ragged()
    want = np.array([sum(rewards[b, t] for t in range(length))
                     for b, length in enumerate(LENGTHS)], np.float32)
    np.testing.assert_allclose(sequence_returns(rewards, mask), want, rtol=1e-5, atol=1e-6)
    adv = rng.normal(size=len(LENGTHS)).astype(np.float32) + 0.61
    want = np.zeros_like(rewards)
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            want[b, t] = adv[b]
    np.testing.assert_array_equal(token_advantages(adv, mask), want)


def test_estimator_names():
    assert ESTIMATORS == ("gae", "rloo", "grpo", "reinforce_pp")
    assert CRITIC_FREE == tuple(e for e in ESTIMATORS if e != "gae")
    assert GROUPED == ("rloo", "grpo")
