"""One optimizer update from a loss given as (sum, count), over microbatches, exactly.

``loss_terms(params, microbatch, rng) -> (loss_sum, count, metric_sums)``. The
gradient of ``Σ loss_sum / Σ count`` is accumulated as ``Σ ∇loss_sum`` over the
microbatches and divided once by the total count, so splitting a batch into
microbatches does not change the update.

``state.params`` is what trains; ``frozen`` (a sparse tree of the same nesting,
``rlhf_jax.models.lora.split``) is the rest of the model, joined to it for the
loss but never differentiated: the backward pass computes no gradient for it
(XLA drops the frozen kernels' weight-gradient matmuls) and the optimizer holds
no state for it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from rlhf_jax.models.lora import combine

LossTerms = Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array, dict]]


def _split(batch, microbatches: int):
    def one(x):
        if x.shape[0] % microbatches:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {microbatches} "
                             "microbatches")
        return x.reshape(microbatches, x.shape[0] // microbatches, *x.shape[1:])

    return jax.tree.map(one, batch)


def accumulated_update(state: TrainState, batch, rng: jax.Array, loss_terms: LossTerms,
                       microbatches: int = 1, frozen=None) -> tuple[TrainState, dict]:
    """Applies one update. Metrics: ``loss`` (Σ sum / Σ count), ``count``, the summed
    ``metric_sums``, and the global norms of gradient, new parameters and update (of the
    trainable parameters)."""

    def summed(params, micro, r):
        loss_sum, count, sums = loss_terms(combine(params, frozen), micro, r)
        return loss_sum, (loss_sum, count.astype(jnp.float32), sums)

    grad_fn = jax.grad(summed, has_aux=True)
    rng = jax.random.fold_in(rng, state.step)

    def body(carry, xs):
        micro, index = xs
        grads, (loss_sum, count, sums) = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (grads, loss_sum, count, sums)), None

    if microbatches == 1:  # one gradient: no accumulation loop, no zeroed accumulators
        grads, (loss_sum, count, sums) = grad_fn(state.params, batch, jax.random.fold_in(rng, 0))
    else:
        micro = _split(batch, microbatches)
        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: summed(state.params, first, rng)[1][2])
        zeros = (jax.tree.map(jnp.zeros_like, state.params), jnp.zeros(()), jnp.zeros(()),
                 jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
        (grads, loss_sum, count, sums), _ = jax.lax.scan(body, zeros,
                                                         (micro, jnp.arange(microbatches)))
    return apply_summed_gradients(state, grads, loss_sum, count, sums)


def apply_summed_gradients(state: TrainState, grads, loss_sum: jax.Array, count: jax.Array,
                           sums: dict) -> tuple[TrainState, dict]:
    """The optimizer update from ``grads = ∇Σ loss_sum`` and ``count`` (the gradient of
    ``Σ loss_sum / Σ count``), with ``accumulated_update``'s metrics."""
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    # TrainState.apply_gradients, keeping the optimizer's updates for their norm
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, dict(sums, loss=loss_sum / denom, count=count,
                           grad_norm=optax.tree.norm(grads),
                           param_norm=optax.tree.norm(new_state.params),
                           update_norm=optax.tree.norm(updates))
