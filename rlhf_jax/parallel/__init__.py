"""Mesh, logical-axis rules, sharded initialisation, batch sharding and multi-host start-up."""

from rlhf_jax.parallel.batch import batch_sharding, shard_batch
from rlhf_jax.parallel.distributed import initialize
from rlhf_jax.parallel.mesh import make_mesh, mesh_from_config, mesh_shape
from rlhf_jax.parallel.rules import RULES, get_rules, param_shardings, spec_for
from rlhf_jax.parallel.state import abstract_state, init_params, sharded_init

__all__ = ["RULES", "abstract_state", "batch_sharding", "get_rules", "init_params",
           "initialize", "make_mesh", "mesh_from_config", "mesh_shape", "param_shardings",
           "shard_batch", "sharded_init", "spec_for"]
