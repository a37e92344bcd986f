"""Mesh, logical-axis rules, sharded initialisation, batch sharding and multi-host start-up;
``Partitioner`` holds a mesh and its rules, and is how a stage uses all of them."""

from rlhf_jax.parallel.batch import batch_sharding, shard_batch
from rlhf_jax.parallel.distributed import (initialize, initialize_from_env, on_process_zero, sync,
                                            to_host)
from rlhf_jax.parallel.mesh import make_mesh, mesh_shape
from rlhf_jax.parallel.partitioner import Partitioner
from rlhf_jax.parallel.rules import RULES, get_rules, param_shardings, spec_for
from rlhf_jax.parallel.state import abstract_state, init_params, sharded_init

__all__ = ["Partitioner", "RULES", "abstract_state", "batch_sharding", "get_rules", "init_params",
           "initialize", "initialize_from_env", "make_mesh", "mesh_shape",
           "on_process_zero", "param_shardings", "shard_batch", "sharded_init", "spec_for", "sync",
           "to_host"]
