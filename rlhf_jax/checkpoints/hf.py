"""Hugging Face model directories: ``config.json`` plus safetensors (one file or sharded)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import safetensors.numpy
from safetensors import safe_open

from rlhf_jax import parallel
from rlhf_jax.checkpoints.abstract import abstract_lm_params
from rlhf_jax.checkpoints.families import canonical_name, family
from rlhf_jax.checkpoints.weights import export_tensors, load_params
from rlhf_jax.errors import CheckpointError, MissingFileError
from rlhf_jax.files import write_json
from rlhf_jax.models.config import ModelConfig

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_hf_config(path: str) -> tuple[dict, ModelConfig]:
    """``(raw config.json, our ModelConfig)`` of a HF model directory, float32 compute."""
    where = os.path.join(path, "config.json")
    if not os.path.isfile(where):
        raise MissingFileError(f"{path}: no config.json (not a Hugging Face model directory)")
    with open(where) as f:
        hf = json.load(f)
    module = family(hf.get("model_type"), where)
    try:
        return hf, ModelConfig(**module.config_from_hf(hf, where))
    except KeyError as e:
        raise CheckpointError(f"{where}: required field {e.args[0]!r} is missing") from None


def _tensor_files(path: str) -> dict[str, str]:
    """HF tensor name → safetensors file that holds it."""
    index = os.path.join(path, INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return {name: os.path.join(path, file) for name, file in weight_map.items()}
    single = os.path.join(path, SINGLE)
    if not os.path.isfile(single):
        raise MissingFileError(f"{path}: neither {SINGLE} nor {INDEX} found")
    return {name: single for name in open_safetensors(single).keys()}


def open_safetensors(file: str):
    """A safetensors file opened for reading; a damaged one (a truncated download, say) is a
    ``CheckpointError`` naming it."""
    try:
        return safe_open(file, "np")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None


def load_hf(path: str, dtype="float32", param_dtype="float32", mesh=None, rules=None):
    """Loads a HF directory tensor by tensor into (optionally sharded) params."""
    _, config = read_hf_config(path)
    config = config.replace(dtype=np.dtype(dtype).name, param_dtype=np.dtype(param_dtype).name)
    module = family(config.family, path)
    files = _tensor_files(path)
    by_name = {canonical_name(module, n): n for n in files}
    handles: dict[str, object] = {}

    def handle(name):
        file = files[by_name[name]]
        if file not in handles:
            handles[file] = open_safetensors(file)
        return handles[file]

    abstract, shardings = abstract_lm_params(config, mesh, rules)
    params = load_params(
        module.weight_rules(config),
        read=lambda n: handle(n).get_tensor(by_name[n]),
        shapes_of=lambda n: handle(n).get_slice(by_name[n]).get_shape(),
        abstract=abstract, config=config, where=path,
        ignore=lambda n: module.ignored(n, config), available=list(by_name), shardings=shardings)
    return config, params


def export_hf(config: ModelConfig, params, out_dir: str, tokenizer=None,
              max_shard_bytes: int = 4 << 30) -> str:
    """Writes ``config.json`` and safetensors that ``AutoModelForCausalLM.from_pretrained`` loads.

    ``params`` are CausalLM params, sharded or not (on multi-host every process
    must call this; process 0 writes, and every process returns once the
    directory is complete). Weights are written in float32, at most
    ``max_shard_bytes`` held on the host at a time: beyond that they are split
    into ``model-0000k-of-0000n.safetensors`` files with an index. A tokenizer,
    if given, is saved beside them.
    """
    module = family(config.family, "export_hf")
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(out_dir, exist_ok=True)
    written: list[tuple[str, list[str], int]] = []  # (temporary file, names, bytes)
    shard: dict[str, np.ndarray] = {}

    def flush():
        if writer and shard:
            tmp = os.path.join(out_dir, f".shard-{len(written):05d}.tmp")
            safetensors.numpy.save_file(shard, tmp, {"format": "pt"})
            written.append((tmp, list(shard), sum(t.nbytes for t in shard.values())))
        shard.clear()

    for name, tensor in export_tensors(module.weight_rules(config), params, config):
        if shard and sum(t.nbytes for t in shard.values()) + tensor.nbytes > max_shard_bytes:
            flush()
        shard[name] = tensor
    flush()
    parallel.on_process_zero(f"exported {out_dir}", lambda: _finish(
        config, module, out_dir, written, tokenizer))
    return out_dir


def _finish(config: ModelConfig, module, out_dir: str, written: list, tokenizer) -> None:
    """Process 0: the temporary shards under their final names, the index, config, tokenizer."""
    if len(written) == 1:
        os.replace(written[0][0], os.path.join(out_dir, SINGLE))
    else:
        weight_map = {}
        for k, (tmp, names, _) in enumerate(written, 1):
            file = f"model-{k:05d}-of-{len(written):05d}.safetensors"
            os.replace(tmp, os.path.join(out_dir, file))
            weight_map.update({name: file for name in names})
        index = {"metadata": {"total_size": sum(w[2] for w in written)}, "weight_map": weight_map}
        write_json(os.path.join(out_dir, INDEX), index)
    write_json(os.path.join(out_dir, "config.json"),
               dict(module.config_to_hf(config), dtype="float32"))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
