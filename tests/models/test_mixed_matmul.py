"""The mixed-precision matmul: float32 accumulation of bfloat16 products, forward and backward."""

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models.matmul import mixed_matmul

BF16 = jnp.bfloat16


def test_forward_and_gradients_equal_a_numpy_reference():
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(2, 3, 16), BF16)
    w = jnp.asarray(rng.randn(16, 8), BF16)
    g = rng.randn(2, 3, 8).astype(np.float32)  # the float32 cotangent of the output
    y, vjp = jax.vjp(mixed_matmul, x, w)
    dx, dw = vjp(jnp.asarray(g))
    xf, wf = np.asarray(x, np.float32), np.asarray(w, np.float32)
    gb = np.asarray(jnp.asarray(g, BF16), np.float32)  # the backward rounds g to bfloat16
    assert y.dtype == jnp.float32 and dx.dtype == dw.dtype == BF16
    np.testing.assert_allclose(np.asarray(y), xf @ wf, rtol=1e-5, atol=1e-5)
    ref_dx = gb @ wf.T
    ref_dw = xf.reshape(-1, 16).T @ gb.reshape(-1, 8)
    # bfloat16 outputs: equal to the reference up to one bfloat16 rounding.
    np.testing.assert_allclose(np.asarray(dx, np.float32), ref_dx, rtol=8e-3, atol=8e-3)
    np.testing.assert_allclose(np.asarray(dw, np.float32), ref_dw, rtol=1e-2, atol=1e-2)
