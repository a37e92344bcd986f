"""A ``jax.profiler`` trace of a window of training steps, for TensorBoard's profile plugin or XProf.

``config.profile_steps = (a, b)`` traces steps a..b (1-based, inclusive) into
``workdir/profile/plugins/profile/<time>/<host>.xplane.pb``; ``(0, 0)`` is off.
Every step runs inside ``StepTraceAnnotation("train", step_num=step)`` (free
when nothing traces), so the trace viewer and the plugin's step-time overview
split the trace into steps, and a trace captured from outside (``jax.profiler``'s
server) sees them too. The loop fetches its metrics at ``edges``: just before
the window, so steps queued earlier stay out of the trace, and at its last step,
so the trace holds that step's device work before it stops.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax


class StepProfile:
    """Starts the trace before step ``a`` (or the first step of a run resumed inside the window),
    stops it after step ``b`` or when the loop ends early (``close``)."""

    def __init__(self, steps: tuple[int, int], directory: str):
        self.first, self.last = steps
        self.directory = directory
        self.active = False

    def edges(self, step: int) -> bool:
        """Whether the loop must fetch (wait for the device) after ``step``."""
        return self.first > 0 and step in (self.first - 1, self.last)

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Around the dispatch of ``step``."""
        if not self.active and self.first > 0 and self.first <= step <= self.last:
            jax.profiler.start_trace(self.directory)
            self.active = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            yield

    def after(self, step: int) -> None:
        """After the fetch of ``step``: the window's last step ends the trace."""
        if step >= self.last:
            self.close()

    def close(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
