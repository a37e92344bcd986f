"""Put host data onto the mesh: every process holds the global batch, each device takes its rows."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlhf_jax.parallel import axes as ax
from rlhf_jax.parallel.rules import Rules, spec_for


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
    """Leading (batch) dimension split as the rules split ``activation_batch``; the rest replicated."""
    batch_axes = spec_for((ax.ACT_BATCH,), (0,), mesh, rules)[0]
    return NamedSharding(mesh, PartitionSpec(batch_axes, *([None] * (ndim - 1))))


def shard_batch(batch: Any, mesh: Mesh, rules: Rules) -> Any:
    """Host arrays of the GLOBAL batch (the same on every process) → global arrays sharded over
    the batch axes.

    Each process copies to its own devices only the rows the sharding puts there
    (``jax.make_array_from_callback``), so which rows a process holds follows from
    the mesh, whatever its device order: no process needs to know its block of
    rows, and a batch is the same global batch on one process or on many.
    """

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, batch_sharding(mesh, rules, x.ndim),
                                            lambda index: x[index])

    return jax.tree.map(one, batch)
