"""Our parameter shapes (and shardings) for a config, computed without allocating anything."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax.sharding import Mesh

from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.parallel.rules import Rules
from rlhf_jax.parallel.state import abstract_state


def abstract_lm_params(config: ModelConfig, mesh: Optional[Mesh] = None,
                       rules: Optional[Rules] = None):
    """``(abstract params, shardings or None)`` of ``CausalLM(config)``."""
    ids = jnp.zeros((1, 1), jnp.int32)

    def init(rng):
        return CausalLM(config).init(rng, ids)["params"]

    if mesh is None:
        return nn.meta.unbox(jax.eval_shape(init, jax.random.key(0))), None
    return abstract_state(init, mesh, rules or (), jax.random.key(0))
