"""The registry of model families that can be imported and exported: HF ``model_type`` → module.

A family module provides ``config_from_hf(hf, where) -> dict`` (ModelConfig
fields), ``config_to_hf(config) -> dict``, ``weight_rules(config)`` and
``ignored(name, config)``; optionally ``canonical_name(name)`` and ``module_name(name)`` (the
module of transformers' model that holds a checkpoint tensor, where their names differ).
"""

from __future__ import annotations

from types import ModuleType

from rlhf_jax.checkpoints import gpt2, gpt_neox, llama
from rlhf_jax.errors import CheckpointError

FAMILIES: dict[str, ModuleType] = {
    model_type: module for module in (llama, gpt_neox, gpt2) for model_type in module.MODEL_TYPES}


def family(model_type: str, where: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise CheckpointError(f"{where}: unknown architecture model_type={model_type!r}; "
                              f"supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def canonical_name(module: ModuleType, name: str) -> str:
    return module.canonical_name(name) if hasattr(module, "canonical_name") else name


def module_name(module: ModuleType, name: str) -> str:
    """The name of the checkpoint tensor ``name`` in transformers' model (PEFT names adapters so)."""
    return module.module_name(name) if hasattr(module, "module_name") else name
