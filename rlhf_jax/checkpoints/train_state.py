"""Save and restore training state with orbax: arrays sharded as they are, plus JSON metadata.

Each checkpoint step holds two named items: ``state`` (any pytree of arrays, for
example a flax ``TrainState``: step, params, optimizer state) and ``extra`` (a
JSON dict: data position, seed, controller state, config). Saves are
asynchronous; a restore fills an abstract target (``jax.ShapeDtypeStruct``s
carrying their shardings, from ``parallel.abstract_state``), so every device
reads only its own shard.

A save killed half-way leaves a ``<step>.orbax-checkpoint-tmp`` directory that
orbax never counts as a checkpoint (and removes when the directory is opened
again). A finished checkpoint damaged afterwards (a truncated file) fails to
restore: ``restore_latest`` then moves it to ``<directory>_damaged/<step>`` with
a warning that names it and resumes from the newest one that restores.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from rlhf_jax.errors import CheckpointError


class TrainCheckpoints:
    """A directory of step-numbered checkpoints; keeps the newest ``max_to_keep``."""

    def __init__(self, directory: str, max_to_keep: Optional[int] = 3, save_every: int = 1,
                 asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                               save_interval_steps=save_every,
                                               enable_async_checkpointing=asynchronous,
                                               cleanup_tmp_directories=True)
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "extra"))

    def save(self, step: int, state: Any, extra: Optional[dict] = None, force: bool = False) -> bool:
        """Starts saving (returns at once when asynchronous); False if ``step`` is not due."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  extra=ocp.args.JsonSave(extra or {}))
        return self.manager.save(step, args=args, force=force)

    def due(self, step: int) -> bool:
        """Whether orbax's policy saves ``step``: every ``save_every`` steps, the first step of
        an empty directory, jax's preemption sync point. The loop asks once, checks the step's
        metrics, then saves with ``force=True``."""
        return self.manager.should_save(step)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """``(state, extra)`` of ``step`` (default: the latest), laid out as ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.manager.directory}: no checkpoint to restore")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
        return restored.state, dict(restored.extra or {})

    def restore_latest(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
        """``(step, state, extra)`` of the newest checkpoint that restores, or None if there is
        none. Newer ones that fail (damaged files) are moved aside with a warning; if none
        restores, the checkpoints stay as they are and ``CheckpointError`` names the newest
        failure (a config that no longer fits them, say)."""
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, extra = self.restore(abstract_state, step)
            except Exception as e:  # orbax and tensorstore raise many kinds for a damaged file
                failures.append((step, e))
                continue
            for bad, error in failures:
                self._set_aside(bad, error, step)
            return step, state, extra
        if failures:
            step, error = failures[0]
            raise CheckpointError(
                f"{self.directory}: no checkpoint restores into this run's state (step {step}: "
                f"{str(error).splitlines()[0][:300]}); did the config change? Use a new workdir "
                "or the config the checkpoints were written with") from error
        return None

    def _set_aside(self, step: int, error: Exception, resume_step: int) -> None:
        target = os.path.join(f"{self.directory}_damaged", str(step))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        warnings.warn(f"checkpoint {self.directory}/{step} does not restore "
                      f"({str(error).splitlines()[0][:200]}); moved to {target}; resuming from "
                      f"step {resume_step}", stacklevel=3)
        self.manager.reload()

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
