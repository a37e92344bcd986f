"""Attention against a NumPy loop and against autodiff of the plain softmax formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models import ModelConfig
from rlhf_jax.models.attention import grouped_attention, library_attention

B, T, N, K, H = 2, 12, 4, 2, 8


def inputs(seed=0):
    r = np.random.RandomState(seed)
    q = r.randn(B, T, N, H).astype(np.float32)
    k, v = (r.randn(B, K, T, H).astype(np.float32) for _ in range(2))
    causal = np.tril(np.ones((T, T), bool))
    segments = np.array([[1] * 5 + [2] * 7, [0] * 3 + [1] * 9])  # packed; left-padded
    mask = causal & (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    mask[1, :3, :3] = causal[:3, :3]  # the padding rows attend among themselves: none is empty
    return q, k, v, mask


def numpy_attention(q, k, v, mask):
    """One query row, one head at a time: softmax over the allowed keys."""
    out = np.zeros(q.shape, np.float64)
    for b in range(B):
        for n in range(N):
            for t in range(T):
                keys = np.flatnonzero(mask[b, t])
                s = k[b, n // (N // K), keys] @ q[b, t, n] / np.sqrt(H)
                p = np.exp(s - s.max())
                out[b, t, n] = (p / p.sum()) @ v[b, n // (N // K), keys]
    return out


def softmax_attention(q, k, v, mask):
    """The formula written plainly in jnp; jax.grad differentiates it."""
    rep = lambda x: jnp.repeat(x, N // K, axis=1)  # noqa: E731
    s = jnp.einsum("BTNH,BNSH->BNTS", q, rep(k)) / np.sqrt(H)
    p = jax.nn.softmax(jnp.where(mask[:, None], s, -jnp.inf), axis=-1)
    return jnp.einsum("BNTS,BNSH->BTNH", p, rep(v))


@pytest.mark.parametrize("block", [0, 1, 4, 5, 12])
def test_forward_matches_a_numpy_loop(block):
    q, k, v, mask = inputs()
    out = grouped_attention(q, k, v, mask, jnp.float32, block)
    np.testing.assert_allclose(out, numpy_attention(q, k, v, mask), atol=2e-6)


@pytest.mark.parametrize("block", [0, 5])
def test_gradients_match_autodiff_of_the_plain_formula(block):
    q, k, v, mask = inputs(1)
    w = np.random.RandomState(2).randn(B, T, N, H).astype(np.float32)
    ours = jax.grad(lambda *x: jnp.sum(grouped_attention(*x, mask, jnp.float32, block) * w),
                    argnums=(0, 1, 2))(q, k, v)
    plain = jax.grad(lambda *x: jnp.sum(softmax_attention(*x, mask) * w), argnums=(0, 1, 2))(
        q, k, v)
    for name, a, b in zip("qkv", ours, plain):
        assert np.abs(b).max() > 0.1
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)


def test_the_cudnn_call_has_the_same_layout_and_mask():
    """``library_attention`` is the cuDNN path's call; with XLA's kernel it gives our result
    (CPU cannot run cuDNN: this checks the layouts, the mask and the causal flag)."""
    q, k, v, mask = inputs(3)
    ours = grouped_attention(q, k, v, mask, jnp.float32)
    np.testing.assert_allclose(library_attention(q, k, v, mask, jnp.float32, "xla"), ours,
                               atol=2e-6)


def test_bfloat16_inputs_stay_close_to_float32():
    q, k, v, mask = inputs(4)
    full = grouped_attention(q, k, v, mask, jnp.float32, 4)
    half = grouped_attention(q, k, v, mask, jnp.bfloat16, 4)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, atol=0.05)


def test_cudnn_needs_a_half_precision_dtype():
    base = dict(family="llama", vocab_size=16, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1,
                head_dim=4, mlp_dim=16, max_seq_len=8)
    ModelConfig(**base, attention="cudnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="ModelConfig.attention"):
        ModelConfig(**base, attention="cudnn")
    with pytest.raises(ValueError, match="ModelConfig.attention_block"):
        ModelConfig(**base, attention_block=-1)
