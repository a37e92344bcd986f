"""Bad checkpoints fail with messages that name the file, the tensor or field, and the shapes."""

import json
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy

from rlhf_jax.checkpoints import CheckpointError, load_pretrained, load_tokenizer
from tests.torch_reference import save_random_model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_random_model("llama", str(tmp_path_factory.mktemp("llama")))


def copy_with(src, dst, config_changes=None, tensor_changes=None):
    shutil.copytree(src, dst)
    if config_changes:
        with open(os.path.join(dst, "config.json")) as f:
            config = json.load(f)
        config.update(config_changes)
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(config, f)
    if tensor_changes:
        file = os.path.join(dst, "model.safetensors")
        tensors = dict(safetensors.numpy.load_file(file))
        for name, value in tensor_changes.items():
            if value is None:
                del tensors[name]
            else:
                tensors[name] = value
        safetensors.numpy.save_file(tensors, file, {"format": "pt"})
    return str(dst)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(str(tmp_path / "nowhere"))


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(str(tmp_path))


def test_unknown_architecture(llama_dir, tmp_path):
    path = copy_with(llama_dir, tmp_path / "m", {"model_type": "bert"})
    with pytest.raises(ValueError, match=r"config\.json: unknown architecture model_type='bert'"):
        load_pretrained(path)


def test_missing_config_field(llama_dir, tmp_path):
    with open(os.path.join(llama_dir, "config.json")) as f:
        config = json.load(f)
    del config["hidden_size"]
    path = copy_with(llama_dir, tmp_path / "m")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"config\.json: required field 'hidden_size'"):
        load_pretrained(path)


def test_shape_mismatch_names_tensor_and_both_shapes(llama_dir, tmp_path):
    bad = np.zeros((40, 48), np.float32)  # q_proj should be (48, 48)
    path = copy_with(llama_dir, tmp_path / "m",
                     tensor_changes={"model.layers.1.self_attn.q_proj.weight": bad})
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    message = str(err.value)
    assert path in message and "'model.layers.1.self_attn.q_proj.weight'" in message
    assert "(40, 48)" in message and "(48, 48)" in message


def test_vocabulary_mismatch(llama_dir, tmp_path):
    path = copy_with(llama_dir, tmp_path / "m", {"vocab_size": 100})
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    message = str(err.value)
    assert "'model.embed_tokens.weight'" in message and "(96, 48)" in message
    assert "(100, 48)" in message and "vocab_size=100" in message


def test_missing_and_unexpected_tensors(llama_dir, tmp_path):
    path = copy_with(llama_dir, tmp_path / "a", tensor_changes={"model.norm.weight": None})
    with pytest.raises(CheckpointError, match="'model.norm.weight' is missing"):
        load_pretrained(path)
    extra = {"model.layers.0.self_attn.extra.weight": np.zeros(3, np.float32)}
    path = copy_with(llama_dir, tmp_path / "b", tensor_changes=extra)
    with pytest.raises(CheckpointError, match="not used by a llama model.*extra"):
        load_pretrained(path)


def test_unsupported_activation(llama_dir, tmp_path):
    path = copy_with(llama_dir, tmp_path / "m", {"hidden_act": "relu"})
    with pytest.raises(ValueError, match="field 'hidden_act'"):
        load_pretrained(path)
