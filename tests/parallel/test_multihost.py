"""Two processes joined with jax.distributed (gloo on CPU) compute what one process computes."""

import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np

from rlhf_jax import parallel
from tests.parallel.multihost_reference import MESH, RULES, inputs, model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "logits.npy")
    port = str(free_port())
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    workers = [subprocess.Popen([sys.executable, "-m", "tests.parallel.multihost_worker", port,
                                 str(i), out], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n\n".join(logs)[-4000:]

    mesh = parallel.make_mesh(*MESH)
    rules = parallel.get_rules(RULES)
    ids, mask = inputs()
    params, _ = parallel.init_params(model(), mesh, rules, jax.random.key(0), ids[:1])
    batch = parallel.shard_batch({"ids": ids, "mask": mask}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        ref = jax.jit(model().apply)({"params": params}, batch["ids"], attention_mask=batch["mask"])
    np.testing.assert_allclose(np.load(out), np.asarray(ref), atol=1e-5)
