"""A stage's model, tokenizer and train state, created directly in their shardings.

``config.init`` names where weights come from: ``""`` for random weights of
``config.model`` (a ``ModelConfig`` field dict, e.g. ``configs/models.py``'s
``tiny``) with the byte-level tokenizer, or a Hugging Face directory or
``.gguf`` file (the architecture and tokenizer are then the checkpoint's; only
``dtype``, ``param_dtype``, ``dropout_rate`` and ``remat_policy`` of
``config.model`` apply). A model whose vocabulary is smaller than its tokenizer's
could not embed every token id: ``load_tokenizer_for`` refuses it.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import optax
from flax.training.train_state import TrainState

from rlhf_jax.checkpoints import load_pretrained, load_tokenizer, read_model_config
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.errors import CheckpointError, ConfigError
from rlhf_jax.models import ModelConfig
from rlhf_jax.parallel import Partitioner

RUNTIME_FIELDS = ("dtype", "param_dtype", "dropout_rate", "remat_policy")


def load_tokenizer_for(config):
    """The tokenizer of ``config.init``, or the byte tokenizer for random weights of
    ``config.model``, checked against the model's vocabulary."""
    tokenizer = load_tokenizer(config.init) if config.init else byte_tokenizer()
    vocab = read_model_config(config.init).vocab_size if config.init else config.model.vocab_size
    if vocab < len(tokenizer):
        error, key = ((CheckpointError, f"{config.init}: vocab_size") if config.init else
                      (ConfigError, "config.model.vocab_size"))
        raise error(f"{key}={vocab} is smaller than the tokenizer's {len(tokenizer)} tokens: "
                    "the model cannot embed every token id")
    return tokenizer


def initial_weights(config, partitioner: Partitioner) -> tuple[ModelConfig, Optional[dict]]:
    """``(ModelConfig, pretrained CausalLM params or None for random init)``."""
    model = config.model
    if not config.init:
        return model, None
    loaded, params = load_pretrained(config.init, dtype=model.dtype, param_dtype=model.param_dtype,
                                     mesh=partitioner.mesh, rules=partitioner.rules)
    return loaded.replace(**{k: getattr(model, k) for k in RUNTIME_FIELDS}), params


def create_train_state(module: nn.Module, tx: optax.GradientTransformation,
                       partitioner: Partitioner, rng: jax.Array, example: jax.Array,
                       replace: Optional[dict] = None) -> tuple[TrainState, Any]:
    """``(state, abstract state)``: a fresh TrainState laid out by the rules.

    Parameters are initialised from ``rng``, then the top-level subtrees in
    ``replace`` (for example ``{'trunk': pretrained trunk}``) are swapped in; the
    optimizer state starts from the final parameters.
    """

    def create(r):
        return TrainState.create(apply_fn=module.apply, params=module.init(r, example)["params"],
                                 tx=tx)

    def build(r, pretrained):
        params = nn.meta.unbox(module.init(r, example)["params"])
        return TrainState.create(apply_fn=module.apply, params=dict(params, **pretrained), tx=tx)

    abstract, shardings = partitioner.abstract(create, rng)
    state = partitioner.jit(build, out_shardings=shardings)(rng, replace or {})
    return state, abstract
