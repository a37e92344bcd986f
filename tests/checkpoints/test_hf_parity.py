"""Our logits equal transformers' for every family, after import and after an export round trip."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.checkpoints import export_hf, load_pretrained, read_hf_config
from rlhf_jax.models import CausalLM
from tests.torch_reference import HF_CONFIGS, hf_logits, left_padded_batch, save_random_model

TOL = 1e-4


def our_logits(config, params, ids, mask):
    return np.asarray(CausalLM(config).apply({"params": params}, jnp.asarray(ids),
                                             attention_mask=jnp.asarray(mask)))


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def hf_model(request, tmp_path_factory):
    return request.param, save_random_model(request.param, str(tmp_path_factory.mktemp(request.param)))


def test_logits_match_transformers_on_left_padded_batch(hf_model):
    _, model_dir = hf_model
    ids, mask = left_padded_batch()
    config, params = load_pretrained(model_dir)
    assert config.dtype == "float32"
    ours = our_logits(config, params, ids, mask)
    ref = hf_logits(model_dir, ids, mask)
    real = mask.astype(bool)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref)[real].max() <= TOL


def test_export_round_trip(hf_model, tmp_path):
    name, model_dir = hf_model
    config, params = load_pretrained(model_dir)
    out = export_hf(config, params, str(tmp_path / "export"))
    ids, mask = left_padded_batch(seed=1)
    ref = hf_logits(out, ids, mask)  # transformers loads our export
    ours = our_logits(config, params, ids, mask)
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= TOL
    _, reread = read_hf_config(out)
    assert reread == config, name


def test_sharded_export_writes_an_index_both_sides_load(tmp_path):
    model_dir = save_random_model("llama", str(tmp_path / "src"))
    config, params = load_pretrained(model_dir)
    out = export_hf(config, params, str(tmp_path / "sharded"), max_shard_bytes=20_000)
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    files = set(index["weight_map"].values())
    assert len(files) > 2 and all(os.path.isfile(os.path.join(out, f)) for f in files)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    ids, mask = left_padded_batch(seed=2)
    _, reloaded = load_pretrained(out)
    ours = our_logits(config, reloaded, ids, mask)
    assert np.abs(ours - hf_logits(out, ids, mask))[mask.astype(bool)].max() <= TOL


def test_bfloat16_compute_on_request_stays_close(tmp_path):
    model_dir = save_random_model("llama", str(tmp_path / "m"))
    ids, mask = left_padded_batch()
    config32, params32 = load_pretrained(model_dir)
    config16, params16 = load_pretrained(model_dir, dtype=jnp.bfloat16)
    assert config16.dtype == "bfloat16" and params16["trunk"]["embed"]["embedding"].dtype == jnp.float32
    l32, l16 = our_logits(config32, params32, ids, mask), our_logits(config16, params16, ids, mask)
    real = mask.astype(bool)
    err = np.abs(l16 - l32)[real].max()
    assert l16.dtype == np.float32
    assert 0 < err < 0.05 * np.abs(l32).max()
