"""The decoder's matmuls: inputs in the compute dtype, products accumulated in float32.

``matmul`` is every projection's product. In bfloat16 it runs as ``mixed_matmul``, whose
backward pass keeps bfloat16 inputs too. With ``ModelConfig.weights_left`` (the sampler's
decode steps on CPU) a product of a few rows runs as ``weights_left_matmul``, ``(W·xᵀ)ᵀ``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rlhf_jax.models.config import ModelConfig

F32 = jnp.float32


@jax.custom_vjp
def mixed_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x (…, K) · w (K, N)`` with low-precision inputs and float32 accumulation, both ways.

    Forward: the float32 product of the (bfloat16) inputs. Backward: the float32
    cotangent g is cast to the inputs' dtype, so ``dx = g·wᵀ`` and ``dw = xᵀ·g``
    also run as bfloat16 × bfloat16 → float32 matmuls (what torch autocast does),
    not as float32 × bfloat16 products, which XLA runs at float32 speed.
    """
    return jnp.dot(x, w, preferred_element_type=F32)


def _mixed_matmul_fwd(x, w):
    return mixed_matmul(x, w), (x, w)


def _mixed_matmul_bwd(residuals, g):
    x, w = residuals
    g = g.astype(x.dtype)
    lead = tuple(range(x.ndim - 1))
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=F32)
    dw = jax.lax.dot_general(x, g, ((lead, lead), ((), ())), preferred_element_type=F32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def matmul(x: jax.Array, w: jax.Array, config: ModelConfig) -> jax.Array:
    """``x (…, K) · w (K, N)`` in the compute dtype, accumulated in float32 (with
    ``config.weights_left``, a few rows as ``weights_left_matmul``).

    The leading dims of x are flattened into one, so that the backward pass's weight
    gradient ``xᵀ·g`` is one 2-D product over the M rows. With (B, T) kept apart, XLA:CPU
    lays the cotangent g out transposed for it, a copy fused into g's producer (the SiLU's
    backward, the log-softmax's) that runs as a strided loop: on an AVX2 CPU those copies took
    17% of a `small` policy's profiled forward and backward pass (``benchmarks/RESULTS.md``).
    """
    x, w = x.astype(config.compute_dtype), w.astype(config.compute_dtype)
    if takes_weights_left(config, x, w):
        # The barrier keeps wᵀ a transposed copy (which XLA hoists out of a decode loop);
        # without it XLA folds the transpose back into the product.
        return weights_left_matmul(x, jax.lax.optimization_barrier(w.T))
    rows = x.reshape(-1, x.shape[-1])
    if config.compute_dtype == F32:
        y = jnp.dot(rows, w, preferred_element_type=F32)
    else:
        y = mixed_matmul(rows, w)
    return y.reshape(*x.shape[:-1], w.shape[-1])


# ``ModelConfig.weights_left`` sends at most this many rows through ``weights_left_matmul``,
# and only weights of at least this many entries (smaller ones sit in cache: x·W is as fast).
FEW_ROWS, LARGE_WEIGHT = 64, 1 << 16


def takes_weights_left(config: ModelConfig, x: jax.Array, w: jax.Array) -> bool:
    """Whether ``x (…, K)`` times the weight ``w`` runs as ``weights_left_matmul``: asked for
    by ``config.weights_left``, 2 to ``FEW_ROWS`` rows, at least ``LARGE_WEIGHT`` entries."""
    rows = math.prod(x.shape[:-1])
    return config.weights_left and 1 < rows <= FEW_ROWS and w.size >= LARGE_WEIGHT


def weights_left_matmul(x: jax.Array, w_t: jax.Array) -> jax.Array:
    """``x (…, K) · w_tᵀ`` for ``w_t`` (N, K), computed as ``(w_t · xᵀ)ᵀ`` on the M rows of x
    flattened, float32 (…, N).

    The same products, with the weight as the left operand and the (N, M) result
    transposed after a barrier (without it XLA folds the transpose back into the
    product). For 2 ≤ M ≤ 64 rows, a decode step's, and weights too large for the
    cache, XLA:CPU runs this form 1.1–2.0× faster than ``x·W`` (``benchmarks/RESULTS.md``);
    at one row and at hundreds it is not faster.
    """
    rows = x.reshape(-1, x.shape[-1])
    y = jax.lax.dot_general(w_t, rows, (((1,), (1,)), ((), ())), preferred_element_type=F32)
    return jax.lax.optimization_barrier(y).T.reshape(*x.shape[:-1], w_t.shape[0])
