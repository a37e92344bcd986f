"""Save and restore training state with orbax: arrays sharded as they are, plus JSON metadata.

Each checkpoint step holds two named items: ``state`` (any pytree of arrays, for
example a flax ``TrainState``: step, params, optimizer state) and ``extra`` (a
JSON dict: data position, seed, controller state, config). Saves are
asynchronous; a restore fills an abstract target (``jax.ShapeDtypeStruct``s
carrying their shardings, from ``parallel.abstract_state``), so every device
reads only its own shard.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import orbax.checkpoint as ocp


class TrainCheckpoints:
    """A directory of step-numbered checkpoints; keeps the newest ``max_to_keep``."""

    def __init__(self, directory: str, max_to_keep: Optional[int] = 3, save_every: int = 1,
                 asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                               save_interval_steps=save_every,
                                               enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                             item_names=("state", "extra"))

    def save(self, step: int, state: Any, extra: Optional[dict] = None, force: bool = False) -> bool:
        """Starts saving (returns at once when asynchronous); False if ``step`` is not due."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  extra=ocp.args.JsonSave(extra or {}))
        return self.manager.save(step, args=args, force=force)

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

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
