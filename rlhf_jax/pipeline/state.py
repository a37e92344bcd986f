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
from rlhf_jax.models.lora import combine, split
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
    """``(ModelConfig with config.lora's adapters, pretrained CausalLM params or None for random
    init)``; the pretrained params are the base alone (no adapters)."""
    model = _with_lora(config.model, config.lora)
    if not config.init:
        return model, None
    loaded, params = load_pretrained(config.init, dtype=model.dtype, param_dtype=model.param_dtype,
                                     mesh=partitioner.mesh, rules=partitioner.rules)
    loaded = loaded.replace(**{k: getattr(model, k) for k in RUNTIME_FIELDS})
    return _with_lora(loaded, config.lora), params


def _with_lora(model: ModelConfig, lora) -> ModelConfig:
    try:
        return model.replace(lora=lora)
    except ValueError as e:  # adapters this architecture does not have
        raise ConfigError(f"config.lora: {e}") from None


def create_train_state(module: nn.Module, tx: optax.GradientTransformation,
                       partitioner: Partitioner, rng: jax.Array, example: jax.Array,
                       pretrained: Optional[dict] = None) -> tuple[TrainState, Any, Optional[dict]]:
    """``(state, abstract state, frozen)``: a fresh TrainState of the trainable params laid out
    by the rules, and the frozen rest (``lora.split``; None without adapters).

    Parameters are initialised from ``rng``, with the leaves given in ``pretrained`` (for
    example ``{'trunk': pretrained trunk}``) in their place; the optimizer state covers the
    trainable params only. The frozen params are the pretrained arrays themselves (no copy),
    or, where none were given, the random init.
    """
    lora = module.config.lora

    def params(r):
        return module.init(r, example)["params"]

    def create(r):
        return TrainState.create(apply_fn=module.apply, params=split(params(r), lora)[0], tx=tx)

    def build(r, given):
        trainable = split(combine(given, nn.meta.unbox(params(r))), lora)[0]
        return TrainState.create(apply_fn=module.apply, params=trainable, tx=tx)

    given, frozen = split(pretrained or {}, lora)
    abstract, shardings = partitioner.abstract(create, rng)
    state = partitioner.jit(build, out_shardings=shardings)(rng, given)
    if frozen is not None and not frozen:  # adapters on a random base
        frozen, _ = partitioner.init(lambda r: split(params(r), lora)[1], rng)
    return state, abstract, frozen
