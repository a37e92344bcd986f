"""top-k and top-p: sampled frequencies match the truncated, renormalised distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.sampling import SamplingConfig, draw, top_k_filter, top_p_filter

# Sorted masses 0.40, 0.25, 0.20, 0.10, 0.05 (shuffled in the vocabulary). The mass before the
# third token is 0.65, before the fourth 0.85: top_p = 0.7 keeps three tokens, and a filter that
# used the inclusive cumulative mass (0.85 ≥ 0.7 at the third token) would keep only two.
PROBS = np.array([0.10, 0.40, 0.05, 0.20, 0.25])
LOGITS = jnp.log(jnp.asarray(PROBS, jnp.float32))
DRAWS = 40_000


def truncated(keep):
    p = np.where(keep, PROBS, 0.0)
    return p / p.sum()


def frequencies(config):
    logits = jnp.broadcast_to(LOGITS, (DRAWS, len(PROBS)))
    tokens, logp = draw(logits, jax.random.key(0), config)
    return np.bincount(np.asarray(tokens), minlength=len(PROBS)) / DRAWS, np.asarray(tokens), \
        np.asarray(logp)


def assert_matches(freq, expected):
    # Binomial standard error; 5 sigma keeps the false-alarm rate negligible.
    sigma = np.sqrt(expected * (1 - expected) / DRAWS) + 1e-12
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-9), (freq, expected)


@pytest.mark.parametrize("top_p,kept", [(0.7, [1, 3, 4]), (0.6, [1, 4]), (0.3, [1]),
                                        (0.9, [0, 1, 3, 4]), (1.0, [0, 1, 2, 3, 4])])
def test_top_p_frequencies(top_p, kept):
    keep = np.isin(np.arange(5), kept)
    np.testing.assert_array_equal(np.isfinite(np.asarray(top_p_filter(LOGITS, top_p))), keep)
    freq, tokens, logp = frequencies(SamplingConfig(max_new_tokens=1, top_p=top_p))
    expected = truncated(keep)
    assert_matches(freq, expected)
    np.testing.assert_allclose(logp, np.log(expected[tokens]), atol=1e-5)


@pytest.mark.parametrize("k,kept", [(1, [1]), (2, [1, 4]), (3, [1, 3, 4]), (5, [0, 1, 2, 3, 4])])
def test_top_k_frequencies(k, kept):
    keep = np.isin(np.arange(5), kept)
    np.testing.assert_array_equal(np.isfinite(np.asarray(top_k_filter(LOGITS, k))), keep)
    freq, _, _ = frequencies(SamplingConfig(max_new_tokens=1, top_k=k))
    assert_matches(freq, truncated(keep))


def test_temperature_then_top_k_then_top_p():
    # At temperature 0.5 the masses become p²/Σp²: 0.55, 0.22, 0.14, 0.035, 0.009 (sorted).
    sharpened = PROBS ** 2 / np.sum(PROBS ** 2)
    config = SamplingConfig(max_new_tokens=1, temperature=0.5, top_k=4, top_p=0.7)
    order = np.argsort(-sharpened)
    keep = np.zeros(5, bool)
    top4 = sharpened[order[:4]] / sharpened[order[:4]].sum()
    keep[order[:int(np.sum(np.cumsum(top4) - top4 < 0.7))]] = True
    expected = np.where(keep, sharpened, 0) / np.where(keep, sharpened, 0).sum()
    freq, _, _ = frequencies(config)
    assert_matches(freq, expected)


def test_greedy_is_argmax_with_zero_logprob():
    tokens, logp = draw(LOGITS[None], jax.random.key(0), SamplingConfig(max_new_tokens=1,
                                                                        temperature=0.0))
    assert int(tokens[0]) == 1 and float(logp[0]) == 0.0
