"""A stage's metrics: one JSON line per step and split, TensorBoard event files, a finite check.

``workdir/metrics.jsonl`` holds ``{"step", "split", <metric>: value, …}`` lines;
``workdir/tensorboard/`` holds the same scalars as ``<split>/<metric>``. A run
resumed at step s first drops the lines (and TensorBoard points) after s, so a
resumed run's log reads as one uninterrupted run. Each line is flushed as it is
written; a last line cut short by ``kill -9`` is dropped on resume (with a
warning), and the kept lines are rewritten atomically.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax
import numpy as np
from tensorboardX import SummaryWriter

from rlhf_jax import parallel
from rlhf_jax.errors import UserError
from rlhf_jax.files import read_jsonl_lines, write_jsonl
from rlhf_jax.train.rollout import NONFINITE


class NonFiniteError(UserError, FloatingPointError):
    """A metric became NaN or infinite; the message names the step and the metric."""


def check_finite(step: int, split: str, metrics: Mapping[str, float]) -> None:
    """Raises ``NonFiniteError`` naming the step and the metric; where the metrics count rows
    holding non-finite values (``nonfinite/<quantity>`` of ``episodes``), names those first."""
    rows = {q: int(metrics[f"nonfinite/{q}"]) for q in NONFINITE
            if metrics.get(f"nonfinite/{q}")}
    if rows:
        counts = ", ".join(f"{quantity} in {n} of {int(metrics['episodes'])} rows"
                           for quantity, n in rows.items())
        raise NonFiniteError(f"step {step}: non-finite {counts}; stopping. Checkpoints before "
                             "this step are intact: check the reward model and the learning "
                             "rates, then resume.")
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteError(f"step {step}: {split} metric {bad[0]!r} is {metrics[bad[0]]} "
                             f"(non-finite: {bad}); stopping. Checkpoints before this step are "
                             "intact: lower the learning rate or check the data, then resume.")


def to_floats(metrics: Mapping) -> dict[str, float]:
    """Device scalars to Python floats (one transfer)."""
    return {k: float(np.asarray(v)) for k, v in parallel.to_host(dict(metrics)).items()}


class MetricsLog:
    """Appends metrics to ``metrics.jsonl`` and TensorBoard; only process 0 writes."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = self.file = None
        if jax.process_index() != 0:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):  # a run killed before its first checkpoint keeps nothing
            write_jsonl([row for row in read_jsonl_lines(self.path)
                         if resume_step and row["step"] <= resume_step], self.path)
        self.file = open(self.path, "a")
        self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Logs ``metrics`` (after ``check_finite``, which raises on NaN or inf)."""
        check_finite(step, split, metrics)
        if self.writer is None:
            return
        self.file.write(json.dumps(dict(step=step, split=split, **metrics)) + "\n")
        self.file.flush()
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.file.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
    """The lines of ``workdir/metrics.jsonl`` (of one ``split`` if given)."""
    rows = read_jsonl_lines(os.path.join(workdir, "metrics.jsonl"))
    return [r for r in rows if split is None or r["split"] == split]
