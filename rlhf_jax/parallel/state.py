"""Create parameters (or any state) already sharded: never whole on one host.

The pattern of flax's lm1b ``setup_initial_state`` and MaxText's
``get_abstract_state``: trace ``init`` abstractly with ``jax.eval_shape``, read
each leaf's logical axis names, map them to ``NamedSharding``s with the rules,
then run ``init`` under ``jax.jit`` with those ``out_shardings`` so each device
materialises only its own shard. The same abstract tree is the target for
restoring checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import Mesh

from rlhf_jax.parallel.rules import Rules, param_shardings


def abstract_state(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args) -> tuple[Any, Any]:
    """Shapes and shardings of ``init_fn(*args)`` without computing it: ``(abstract, shardings)``.

    ``abstract`` is unboxed (plain ``jax.ShapeDtypeStruct`` leaves carrying their sharding).
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(boxed, mesh, rules)
    # ``.value``, not ``nn.meta.unbox``: unboxing under an active mesh would add a sharding
    # constraint to a shape.
    values = jax.tree.map(lambda x: x.value if isinstance(x, nn.LogicallyPartitioned) else x, boxed,
                          is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            values, shardings)
    return abstract, shardings


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args) -> tuple[Any, Any]:
    """Runs ``init_fn(*args)`` with sharded outputs; returns ``(state, shardings)``, unboxed."""
    _, shardings = abstract_state(init_fn, mesh, rules, *args)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return state, shardings


def init_params(model: nn.Module, mesh: Mesh, rules: Rules, rng: jax.Array, *example_inputs):
    """Sharded ``model.init(rng, *example_inputs)['params']``: ``(params, shardings)``."""
    return sharded_init(lambda r, *x: model.init(r, *x)["params"], mesh, rules, rng,
                        *example_inputs)
