"""Put host data onto the mesh: each process passes its own rows, JAX sees one global batch."""

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
    """Host-local arrays (this process's rows) → global arrays sharded over the batch axes.

    On one process this is a ``device_put``; on several, the global batch is the
    concatenation of every process's rows in process order
    (``jax.make_array_from_process_local_data``).
    """

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x)

    return jax.tree.map(one, batch)
