"""SFT and reward steps: exact microbatching, mesh independence, gradients, learning."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from configs.models import get_config
from rlhf_jax import parallel
from rlhf_jax.data.tokenize import Example, pack
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.reward import reward_loss_terms, reward_step
from rlhf_jax.train.sft import sft_step

CONFIG = ModelConfig.from_dict(get_config("tiny")).replace(vocab_size=64)
TX = make_optimizer(OptimizerConfig(learning_rate=3e-3, total_steps=100))
# Adam's first step is ±lr wherever |g| ≫ ε, so it magnifies float summation-order noise in
# near-zero gradients; comparisons of one update use SGD, where Δparams = lr·Δgrad.
SGD = optax.sgd(0.5)


def sft_batch(seed=0, rows=8, row_len=16):
    rng = np.random.RandomState(seed)
    examples = []
    while len(examples) < 3 * rows:
        n_prompt, n_response = rng.randint(2, 5), rng.randint(2, 5)
        examples.append(Example(tuple(rng.randint(1, 64, n_prompt + n_response)),
                                (0,) * n_prompt + (1,) * n_response))
    packed = pack(examples, row_len)
    return {k: v[:rows] for k, v in packed.items()}


def rm_batch(seed=0, prompts=8, k_max=4, length=10):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, 64, (prompts, k_max, length)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[:, :, :2] = 0  # left padding
    valid = np.zeros((prompts, k_max), bool)
    rank = np.zeros((prompts, k_max), np.int32)
    for b in range(prompts):
        k = 2 + b % (k_max - 1)
        valid[b, :k] = True
        rank[b, :k] = rng.permutation(k)
        rank[b, k:] = k_max
    return dict(tokens=tokens, mask=mask, rank=rank, valid=valid)


def new_state(model, example, mesh=None, rules=(), tx=TX):
    def create(rng):
        params = model.init(rng, jnp.asarray(example))["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    if mesh is None:
        return jax.jit(lambda r: nn.meta.unbox(create(r)))(jax.random.key(0))
    return parallel.sharded_init(create, mesh, rules, jax.random.key(0))[0]


def case(kind):
    """(model, batch, step, one example row for init) of the SFT or the reward step."""
    if kind == "sft":
        batch = sft_batch()
        return CausalLM(CONFIG), batch, sft_step, batch["tokens"][:1]
    batch = rm_batch()
    return ScalarHeadModel(CONFIG), batch, reward_step, batch["tokens"][:1, 0]


def close(a, b, atol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol),
                 a, b)


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_microbatches_give_the_same_update(kind):
    model, batch, step, example = case(kind)
    state = new_state(model, example, tx=SGD)
    run = lambda m: jax.jit(functools.partial(step, model=model, microbatches=m))(  # noqa: E731
        state, batch, jax.random.key(1))
    (one, m1), (four, m4) = run(1), run(4)
    close(one.params, four.params, 1e-6)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
    assert float(m1["count"]) == float(m4["count"]) > 0


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_one_step_is_the_same_on_a_2x2x2_mesh(kind):
    model, batch, step, example = case(kind)
    ref_state, ref = jax.jit(functools.partial(step, model=model))(
        new_state(model, example, tx=SGD), batch, jax.random.key(1))
    mesh, rules = parallel.make_mesh(2, 2, 2), parallel.get_rules("fsdp_tp")
    state = new_state(model, example, mesh, rules, tx=SGD)
    sharded_batch = parallel.shard_batch(batch, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out_state, out = jax.jit(functools.partial(step, model=model), donate_argnums=0)(
            state, sharded_batch, jax.random.key(1))
    assert not out_state.params["trunk"]["embed"]["embedding"].sharding.is_fully_replicated
    np.testing.assert_allclose(out["loss"], ref["loss"], rtol=1e-5)
    close(out_state.params, ref_state.params, 1e-5)


def test_reward_gradient_matches_finite_differences():
    model = ScalarHeadModel(CONFIG.replace(n_layers=1))
    batch = jax.tree.map(jnp.asarray, rm_batch(prompts=3))
    params = new_state(model, batch["tokens"][:1, 0]).params

    def loss(p):
        s, n, _ = reward_loss_terms(model, p, batch, jax.random.key(0))
        return s / n

    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), params)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(jax.grad(loss)(params)),
                                                   jax.tree.leaves(direction)))
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)  # noqa: E731
    numeric = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
    np.testing.assert_allclose(float(numeric), float(analytic), rtol=2e-2)
    assert abs(float(analytic)) > 1e-3


def test_sft_steps_lower_the_loss_and_report_norms():
    model, batch = CausalLM(CONFIG), sft_batch()
    state = new_state(model, batch["tokens"][:1])
    step = jax.jit(functools.partial(sft_step, model=model), donate_argnums=0)
    losses = []
    for i in range(15):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0]
    assert int(state.step) == 15
    assert all(np.isfinite(float(metrics[k])) and float(metrics[k]) > 0
               for k in ("grad_norm", "param_norm", "update_norm", "perplexity"))


def test_reward_metrics():
    model, batch = ScalarHeadModel(CONFIG), rm_batch()
    state = new_state(model, batch["tokens"][:1, 0])
    _, m = jax.jit(functools.partial(reward_step, model=model))(state, batch, jax.random.key(0))
    assert float(m["pairs"]) == sum(k * (k - 1) // 2 for k in (2 + b % 3 for b in range(8)))
    assert 0 <= float(m["accuracy"]) <= 1 and float(m["responses"]) == batch["valid"].sum()
    assert float(m["count"]) == 8 and float(m["reward_std"]) >= 0
