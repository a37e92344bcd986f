"""Win rates with confidence intervals, and pairwise ranking accuracy.

A model's win rate against a reference is the mean over prompts of w_i, the
share of judges preferring the model's response on prompt i (a tie counts one
half). Its 95% interval is the normal one over prompts,

    w̄ ± 1.96·s/√n,   s² = Σ (w_i − w̄)² / (n − 1),

clipped to [0, 1]: prompts are the unit of sampling, as in the paper's Figure 1.
Across a handful of seeds (the ablations) the interval is Student's t one,
``x̄ ± t_{0.975, n−1}·s/√n``.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def mean_interval(values: Sequence[float], bounds: tuple[float, float] = (-np.inf, np.inf)
                  ) -> dict[str, float]:
    """``{value, low, high, n}``: the mean and its 95% normal interval, clipped to ``bounds``."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
    return dict(value=mean, low=float(max(bounds[0], mean - half)),
                high=float(min(bounds[1], mean + half)), n=n)


def seed_interval(values: Sequence[float]) -> dict[str, float]:
    """``{value, low, high, n}``: the mean over seeds and its 95% Student-t interval (no
    interval for one seed)."""
    values = np.asarray(values, np.float64)
    n, mean = len(values), float(values.mean())
    half = (float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
            if n > 1 else 0.0)
    return dict(value=mean, low=mean - half, high=mean + half, n=n)


def pairwise_accuracy(scores: Sequence[Sequence[float]],
                      rankings: Sequence[Sequence[int]]) -> float:
    """The share of ranked pairs (all C(K, 2) of each prompt) that ``scores`` order the same way;
    an exact score tie counts one half."""
    right, total = 0.0, 0
    for score, ranking in zip(scores, rankings):
        for better, worse in itertools.combinations(ranking, 2):
            right += float(score[better] > score[worse]) + 0.5 * float(score[better] == score[worse])
            total += 1
    return right / max(total, 1)
