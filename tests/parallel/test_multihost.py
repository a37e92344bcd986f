"""Two processes joined with jax.distributed (gloo on CPU) compute what one process computes;
the entry points' way of joining them (``initialize_from_env``)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import configs.common
from rlhf_jax import parallel
from rlhf_jax.parallel import distributed
from tests.parallel.multihost_reference import MESH, RULES, inputs, model
from tests.processes import finish, free_port, joined, start


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "logits.npy")
    port = str(free_port())
    finish([start(["-m", "tests.parallel.multihost_worker", port, str(i), out], devices=4)
            for i in range(2)], timeout=300)

    mesh = parallel.make_mesh(*MESH)
    rules = parallel.get_rules(RULES)
    ids, mask = inputs()
    params, _ = parallel.init_params(model(), mesh, rules, jax.random.key(0), ids[:1])
    batch = parallel.shard_batch({"ids": ids, "mask": mask}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        ref = jax.jit(model().apply)({"params": params}, batch["ids"], attention_mask=batch["mask"])
    np.testing.assert_allclose(np.load(out), np.asarray(ref), atol=1e-5)


def test_initialize_from_env_takes_the_config_then_the_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed, "initialize", lambda *args: calls.append(args))
    for name in joined(0, 1, 0):
        monkeypatch.delenv(name, raising=False)
    config = configs.common.distributed()
    distributed.initialize_from_env(config)
    assert calls == []  # nothing set anywhere: one process
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    config.coordinator = "10.0.0.1:1234"
    distributed.initialize_from_env(config)
    config.process_id = 0
    distributed.initialize_from_env(config)
    assert calls == [("10.0.0.1:1234", 2, 1), ("10.0.0.1:1234", 2, 0)]
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        distributed.initialize_from_env(config)
