"""A trained reward model (or value function) on disk: orbax params, its config, its tokenizer.

``directory/params`` holds the ``ScalarHeadModel`` params (orbax, restored
straight into their shardings), ``directory/model.json`` the ``ModelConfig``
and whatever the stage records about the model (for a reward model: the
demonstration offset already folded into the head's bias, validation
accuracy), and the tokenizer files sit beside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from rlhf_jax import parallel
from rlhf_jax.errors import MissingFileError
from rlhf_jax.files import write_json
from rlhf_jax.models import ModelConfig, ScalarHeadModel
from rlhf_jax.parallel.state import abstract_state

CONFIG_FILE = "model.json"


def save_scalar_model(directory: str, config: ModelConfig, params, info: Optional[dict] = None,
                      tokenizer=None) -> str:
    """Writes params, ``model.json`` (``{"model": config fields, **info}``) and the tokenizer.
    On multi-host every process calls it (orbax writes the params collectively, process 0 the
    rest) and returns once the directory is complete."""
    directory = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, "params"), params, force=True)
        checkpointer.wait_until_finished()

    def write():
        write_json(os.path.join(directory, CONFIG_FILE),
                   dict(model=dataclasses.asdict(config), **(info or {})))
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

    parallel.on_process_zero(f"saved {directory}", write)
    return directory


def load_scalar_model(directory: str, mesh: Optional[Mesh] = None,
                      rules=()) -> tuple[ModelConfig, dict, dict]:
    """``(ModelConfig, params, info)``; with a ``mesh`` every device reads only its shards,
    without one the whole model goes to this process's first device, however many devices or
    processes saved it."""
    directory = os.path.abspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such file: not a saved scalar model directory")
    with open(path) as f:
        info = json.load(f)
    config = ModelConfig.from_dict(info.pop("model"))
    model = ScalarHeadModel(config)
    init = lambda rng: model.init(rng, jnp.zeros((1, 1), jnp.int32))["params"]
    if mesh is None:
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                                nn.meta.unbox(jax.eval_shape(init, jax.random.key(0))))
    else:
        abstract, _ = abstract_state(init, mesh, rules, jax.random.key(0))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(directory, "params"), abstract)
    return config, params, info
