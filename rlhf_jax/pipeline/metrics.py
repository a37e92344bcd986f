"""A stage's metrics: one JSON line per step and split, TensorBoard event files, a finite check.

``workdir/metrics.jsonl`` holds ``{"step", "split", <metric>: value, …}`` lines;
``workdir/tensorboard/`` holds the same scalars as ``<split>/<metric>``. A run
resumed at step s first drops the lines (and TensorBoard points) after s, so a
resumed run's log reads as one uninterrupted run. The file stays open for the
run and is flushed at each fetch (``flush``); a last line cut short by ``kill -9``
is dropped on resume (with a warning), and the kept lines are rewritten atomically.

``MetricsWindow`` keeps train metrics on the device between fetches, so a step
does not wait for the one before it: one host transfer per window, still one line
per step.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Optional

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
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def flush(self) -> None:
        """Hands the lines written so far to the operating system (a kill then keeps them)."""
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.file.close()


class MetricsWindow:
    """Train metrics of the steps since the last fetch, still on the device.

    ``add`` after each step costs nothing (no host sync); ``fetch`` transfers every
    pending step's metrics at once (``parallel.to_host``, a collective where arrays
    span processes, so every process fetches at the same steps) and writes one line
    per step, in order: the first non-finite one raises ``NonFiniteError`` naming
    its own step, after the steps before it are written. Wall-clock metrics are the
    window's: ``step_seconds`` is its time (data, dispatch and compute, from the
    first step's batch to the fetch) divided by its steps, ``<unit>_per_s`` its
    units over that time; a window of one step times that step alone.
    """

    def __init__(self, log: MetricsLog, unit: str):
        self.log, self.unit = log, unit
        self.pending: list[tuple[int, Any, int]] = []  # (step, device metrics, units)
        self.began: Optional[float] = None

    def add(self, step: int, metrics: Mapping, units: int, began: float) -> None:
        """Keeps a step's metrics; ``began`` is when the step started (asked for its batch)."""
        if self.began is None:
            self.began = began
        self.pending.append((step, metrics, units))

    def fetch(self) -> dict[str, float]:
        """Writes and flushes the lines of the steps added since the last fetch (one at least);
        returns the last one."""
        pending, self.pending = self.pending, []
        values = parallel.to_host([dict(metrics) for _, metrics, _ in pending])
        seconds = time.perf_counter() - self.began
        self.began = None
        wall = dict(step_seconds=seconds / len(pending),
                    **{f"{self.unit}_per_s": sum(u for _, _, u in pending) / seconds})
        for (step, _, _), metrics in zip(pending, values):
            row = {k: float(np.asarray(v)) for k, v in metrics.items()} | wall
            self.log.write(step, "train", row)
        self.log.flush()
        return row


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
    """The lines of ``workdir/metrics.jsonl`` (of one ``split`` if given)."""
    rows = read_jsonl_lines(os.path.join(workdir, "metrics.jsonl"))
    return [r for r in rows if split is None or r["split"] == split]
