"""One object owns the mesh and the logical-axis rules; it is how a stage shards anything.

The role of t5x's ``PjittedFnWithContext`` and MaxText's config-driven
``logical_axis_rules``: a stage builds one ``Partitioner`` from its config's
``mesh`` group and through it, and only it, creates sharded state
(``init``: ``jax.eval_shape`` → logical names → ``NamedSharding`` →
``jax.jit(out_shardings=…)``, so no array is ever whole on one device), jits its
steps (``jit``: traced and run under the mesh and the rules) and puts host
batches on the mesh (``shard_batch``).

Rules come from the config: ``mesh.rules`` names a preset (``data``, ``fsdp``,
``fsdp_tp``, see ``rules.py``) and ``mesh.axis_rules`` gives pairs
``(logical name, mesh axes)`` that take precedence over the preset's rule for
the same name, e.g. ``--config.mesh.axis_rules="(('mlp', 'tensor'),)"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlhf_jax.parallel.batch import shard_batch
from rlhf_jax.parallel.mesh import make_mesh
from rlhf_jax.parallel.rules import Rules, get_rules
from rlhf_jax.parallel.state import abstract_state


def with_overrides(rules: Rules, overrides: Sequence[tuple[str, Any]]) -> Rules:
    """``overrides`` first (flax takes the first rule of a logical name), then the rest of
    ``rules``; each mesh-axes value a name, a tuple of names or None (replicated)."""
    overrides = tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                      for name, axes in overrides)
    named = {name for name, _ in overrides}
    return overrides + tuple(rule for rule in rules if rule[0] not in named)


@dataclasses.dataclass(frozen=True)
class Partitioner:
    mesh: Mesh
    rules: Rules

    @classmethod
    def from_config(cls, mesh) -> "Partitioner":
        """From a ``mesh`` config group: ``data``, ``fsdp``, ``tensor`` (one may be -1: fill),
        ``devices`` (0: every device; n: the first n), ``rules`` and ``axis_rules``."""
        devices = jax.devices()[:mesh.devices] if mesh.devices else None
        return cls(make_mesh(mesh.data, mesh.fsdp, mesh.tensor, devices),
                   with_overrides(get_rules(mesh.rules), getattr(mesh, "axis_rules", ())))

    @classmethod
    def single_device(cls, device: jax.Device | None = None) -> "Partitioner":
        """Everything on one device (this process's first unless given): no collectives, so
        each process may run it on its own."""
        return cls(make_mesh(1, 1, 1, [device or jax.local_devices()[0]]), get_rules("data"))

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Within: this mesh and these rules for tracing (``nn.with_logical_constraint``)."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def abstract(self, init_fn: Callable[..., Any], *args) -> tuple[Any, Any]:
        """``(abstract, shardings)`` of ``init_fn(*args)``, computing nothing (``abstract``'s
        leaves are ``ShapeDtypeStruct``s carrying their shardings: a restore target)."""
        return abstract_state(init_fn, self.mesh, self.rules, *args)

    def init(self, init_fn: Callable[..., Any], *args) -> tuple[Any, Any]:
        """``(state, abstract)``: ``init_fn(*args)`` created directly in its shardings, each
        device computing only its shard."""
        abstract, shardings = self.abstract(init_fn, *args)
        state = self.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
        return state, abstract

    def jit(self, fn: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
        """``jax.jit(fn, **jit_kwargs)``, traced and run under this mesh and these rules."""
        compiled = jax.jit(fn, **jit_kwargs)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with self.activate():
                return compiled(*args, **kwargs)

        return run

    def shard_batch(self, batch: Any) -> Any:
        """Host arrays of the global batch → arrays split over the batch's mesh axes."""
        return shard_batch(batch, self.mesh, self.rules)

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())
