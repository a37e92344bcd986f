"""A non-finite value in PPO stops the run with the step, the quantity and how many rows."""

import numpy as np
import pytest

from rlhf_jax.pipeline.metrics import NonFiniteError, check_finite
from rlhf_jax.train.rollout import nonfinite_rows


def test_nonfinite_rows_counts_rows_with_a_bad_value_under_the_mask():
    x = np.zeros((4, 3), np.float32)
    x[0, 1], x[1, 2], x[3, 0] = np.nan, np.inf, -np.inf
    mask = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]], np.float32)
    expected = sum(any(not np.isfinite(v) for v, m in zip(row, mrow) if m)
                   for row, mrow in zip(x, mask))  # rows 0 and 3; row 1's inf is padding
    assert float(nonfinite_rows(x, mask)) == expected == 2
    assert float(nonfinite_rows(np.array([[1.0], [np.nan]]), mask[:2])) == 1


def test_check_finite_names_the_step_quantities_and_rows():
    metrics = {"score": float("nan"), "episodes": 32.0, "nonfinite/score": 3.0,
               "nonfinite/value": 0.0, "nonfinite/advantage": 32.0}
    with pytest.raises(NonFiniteError, match=r"step 7: non-finite score in 3 of 32 rows, "
                                             r"advantage in 32 of 32 rows"):
        check_finite(7, "train", metrics)
    with pytest.raises(NonFiniteError, match=r"step 2: train metric 'loss' is nan"):
        check_finite(2, "train", {"loss": float("nan")})
    check_finite(1, "train", {"loss": 1.0, "nonfinite/score": 0.0, "episodes": 8.0})
