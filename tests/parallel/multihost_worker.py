"""One process of the two-process test: 4 local CPU devices, one 8-device mesh, one forward pass.

Usage: python -m tests.parallel.multihost_worker PORT PROCESS_ID OUT.npy
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from rlhf_jax import parallel  # noqa: E402
from tests.parallel.multihost_reference import MESH, RULES, inputs, model  # noqa: E402


def main(port: str, process_id: str, out: str) -> None:
    parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = parallel.make_mesh(*MESH)
    rules = parallel.get_rules(RULES)
    ids, mask = inputs()
    rows = slice(4 * jax.process_index(), 4 * (jax.process_index() + 1))  # this host's rows
    params, _ = parallel.init_params(model(), mesh, rules, jax.random.key(0), ids[:1])
    batch = parallel.shard_batch({"ids": ids[rows], "mask": mask[rows]}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        logits = jax.jit(model().apply)({"params": params}, batch["ids"],
                                        attention_mask=batch["mask"])
    logits = multihost_utils.process_allgather(logits, tiled=True)
    if jax.process_index() == 0:
        np.save(out, np.asarray(logits))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
