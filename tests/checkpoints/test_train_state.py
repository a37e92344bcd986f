"""Orbax train-state checkpoints: sharded round trip, and resume equals an uninterrupted run."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training.train_state import TrainState

from configs.models import get_config
from rlhf_jax import parallel
from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.sft import sft_step

CONFIG = ModelConfig.from_dict(get_config("tiny")).replace(vocab_size=64)
MODEL = CausalLM(CONFIG)
TX = make_optimizer(OptimizerConfig(learning_rate=1e-2, total_steps=20, warmup_steps=2))


def create(rng):
    params = MODEL.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
    return TrainState.create(apply_fn=MODEL.apply, params=params, tx=TX)


def batches(n):
    rng = np.random.RandomState(0)
    for _ in range(n):
        tokens = rng.randint(1, 64, (8, 12)).astype(np.int32)
        yield dict(tokens=tokens, segment_ids=np.ones_like(tokens), loss_mask=np.ones_like(tokens))


def run(state, data, mesh, rules, seed=0):
    step = jax.jit(functools.partial(sft_step, model=MODEL), donate_argnums=0)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        for batch in data:
            state, metrics = step(state, parallel.shard_batch(batch, mesh, rules),
                                  jax.random.key(seed))
            losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def mesh_rules():
    return parallel.make_mesh(2, 2, 2), parallel.get_rules("fsdp_tp")


def test_resume_equals_an_uninterrupted_run(tmp_path, mesh_rules):
    mesh, rules = mesh_rules
    n = 3
    data = list(batches(2 * n))
    straight, straight_losses = run(parallel.sharded_init(create, mesh, rules, jax.random.key(0))[0],
                                    data, mesh, rules)

    first, first_losses = run(parallel.sharded_init(create, mesh, rules, jax.random.key(0))[0],
                              data[:n], mesh, rules)
    saver = TrainCheckpoints(str(tmp_path / "ckpt"))
    assert saver.save(n, first, extra={"batches_seen": n, "seed": 0})
    saver.wait()
    saver.close()
    del first

    restarted = TrainCheckpoints(str(tmp_path / "ckpt"))  # as a new process would
    assert restarted.latest_step() == n
    abstract, _ = parallel.abstract_state(create, mesh, rules, jax.random.key(0))
    state, extra = restarted.restore(abstract)
    assert extra == {"batches_seen": n, "seed": 0} and int(state.step) == n
    q = state.params["trunk"]["layers"]["attn"]["q"]["kernel"]
    assert q.sharding.spec == abstract.params["trunk"]["layers"]["attn"]["q"]["kernel"].sharding.spec
    resumed, resumed_losses = run(state, data[extra["batches_seen"]:], mesh, rules)

    assert first_losses + resumed_losses == straight_losses
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.params, straight.params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.opt_state, straight.opt_state)


def test_keeps_the_newest_and_restoring_nothing_fails(tmp_path, mesh_rules):
    mesh, rules = mesh_rules
    state = parallel.sharded_init(create, mesh, rules, jax.random.key(0))[0]
    saver = TrainCheckpoints(str(tmp_path / "ckpt"), max_to_keep=2, asynchronous=False)
    for step in (1, 2, 3):
        saver.save(step, state, extra={"step": step})
    assert list(saver.manager.all_steps()) == [2, 3]
    empty = TrainCheckpoints(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no checkpoint to restore"):
        empty.restore(state)
