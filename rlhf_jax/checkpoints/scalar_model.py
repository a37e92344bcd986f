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
from rlhf_jax.checkpoints import load_pretrained
from rlhf_jax.models import ModelConfig, ScalarHeadModel
from rlhf_jax.models.lora import combine, split
from rlhf_jax.parallel.state import abstract_state

CONFIG_FILE = "model.json"


def save_scalar_model(directory: str, config: ModelConfig, params, info: Optional[dict] = None,
                      tokenizer=None, frozen=None, base: str = "") -> str:
    """Writes params, ``model.json`` (``{"model": config fields, **info}``) and the tokenizer.

    With adapters (``config.lora``), ``params`` are the trainable ones and ``frozen`` the
    rest; when the frozen base is a checkpoint (``base``: its path, the stage's ``init``) only
    ``params`` are written and ``model.json`` names the base (``"base"``); otherwise (a random
    base) both are. On multi-host every process calls it (orbax writes the params
    collectively, process 0 the rest) and returns once the directory is complete."""
    directory = os.path.abspath(directory)
    own_base = bool(config.lora.rank and base)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, "params"),
                          params if own_base else combine(params, frozen), force=True)
        checkpointer.wait_until_finished()
    if own_base:
        info = dict(info or {}, base=os.path.abspath(base))

    def write():
        write_json(os.path.join(directory, CONFIG_FILE),
                   dict(model=dataclasses.asdict(config), **(info or {})))
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

    parallel.on_process_zero(f"saved {directory}", write)
    return directory


def read_scalar_info(directory: str) -> tuple[ModelConfig, dict]:
    """``(ModelConfig, info)`` of a saved scalar model, without its weights; ``info["base"]``
    is the checkpoint its adapters sit on, if it was saved without it."""
    path = os.path.join(os.path.abspath(directory), CONFIG_FILE)
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such file: not a saved scalar model directory")
    with open(path) as f:
        info = json.load(f)
    return ModelConfig.from_dict(info.pop("model")), info


def load_scalar_model(directory: str, mesh: Optional[Mesh] = None, rules=(),
                      base: Optional[dict] = None) -> tuple[ModelConfig, dict, dict]:
    """``(ModelConfig, params, info)``; with a ``mesh`` every device reads only its shards,
    without one the whole model goes to this process's first device, however many devices or
    processes saved it. A model saved without its base gets it from ``base`` (params holding
    ``trunk``, e.g. a policy's loaded from the same checkpoint: shared, not copied) or, if
    None, from the checkpoint ``info["base"]`` names."""
    directory = os.path.abspath(directory)
    config, info = read_scalar_info(directory)
    model = ScalarHeadModel(config)

    def saved(rng):  # the tree on disk: without the base if it was saved without it
        params = model.init(rng, jnp.zeros((1, 1), jnp.int32))["params"]
        return split(params, config.lora)[0] if info.get("base") else params

    if mesh is None:
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                                nn.meta.unbox(jax.eval_shape(saved, jax.random.key(0))))
    else:
        abstract, _ = abstract_state(saved, mesh, rules, jax.random.key(0))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(directory, "params"), abstract)
    if info.get("base"):
        if base is None:
            _, base = load_pretrained(info["base"], dtype=config.dtype,
                                      param_dtype=config.param_dtype, mesh=mesh, rules=rules)
        params = combine(params, {"trunk": base["trunk"]})
    return config, params, info
