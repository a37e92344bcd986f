"""Logical-axis rules: which mesh axes each logical dimension is split over.

Three presets, chosen by name in configs (``config.parallel.rules``):

* ``data``: pure data parallelism; the batch is split over ``data`` and
  ``fsdp``, every parameter is replicated.
* ``fsdp``: as ``data``, and every parameter's ``embed`` dimension is split over
  ``fsdp`` (ZeRO-3: weights are all-gathered per layer, gradients
  reduce-scattered).
* ``fsdp_tp``: as ``fsdp``, plus Megatron tensor parallelism: attention heads,
  the MLP width and the vocabulary are split over ``tensor``, for parameters and
  activations alike.

A dimension whose size is not divisible by its mesh axes is left replicated
(for example SmolLM2's 3 KV heads on ``tensor=2``), so every preset works for
every model; :func:`param_shardings` reports such fallbacks.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlhf_jax.parallel import axes as ax

Rules = tuple[tuple[str, Any], ...]

_BATCH = ((ax.ACT_BATCH, (ax.DATA, ax.FSDP)),)
_TENSOR = (
    (ax.HEADS, ax.TENSOR), (ax.KV_HEADS, ax.TENSOR), (ax.MLP, ax.TENSOR), (ax.VOCAB, ax.TENSOR),
    (ax.ACT_HEADS, ax.TENSOR), (ax.ACT_KV_HEADS, ax.TENSOR), (ax.ACT_MLP, ax.TENSOR),
    (ax.ACT_VOCAB, ax.TENSOR),
)

RULES: dict[str, Rules] = {
    "data": _BATCH,
    "fsdp": _BATCH + ((ax.EMBED, ax.FSDP),),
    "fsdp_tp": _BATCH + ((ax.EMBED, ax.FSDP),) + _TENSOR,
}

log = logging.getLogger(__name__)


def get_rules(name: str) -> Rules:
    if name not in RULES:
        raise ValueError(f"unknown sharding rules {name!r}; choose one of {sorted(RULES)}")
    return RULES[name]


def _axis_size(mesh: Mesh, mesh_axes) -> int:
    if mesh_axes is None:
        return 1
    names = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
    return math.prod(mesh.shape[n] for n in names)


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
             rules: Rules) -> PartitionSpec:
    """PartitionSpec of an array with these logical dimension names; non-divisible dims replicate."""
    spec = nn.logical_to_mesh_axes(tuple(names), rules)
    fitted = []
    for dim, mesh_axes in zip(shape, spec):
        if mesh_axes is not None and dim % _axis_size(mesh, mesh_axes):
            log.info("dimension of size %d is not divisible by mesh axes %s: replicated",
                     dim, mesh_axes)
            mesh_axes = None
        fitted.append(mesh_axes)
    return PartitionSpec(*fitted)


def param_shardings(boxed_abstract: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of ``nn.LogicallyPartitioned`` abstract arrays (from eval_shape)."""

    def one(leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            return NamedSharding(mesh, spec_for(leaf.names, leaf.value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, boxed_abstract,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

