"""One process of the two-process test: 4 local CPU devices, one 8-device mesh, one forward pass.

Usage: python -m tests.parallel.multihost_worker PORT PROCESS_ID OUT.npy, started by
``tests.processes.start`` (which gives it 4 CPU devices).
"""

import sys

import flax.linen as nn
import jax
import numpy as np

from rlhf_jax import parallel
from tests.parallel.multihost_reference import MESH, RULES, inputs, model


def main(port: str, process_id: str, out: str) -> None:
    parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = parallel.make_mesh(*MESH)
    rules = parallel.get_rules(RULES)
    ids, mask = inputs()  # the global batch: each process's devices take their rows of it
    params, _ = parallel.init_params(model(), mesh, rules, jax.random.key(0), ids[:1])
    batch = parallel.shard_batch({"ids": ids, "mask": mask}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        logits = jax.jit(model().apply)({"params": params}, batch["ids"],
                                        attention_mask=batch["mask"])
    logits = parallel.to_host(logits)
    if jax.process_index() == 0:
        np.save(out, np.asarray(logits))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
