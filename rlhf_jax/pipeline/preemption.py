"""Stopping cleanly on SIGTERM or Ctrl-C: finish the step, checkpoint it, say how to resume.

Preemptible TPU VMs, spot GPUs and SLURM send SIGTERM some time before they
kill. Inside ``stop_on_signals()`` (the entry points enter it) the first SIGTERM
or SIGINT only sets a flag; the training loop asks ``should_stop(step)`` after
every step, saves that step's checkpoint (data position included), waits for the
write and raises ``Preempted``; the pipeline also asks between stages. A second
signal interrupts at once (``KeyboardInterrupt``).

On several processes every one must stop at the same step, or one would wait
forever for another in a collective. There ``should_stop`` is jax's preemption
sync point (``multihost_utils.reached_preemption_sync_point``): jax's
coordination service catches SIGTERM on any process (``jax.distributed.initialize``
installs its handler over ours) and agrees on the step all of them stop at;
SIGINT is passed on to it as a SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator, Optional

import jax
import numpy as np

_requested: list[int] = []  # the signals received inside stop_on_signals()


class Preempted(Exception):
    """The run stopped on a signal after checkpointing ``step`` (None: between stages)."""

    def __init__(self, signum: int, step: Optional[int] = None, stage: str = ""):
        self.signum, self.step, self.stage = signum, step, stage
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"step {self.step} of {self.stage}" if self.step is not None else \
            f"before {self.stage}"
        return f"stopped at {where}; run the same command to resume"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal


def _multi_process() -> bool:
    """Without touching devices: this may run before ``jax.distributed.initialize``."""
    return jax.distributed.is_initialized()


def _handle(signum, frame) -> None:
    if _requested:
        raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping now")
    _requested.append(signum)
    if _multi_process() and signum != signal.SIGTERM:
        os.kill(os.getpid(), signal.SIGTERM)  # jax's handler tells every process


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGINT ask the run to stop after its current step."""
    previous = {s: signal.signal(s, _handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()


def requested() -> Optional[int]:
    """The signal asking this process to stop, if one came."""
    return _requested[0] if _requested else None


def should_stop(step: int) -> bool:
    """Whether the loop stops after ``step``: the same answer on every process."""
    if _multi_process():
        from jax.experimental import multihost_utils
        return multihost_utils.reached_preemption_sync_point(step)
    return bool(_requested)


def check_between_stages(stage: str) -> None:
    """Raises ``Preempted`` before ``stage`` starts if a stop was asked for (on several
    processes: a SIGINT that reached any of them; a SIGTERM is seen by the next stage's loop)."""
    signum = requested() or 0
    if _multi_process():
        from jax.experimental import multihost_utils
        signum = int(multihost_utils.process_allgather(np.int32(signum)).max())
    if signum:
        raise Preempted(signum, stage=stage)
