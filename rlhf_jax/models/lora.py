"""Low-rank adapters (LoRA, Hu et al. 2021) and the trainable/frozen split of a parameter tree.

A targeted projection ``y = x·W`` becomes ``y = x·W + (α/r)·(drop(x)·A)·B`` with
``A`` (in, r) and ``B`` (r, out): for a kernel of named dimensions
``in_dims + out_dims`` (for example q's (D, N, H)), ``lora_a`` has shape
``in_dims + (r,)`` and ``lora_b`` ``(r,) + out_dims``, each carrying the kernel's
logical axis names (the rank is ``lora_rank``, replicated), so every sharding
preset splits adapters as it splits their kernels. ``A`` starts as torch's
default linear init (uniform, bound 1/√fan_in), ``B`` at zero, so a fresh
adapter leaves the model's outputs exactly unchanged. The token embedding can
be a target too (``embed``): ``E' = E + (α/r)·A·B`` with ``A`` (V, r) and ``B``
(r, D), applied to the lookup and, with tied embeddings, to the LM head. Adapters
are float32 whatever the base's ``param_dtype`` (PEFT does the same).

The base weights of a model with adapters stay frozen: ``split`` cuts a model's
parameter tree into ``(trainable, frozen)``, two sparse trees of the same nesting
(adapters and any head outside the decoder train; every other leaf of ``trunk``
and ``lm_head`` is frozen) and ``combine`` joins them again (no copy: a tree of
references). Train steps differentiate the trainable tree only, so the frozen
kernels get no gradient matmuls and no optimizer state; ``merge`` folds adapters
into their kernels (``W + (α/r)·A·B``) for export.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import traverse_util

TARGETS = ("q", "k", "v", "o", "gate", "up", "down", "lm_head", "embed")
ADAPTER_NAMES = ("lora_a", "lora_b")
BASE_SUBTREES = ("trunk", "lm_head")  # of CausalLM and ScalarHeadModel trees


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which projections get adapters, and their size; ``rank=0``: none (full fine-tuning)."""

    rank: int = 0
    alpha: float = 16.0  # adapters are scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input, when the caller passes a 'dropout' rng
    targets: tuple = ("q", "k", "v", "o", "gate", "up", "down")  # any of TARGETS

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"LoraConfig.rank={self.rank!r}: must be an integer >= 0")
        if self.alpha <= 0:
            raise ValueError(f"LoraConfig.alpha={self.alpha!r}: must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoraConfig.dropout={self.dropout!r}: must be in [0, 1)")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"LoraConfig.targets={tuple(self.targets)!r}: each must be one of "
                             f"{TARGETS}, at least one")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def adapts(self, name: Optional[str]) -> bool:
        """Whether the projection (or embedding) of this module name gets an adapter."""
        return bool(self.rank) and name in self.targets


def a_init(n_in: int):
    """``A``'s init: uniform in ±1/√fan_in over its first ``n_in`` dims (torch's nn.Linear)."""
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / math.sqrt(math.prod(shape[:n_in]))
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def low_rank_delta(a: jax.Array, b: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """``A·B`` shaped as the kernel, float32; leading dims shared by A, B and the kernel (the
    stacked layers of ``nn.scan``) are batched, not contracted."""
    lead = a.ndim + b.ndim - 2 - len(kernel_shape)
    batch = a.shape[:lead]
    r = a.shape[-1]
    a2 = a.reshape(*batch, -1, r).astype(jnp.float32)
    b2 = b.reshape(*batch, r, -1).astype(jnp.float32)
    return jnp.matmul(a2, b2).reshape(kernel_shape)


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(tree) if tree else {}


def _frozen(path: tuple) -> bool:
    return path[0] in BASE_SUBTREES and path[-1] not in ADAPTER_NAMES


def split(params: Any, lora: LoraConfig) -> tuple[Any, Any]:
    """``(trainable, frozen)`` of one model's params; without adapters ``(params, None)``."""
    if not lora.rank:
        return params, None
    flat = _flat(params)
    trainable = {k: v for k, v in flat.items() if not _frozen(k)}
    frozen = {k: v for k, v in flat.items() if _frozen(k)}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def combine(trainable: Any, frozen: Optional[Any]) -> Any:
    """The whole tree again (``frozen=None``: ``trainable`` is the whole tree). Leaves of
    ``frozen`` that the model does not use (an LM head under a scalar model) are harmless."""
    if frozen is None:
        return trainable
    return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trainable)})


def base(params: Any) -> Any:
    """The params without any adapter: the base model's tree."""
    return traverse_util.unflatten_dict(
        {k: v for k, v in _flat(params).items() if k[-1] not in ADAPTER_NAMES})


def merge(params: Any, lora: LoraConfig) -> Any:
    """A plain tree with each adapter folded into its weight: ``W + (α/r)·A·B``, in float32 (a
    bfloat16 base would round away the small updates an adapter makes)."""
    if not lora.rank:
        return params
    flat = _flat(params)
    out = {k: v for k, v in flat.items() if k[-1] not in ADAPTER_NAMES}
    for k in flat:
        if k[-1] == "lora_a":
            owner = k[:-1]
            weight = owner + (("embedding",) if owner + ("embedding",) in flat else ("kernel",))
            w = flat[weight]
            delta = low_rank_delta(flat[k], flat[owner + ("lora_b",)], w.shape)
            out[weight] = w.astype(jnp.float32) + lora.scale * delta
    return traverse_util.unflatten_dict(out)


def adapter_count(params: Any) -> int:
    """Number of adapter parameters in a tree."""
    return sum(int(v.size) for k, v in _flat(params).items() if k[-1] in ADAPTER_NAMES)
