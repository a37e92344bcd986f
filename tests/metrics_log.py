"""A stage's ``metrics.jsonl`` in the tests: a run in this process stopped at a step, the rows that
must not depend on how a run went (its wall-clock values left out), a run in another process
awaited until it logged a step."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from rlhf_jax.pipeline import metrics
from tests.processes import output

# step_seconds, tokens_per_s, episodes_per_s and PPO's generate_s, score_s and train_s
TIMING = re.compile(r"(_s|_seconds)$")


def interrupt_at(monkeypatch, step: int, path: str = "") -> None:
    """``KeyboardInterrupt`` (Ctrl-C) when a run logs ``step``, before that line is written; only
    in the metrics logs whose path contains ``path``."""
    write = metrics.MetricsLog.write

    def failing(self, s, split, values):
        if s == step and path in self.path:
            raise KeyboardInterrupt
        write(self, s, split, values)

    monkeypatch.setattr(metrics.MetricsLog, "write", failing)


def straight_and_interrupted(run, config, tmp_path, monkeypatch, step: int) -> tuple[str, str]:
    """``run(config, workdir)`` twice: straight through, and in a second workdir stopped by Ctrl-C
    as it logs ``step`` (``interrupt_at``); returns ``(straight, interrupted)``, to resume the
    second and compare."""
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run(config, straight)
    with monkeypatch.context() as patch:
        interrupt_at(patch, step)
        with pytest.raises(KeyboardInterrupt):
            run(config, interrupted)
    return straight, interrupted


def without_timings(rows: list[dict]) -> list[dict]:
    """The rows without their wall-clock values (``TIMING``)."""
    return [{k: v for k, v in row.items() if not TIMING.search(k)} for row in rows]


def timeless_metrics(workdir: str) -> list[dict]:
    """Every line of ``workdir/metrics.jsonl``, without wall-clock values."""
    return without_timings(metrics.read_metrics(workdir))


def wait_for_step(processes: list[subprocess.Popen], workdir: str, step: int,
                  timeout: float = 600) -> None:
    """Blocks until ``workdir/metrics.jsonl`` holds the train line of ``step``; fails if one of
    the processes (started by ``tests.processes.start``) ends first."""
    path, deadline = os.path.join(workdir, "metrics.jsonl"), time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a run ended (exit {process.returncode}) before step "
                                     f"{step}:\n{output(process)[-3000:]}")
        if os.path.exists(path):
            with open(path) as f:
                if any(f'"step": {step}, "split": "train"' in line for line in f):
                    return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")
