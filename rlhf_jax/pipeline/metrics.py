"""A stage's metrics: one JSON line per step and split, TensorBoard event files, a finite check.

``workdir/metrics.jsonl`` holds ``{"step", "split", <metric>: value, …}`` lines;
``workdir/tensorboard/`` holds the same scalars as ``<split>/<metric>``. A run
resumed at step s first drops the lines (and TensorBoard points) after s, so a
resumed run's log reads as one uninterrupted run.
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


class NonFiniteError(FloatingPointError):
    """A metric became NaN or infinite; the message names the step and the metric."""


def check_finite(step: int, split: str, metrics: Mapping[str, float]) -> None:
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
        self.writer = None
        if jax.process_index() != 0:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [line for line in f if json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Logs ``metrics`` (after ``check_finite``, which raises on NaN or inf)."""
        check_finite(step, split, metrics)
        if self.writer is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(step=step, split=split, **metrics)) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
    """The lines of ``workdir/metrics.jsonl`` (of one ``split`` if given)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if split is None or r["split"] == split]
