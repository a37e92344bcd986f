"""The preallocated key/value cache of the decode path, a plain pytree.

Slots are filled left to right: a prefill writes T tokens at ``index`` and each
decode step writes one more. ``mask`` marks the slots that hold real tokens, so
left-padded prompts keep their padding masked for the whole generation, and the
position of the next token of row b is ``mask[b].sum()``.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.parallel import axes as ax

# Logical names of k and v: (L, B, S, K, H).
KV_NAMES = (ax.LAYERS, ax.ACT_BATCH, ax.ACT_CACHE_LENGTH, ax.ACT_KV_HEADS, ax.ACT_HEAD_DIM)
MASK_NAMES = (ax.ACT_BATCH, ax.ACT_CACHE_LENGTH)


@flax.struct.dataclass
class KVCache:
    k: jax.Array  # (L, B, S, K, H) in the compute dtype
    v: jax.Array  # (L, B, S, K, H)
    mask: jax.Array  # (B, S) bool: the slot holds a real token
    index: jax.Array  # () int32: the next slot to write

    @classmethod
    def init(cls, config: ModelConfig, batch: int, length: int) -> "KVCache":
        shape = (config.n_layers, batch, length, config.n_kv_heads, config.head_dim)
        return cls(k=jnp.zeros(shape, config.compute_dtype),
                   v=jnp.zeros(shape, config.compute_dtype),
                   mask=jnp.zeros((batch, length), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.mask.shape[1]


def constrain_cache(cache: KVCache) -> KVCache:
    """Pins the cache's sharding by its logical names (a no-op outside a mesh and rules context)."""
    return cache.replace(k=nn.with_logical_constraint(cache.k, KV_NAMES),
                         v=nn.with_logical_constraint(cache.v, KV_NAMES),
                         mask=nn.with_logical_constraint(cache.mask, MASK_NAMES))
