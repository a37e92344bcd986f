"""Win-rate intervals and ranking accuracy against direct computations."""

import itertools
import math

import numpy as np
import pytest

from rlhf_jax.evaluation.stats import mean_interval, pairwise_accuracy, seed_interval


def test_interval_is_the_normal_one_over_prompts():
    wins = [1.0, 0.0, 0.5, 1.0, 2 / 3, 1 / 3, 1.0, 0.0, 1.0, 1.0]
    n = len(wins)
    mean = sum(wins) / n
    sd = math.sqrt(sum((w - mean) ** 2 for w in wins) / (n - 1))
    out = mean_interval(wins, (0.0, 1.0))
    assert out["value"] == pytest.approx(mean)
    assert out["low"] == pytest.approx(mean - 1.96 * sd / math.sqrt(n), abs=1e-4)
    assert out["high"] == pytest.approx(mean + 1.96 * sd / math.sqrt(n), abs=1e-4)
    assert out["n"] == n


def test_interval_is_clipped_and_covers_at_the_nominal_rate():
    assert mean_interval([1.0, 1.0, 0.0], (0.0, 1.0))["high"] == 1.0
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        draw = mean_interval(rng.binomial(1, 0.7, 200).astype(float))
        hits += draw["low"] <= 0.7 <= draw["high"]
    assert 0.93 < hits / 2000 < 0.97


def test_seed_interval_is_students_t_one():
    """Three seeds: t_{0.975, 2} = 4.302652729911275 (tables), far wider than 1.96."""
    values = [0.61, 0.57, 0.66]
    half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)
    got = seed_interval(values)
    assert got["n"] == 3 and got["value"] == pytest.approx(np.mean(values))
    assert got["low"] == pytest.approx(np.mean(values) - half)
    assert got["high"] == pytest.approx(np.mean(values) + half)
    assert seed_interval([0.4]) == dict(value=0.4, low=0.4, high=0.4, n=1)


def test_pairwise_accuracy_counts_every_ranked_pair():
    scores = [[0.3, 0.1, 0.9, 0.2], [1.0, 1.0, -0.5]]
    rankings = [[2, 0, 3, 1], [1, 0, 2]]
    right = total = 0.0
    for score, ranking in zip(scores, rankings):
        position = {item: i for i, item in enumerate(ranking)}
        for i, j in itertools.combinations(range(len(score)), 2):
            better, worse = (i, j) if position[i] < position[j] else (j, i)
            right += 1.0 if score[better] > score[worse] else 0.5 if score[better] == score[worse] else 0
            total += 1
    assert pairwise_accuracy(scores, rankings) == pytest.approx(right / total)
    assert pairwise_accuracy(scores, rankings) == pytest.approx((6 + 0.5 + 2) / 9)
