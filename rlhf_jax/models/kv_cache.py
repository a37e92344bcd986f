"""The preallocated key/value cache of the decode path, a plain pytree.

Slots are filled left to right: a prefill writes T tokens at ``index`` and each
decode step writes one more. ``mask`` marks the slots that hold real tokens, so
left-padded prompts keep their padding masked for the whole generation, and the
position of the next token of row b is ``mask[b].sum()``. Keys and values are
one buffer per layer, so a decode step updates each layer's cache in place.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.parallel import axes as ax

# Logical names of one layer's keys or values: (B, K, S, H), head-major.
KV_NAMES = (ax.ACT_BATCH, ax.ACT_KV_HEADS, ax.ACT_CACHE_LENGTH, ax.ACT_HEAD_DIM)
MASK_NAMES = (ax.ACT_BATCH, ax.ACT_CACHE_LENGTH)


@flax.struct.dataclass
class KVCache:
    k: tuple[jax.Array, ...]  # n_layers × (B, K, S, H) in the compute dtype
    v: tuple[jax.Array, ...]  # n_layers × (B, K, S, H)
    mask: jax.Array  # (B, S) bool: the slot holds a real token
    index: jax.Array  # () int32: the next slot to write

    @classmethod
    def init(cls, config: ModelConfig, batch: int, length: int) -> "KVCache":
        shape = (batch, config.n_kv_heads, length, config.head_dim)
        zeros = tuple(jnp.zeros(shape, config.compute_dtype) for _ in range(config.n_layers))
        return cls(k=zeros, v=zeros, mask=jnp.zeros((batch, length), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def repeat(self, n: int) -> "KVCache":
        """Each row's cache ``n`` times in a row (rows b·n … b·n + n − 1 copy row b)."""
        rows = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731
        return self.replace(k=tuple(map(rows, self.k)), v=tuple(map(rows, self.v)),
                            mask=rows(self.mask))


def constrain_cache(cache: KVCache) -> KVCache:
    """Pins the cache's sharding by its logical names (a no-op outside a mesh and rules context)."""
    pin = lambda x: nn.with_logical_constraint(x, KV_NAMES)  # noqa: E731
    return cache.replace(k=tuple(map(pin, cache.k)), v=tuple(map(pin, cache.v)),
                         mask=nn.with_logical_constraint(cache.mask, MASK_NAMES))
