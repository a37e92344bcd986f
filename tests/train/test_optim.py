"""Weight decay shrinks the linear maps' kernels only (or, configured so, every parameter)."""

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.train.optim import OptimizerConfig, make_optimizer

PARAMS = {"trunk": {"embed": {"embedding": jnp.ones((8, 4))},
                    "layers": {"attn": {"q": {"kernel": jnp.ones((2, 4, 4)),
                                              "bias": jnp.ones((2, 4))}},
                               "attn_norm": {"scale": jnp.ones((2, 4))}}},
          "head": {"kernel": jnp.ones((4,)), "bias": jnp.ones(())}}


def one_step_without_gradient(decay: str) -> dict:
    """AdamW's update of a zero gradient is the decoupled decay alone: −lr·wd·θ."""
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1, total_steps=10, weight_decay=0.5,
                                        final_fraction=1.0, clip_norm=0.0, decay=decay))
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    return jax.tree_util.tree_map_with_path(
        lambda path, u: (jax.tree_util.keystr(path), float(np.max(np.abs(u)))), updates)


def test_kernels_decay_and_biases_norms_and_embeddings_do_not():
    flat = dict(jax.tree.leaves(one_step_without_gradient("kernels"),
                                is_leaf=lambda x: isinstance(x, tuple)))
    for name, size in flat.items():
        expected = 0.1 * 0.5 if name.endswith("['kernel']") else 0.0
        np.testing.assert_allclose(size, expected, rtol=1e-6, err_msg=name)


def test_decay_all_shrinks_every_parameter():
    flat = dict(jax.tree.leaves(one_step_without_gradient("all"),
                                is_leaf=lambda x: isinstance(x, tuple)))
    np.testing.assert_allclose(list(flat.values()), 0.05, rtol=1e-6)
