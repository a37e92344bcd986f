"""Pretrained checkpoints in and out: Hugging Face safetensors directories and GGUF files."""

from __future__ import annotations

import os

from rlhf_jax.checkpoints.gguf_file import gguf_config, load_gguf, open_gguf, smollm2_path
from rlhf_jax.checkpoints.hf import export_hf, load_hf, read_hf_config
from rlhf_jax.checkpoints.tokenizer import load_tokenizer
from rlhf_jax.checkpoints.weights import CheckpointError
from rlhf_jax.errors import MissingFileError
from rlhf_jax.models.config import ModelConfig


def load_pretrained(path: str, dtype="float32", param_dtype="float32", mesh=None, rules=None):
    """``(ModelConfig, params)`` of a HF model directory or a ``.gguf`` file.

    The config computes in ``dtype`` (float32 by default, so the logits reproduce
    the reference implementation); parameters are stored in ``param_dtype``.
    With a ``mesh`` (and logical-axis ``rules``) every parameter is created
    directly in its sharding, one parameter at a time.
    """
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such file or directory")
    load = load_gguf if path.endswith(".gguf") else load_hf
    return load(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)


def read_model_config(path: str) -> ModelConfig:
    """The architecture of a HF model directory or ``.gguf`` file, without reading its weights."""
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such file or directory")
    return gguf_config(open_gguf(path), path) if path.endswith(".gguf") else read_hf_config(path)[1]


__all__ = ["CheckpointError", "export_hf", "load_pretrained", "load_tokenizer", "read_hf_config",
           "read_model_config", "smollm2_path"]
