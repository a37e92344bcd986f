"""PPO's maths against plain NumPy loops, on fractional numbers with ragged response masks."""

import numpy as np
import pytest

from rlhf_jax.rl.advantages import explained_variance, gae, whiten
from rlhf_jax.rl.kl import KLController, entropy, exact_kl, kl_estimate
from rlhf_jax.rl.ppo import policy_loss, value_loss
from rlhf_jax.rl.rewards import final_scores, kl_shaped_rewards
from rlhf_jax.train.ppo import token_weights

B, N = 4, 7
LENGTHS = (7, 3, 1, 5)


def ragged():
    rng = np.random.default_rng(0)
    mask = (np.arange(N)[None, :] < np.array(LENGTHS)[:, None]).astype(np.float32)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32) * 1.3 + 0.37
    return rng, mask, f


def numpy_gae(rewards, values, lengths, gamma, lam):
    adv, ret = np.zeros_like(rewards), np.zeros_like(rewards)
    for b, length in enumerate(lengths):
        running = 0.0
        for t in reversed(range(length)):
            next_value = values[b, t + 1] if t + 1 < length else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            ret[b, t] = running + values[b, t]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.7)])
def test_gae_and_returns_match_a_loop(gamma, lam):
    _, mask, f = ragged()
    rewards, values = f(B, N), f(B, N)
    adv, ret = gae(rewards * mask, values, mask, gamma, lam)
    want_adv, want_ret = numpy_gae(rewards * mask, values, LENGTHS, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_whitening_over_valid_tokens():
    _, mask, f = ragged()
    x = f(B, N)
    valid = x[mask > 0]
    want = (x - valid.mean()) / np.sqrt(valid.var() + 1e-8)
    np.testing.assert_allclose(whiten(x, mask), np.where(mask > 0, want, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(whiten(x, mask, shift_mean=False),
                               np.where(mask > 0, want + valid.mean(), 0), rtol=1e-5, atol=1e-5)


def test_kl_shaped_rewards_match_a_loop():
    _, mask, f = ragged()
    logp, ref, scores, beta = f(B, N), f(B, N), f(B), 0.137
    stopped = np.array([True, False, True, True])
    final = final_scores(scores, stopped, missing_stop_penalty=0.75)
    rewards, kl = kl_shaped_rewards(final, logp, ref, mask, beta)
    want = np.zeros((B, N), np.float32)
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            want[b, t] = -beta * (logp[b, t] - ref[b, t])
        want[b, length - 1] += scores[b] - (0.0 if stopped[b] else 0.75)
    np.testing.assert_allclose(rewards, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl, (logp - ref) * mask, rtol=1e-6)


def test_score_whitening_is_over_the_batch():
    scores = np.array([0.3, 1.7, -0.4, 2.25], np.float32)
    out = final_scores(scores, np.ones(4, bool), whiten_scores=True)
    np.testing.assert_allclose(out, (scores - scores.mean()) / np.sqrt(scores.var() + 1e-8),
                               rtol=1e-5)


def test_kl_estimators_and_exact_kl_and_entropy():
    rng = np.random.default_rng(1)
    logits, ref_logits = rng.normal(size=(3, 11)), rng.normal(size=(3, 11))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref_logp = ref_logits - np.log(np.exp(ref_logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(exact_kl(logits, ref_logits),
                               (np.exp(logp) * (logp - ref_logp)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(entropy(logits), -(np.exp(logp) * logp).sum(-1), rtol=1e-5)
    r = rng.normal(size=(5,)).astype(np.float32)
    np.testing.assert_allclose(kl_estimate(r, "k1"), r)
    np.testing.assert_allclose(kl_estimate(r, "k2"), 0.5 * r ** 2, rtol=1e-6)
    np.testing.assert_allclose(kl_estimate(r, "k3"), np.exp(-r) - 1 + r, rtol=1e-5, atol=1e-6)
    # Each estimator's mean over samples from π approaches the exact KL.
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    draws = rng.choice(3, size=200_000, p=p)
    log_ratio = np.log(p[draws]) - np.log(q[draws])
    for name in ("k1", "k3"):
        assert abs(float(np.mean(kl_estimate(log_ratio, name))) - np.sum(p * np.log(p / q))) < 5e-3


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_policy_loss_matches_a_loop(aggregation):
    """Per token, or (GRPO's sequence aggregation) each response's tokens averaged first."""
    _, mask, f = ragged()
    logp, old, adv = f(B, N) * 0.3, f(B, N) * 0.3, f(B, N)
    eps = 0.2
    weights = token_weights(mask, aggregation)
    total, metrics = policy_loss(logp, old, adv, mask, eps, weights)
    want, clipped, approx, dev = 0.0, 0.0, 0.0, 0.0
    for b, length in enumerate(LENGTHS):
        w = 1.0 if aggregation == "token" else 1.0 / length
        for t in range(length):
            ratio = np.exp(logp[b, t] - old[b, t])
            a = -adv[b, t] * ratio
            c = -adv[b, t] * min(max(ratio, 1 - eps), 1 + eps)
            want += w * max(a, c)
            clipped += w * (c > a)
            approx += w * (ratio - 1 - np.log(ratio))
            dev += w * abs(ratio - 1)
    np.testing.assert_allclose(total, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["clipped"], clipped, rtol=1e-6)
    assert 0 < clipped < sum(LENGTHS)
    np.testing.assert_allclose(metrics["approx_kl"], approx, rtol=1e-4)
    np.testing.assert_allclose(metrics["ratio_dev"], dev, rtol=1e-5)


def test_value_loss_matches_a_loop():
    _, mask, f = ragged()
    values, old, returns = f(B, N), f(B, N), f(B, N)
    eps = 0.2
    total, metrics = value_loss(values, old, returns, mask, eps)
    want, clipped = 0.0, 0
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            v_clip = old[b, t] + min(max(values[b, t] - old[b, t], -eps), eps)
            e1, e2 = (values[b, t] - returns[b, t]) ** 2, (v_clip - returns[b, t]) ** 2
            want += 0.5 * max(e1, e2)
            clipped += e2 > e1
    np.testing.assert_allclose(total, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["value_clipped"], clipped)


def test_explained_variance():
    _, mask, f = ragged()
    values, returns = f(B, N), f(B, N)
    v, r = values[mask > 0], returns[mask > 0]
    np.testing.assert_allclose(explained_variance(values, returns, mask),
                               1 - np.var(r - v) / np.var(r), rtol=1e-5)


def test_kl_controllers():
    fixed = KLController(0.1)
    assert float(fixed.update(0.1, 5.0, 64)) == pytest.approx(0.1)
    adaptive = KLController(0.1, target=6.0, horizon=10000)
    # KL far above target: the error clips at +0.2.
    assert float(adaptive.update(0.1, 60.0, 512)) == pytest.approx(0.1 * (1 + 0.2 * 512 / 10000))
    assert float(adaptive.update(0.1, 4.5, 512)) == pytest.approx(0.1 * (1 - 0.2 * 512 / 10000))
    assert float(adaptive.update(0.1, 6.6, 100)) == pytest.approx(0.1 * (1 + 0.1 * 100 / 10000))
    with pytest.raises(ValueError, match="target"):
        KLController(0.1, target=-1.0)
