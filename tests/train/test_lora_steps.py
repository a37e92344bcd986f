"""Steps on a LoRA split: adapter gradients only, no work or state for the frozen base, any mesh."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import parallel
from rlhf_jax.models import CausalLM, LoraConfig, ScalarHeadModel, lora
from rlhf_jax.pipeline.state import create_train_state
from rlhf_jax.train.reward import reward_step
from rlhf_jax.train.sft import sft_loss_terms, sft_step
from tests.train.test_steps import CONFIG, SGD, TX, rm_batch, sft_batch

LORA = CONFIG.replace(lora=LoraConfig(rank=4, targets=("q", "k", "v", "o", "gate", "up", "down",
                                                       "lm_head")))


def lora_state(model, example, tx=TX, mesh_shape=(1, 1, 1), rules="fsdp_tp"):
    """(state, frozen) of ``model`` on a mesh, created as the stages create it, adapters random."""
    partitioner = parallel.Partitioner(parallel.make_mesh(*mesh_shape, jax.devices()[:int(np.prod(mesh_shape))]),
                                       parallel.get_rules(rules))
    state, _, frozen = create_train_state(model, tx, partitioner, jax.random.key(0),
                                          np.asarray(example))
    noise = lambda path, x: (x + 0.05 * jax.random.normal(jax.random.key(len(path)), x.shape)  # noqa
                             if path[-1].key == "lora_b" else x)
    return state.replace(params=jax.tree_util.tree_map_with_path(noise, state.params)), frozen, \
        partitioner


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_steps_train_adapters_and_heads_and_never_touch_the_base(kind):
    batch = sft_batch() if kind == "sft" else rm_batch()
    model = CausalLM(LORA) if kind == "sft" else ScalarHeadModel(LORA)
    step = sft_step if kind == "sft" else reward_step
    state, frozen, _ = lora_state(model, batch["tokens"][:1] if kind == "sft"
                                  else batch["tokens"][:1, 0])
    before = jax.tree.map(np.asarray, frozen)
    run = jax.jit(functools.partial(step, model=model))
    new = state
    for i in range(3):
        new, _ = run(new, batch, jax.random.key(i), frozen)
    assert jax.tree.all(jax.tree.map(np.array_equal, jax.tree.map(np.asarray, frozen), before))
    moved = jax.tree_util.tree_map_with_path(
        lambda path, a, b: not np.array_equal(a, b) or path[-1].key == "bias",  # held: reward.py
        state.params, new.params)
    assert all(jax.tree.leaves(moved))  # every adapter (and the RM's head kernel) trained
    # Adam's two moments for the trainable params only: nothing of the base's size.
    moments = sum(x.size for x in jax.tree.leaves(new.opt_state) if x.ndim)
    assert moments == 2 * sum(x.size for x in jax.tree.leaves(new.params) if x.ndim)
    assert sum(x.size for x in jax.tree.leaves(frozen)) > moments


def test_adapter_gradient_is_the_full_gradient_restricted_to_the_adapters():
    batch = sft_batch()
    model = CausalLM(LORA)
    state, frozen, _ = lora_state(model, batch["tokens"][:1], tx=optax.sgd(1.0))
    full = lora.combine(state.params, frozen)

    def loss(params):
        total, count, _ = sft_loss_terms(model, params, batch, None)
        return total / count

    reference = lora.split(jax.grad(loss)(full), LORA.lora)[0]
    new, metrics = jax.jit(functools.partial(sft_step, model=model))(
        state, batch, jax.random.key(0), frozen)
    grads = jax.tree.map(lambda a, b: a - b, state.params, new.params)  # SGD, lr 1, no clipping
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=2e-4, atol=1e-7), grads,
                 reference)


def _step_flops(model, state, frozen, batch):
    compiled = jax.jit(functools.partial(sft_step, model=model)).lower(
        state, batch, jax.random.key(0), frozen).compile()
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_backward_pass_skips_the_frozen_kernels_weight_gradients(dtype):
    """A training step is ~3 forward passes (forward, input gradients, weight gradients); with
    the base frozen, XLA must drop the weight-gradient matmuls, about one forward pass of work
    (a little less: attention scores have no weights, and the adapters add their own)."""
    config = CONFIG.replace(dtype=dtype, d_model=128, mlp_dim=384, head_dim=32, vocab_size=64)
    batch = sft_batch(rows=4, row_len=64)
    example = batch["tokens"][:1]
    full_model = CausalLM(config)
    full_state, _, _ = lora_state(full_model, example)
    lora_model = CausalLM(config.replace(lora=LoraConfig(rank=4)))
    state, frozen, _ = lora_state(lora_model, example)
    full = _step_flops(full_model, full_state, None, batch)
    adapters = _step_flops(lora_model, state, frozen, batch)
    forward = jax.jit(lambda p: full_model.apply({"params": p}, batch["tokens"])).lower(
        full_state.params).compile().cost_analysis()
    forward = (forward[0] if isinstance(forward, list) else forward)["flops"]
    assert 2.8 < full / forward < 3.4
    assert (full - adapters) / forward > 0.8
    assert adapters / full < 0.75


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_a_lora_step_is_the_same_on_a_2x2x2_mesh(kind):
    batch = sft_batch() if kind == "sft" else rm_batch()
    model = CausalLM(LORA) if kind == "sft" else ScalarHeadModel(LORA)
    step = functools.partial(sft_step if kind == "sft" else reward_step, model=model)
    example = batch["tokens"][:1] if kind == "sft" else batch["tokens"][:1, 0]
    results = []
    for shape in ((1, 1, 1), (2, 2, 2)):
        state, frozen, partitioner = lora_state(model, example, tx=SGD, mesh_shape=shape)
        new, metrics = partitioner.jit(step, donate_argnums=0)(
            state, partitioner.shard_batch(batch), jax.random.key(1), frozen)
        results.append((jax.tree.map(np.asarray, new.params), float(metrics["loss"])))
        if shape == (2, 2, 2):
            q = new.params["trunk"]["layers"]["attn"]["q"]
            assert not q["lora_a"].sharding.is_fully_replicated  # adapters are sharded too
    (single, loss1), (mesh, loss8) = results
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), mesh, single)


def test_fresh_adapters_are_random_a_and_zero_b():
    partitioner = parallel.Partitioner(parallel.make_mesh(1, 1, 1, jax.devices()[:1]),
                                       parallel.get_rules("fsdp"))
    state, _, _ = create_train_state(CausalLM(LORA), TX, partitioner, jax.random.key(0),
                                     sft_batch()["tokens"][:1])
    q = nn.meta.unbox(state.params)["trunk"]["layers"]["attn"]["q"]
    assert float(jnp.std(q["lora_a"])) > 0
    assert float(jnp.max(jnp.abs(q["lora_b"]))) == 0.0
