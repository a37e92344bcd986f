"""One forward pass, many meshes: equal logits, and parameters laid out as the rules say."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.models import get_config
from rlhf_jax import parallel
from rlhf_jax.checkpoints import load_pretrained
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from tests.torch_reference import left_padded_batch, save_random_model

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)]
CONFIG = ModelConfig.from_dict(get_config("tiny"))


def sharded_logits(model, mesh_shape, rules_name, ids, mask, rng=jax.random.key(0)):
    devices = jax.devices()[:int(np.prod(mesh_shape))]
    mesh = parallel.make_mesh(*mesh_shape, devices=devices)
    rules = parallel.get_rules(rules_name)
    params, _ = parallel.init_params(model, mesh, rules, rng, ids[:1])
    batch = parallel.shard_batch({"ids": ids, "mask": mask}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(model.apply)({"params": params}, batch["ids"], attention_mask=batch["mask"])
    return params, out


@pytest.fixture(scope="module")
def batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, CONFIG.vocab_size, (8, 16)).astype(np.int32)
    mask = np.ones((8, 16), np.int32)
    mask[1::2, :5] = 0
    return ids, mask


@pytest.fixture(scope="module")
def reference(batch):
    return np.asarray(sharded_logits(CausalLM(CONFIG), (1, 1, 1), "data", *batch)[1])


@pytest.mark.parametrize("rules", ["data", "fsdp", "fsdp_tp"])
@pytest.mark.parametrize("mesh_shape", MESHES[1:])
def test_logits_equal_on_every_mesh(mesh_shape, rules, batch, reference):
    _, out = sharded_logits(CausalLM(CONFIG), mesh_shape, rules, *batch)
    assert len(out.sharding.device_set) == np.prod(mesh_shape)
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-5)


def test_parameter_shardings_follow_the_rules(batch):
    params, _ = sharded_logits(CausalLM(CONFIG), (2, 2, 2), "fsdp_tp", *batch)
    spec = lambda x: x.sharding.spec  # noqa: E731
    layers = params["trunk"]["layers"]
    assert spec(layers["attn"]["q"]["kernel"]) == P(None, "fsdp", "tensor", None)
    assert spec(layers["attn"]["k"]["kernel"]) == P(None, "fsdp", "tensor", None)
    assert spec(layers["attn"]["o"]["kernel"]) == P(None, "tensor", None, "fsdp")
    assert spec(layers["mlp"]["down"]["kernel"]) == P(None, "tensor", "fsdp")
    assert spec(layers["attn_norm"]["scale"]) == P(None, "fsdp")
    assert spec(params["trunk"]["embed"]["embedding"]) == P("tensor", "fsdp")
    assert spec(params["lm_head"]["kernel"]) == P("fsdp", "tensor")
    shard = layers["mlp"]["up"]["kernel"].addressable_shards[0].data
    assert shard.shape == (CONFIG.n_layers, CONFIG.d_model // 2, CONFIG.mlp_dim // 2)

    params, _ = sharded_logits(CausalLM(CONFIG), (2, 2, 2), "data", *batch)
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(params))
    params, _ = sharded_logits(CausalLM(CONFIG), (2, 2, 2), "fsdp", *batch)
    assert spec(params["trunk"]["layers"]["attn"]["q"]["kernel"]) == P(None, "fsdp", None, None)


def test_non_divisible_dimensions_stay_replicated(batch, reference):
    # 2 kv heads cannot be split 8 ways; 4 query heads neither; the MLP (128) can.
    params, out = sharded_logits(CausalLM(CONFIG), (1, 1, 8), "fsdp_tp", *batch)
    layers = params["trunk"]["layers"]
    assert layers["attn"]["k"]["kernel"].sharding.is_fully_replicated
    assert layers["attn"]["q"]["kernel"].sharding.is_fully_replicated
    assert layers["mlp"]["up"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert layers["mlp"]["up"]["kernel"].addressable_shards[0].data.shape[-1] == CONFIG.mlp_dim // 8
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-5)


def test_scalar_head_model_shards_too(batch):
    model = ScalarHeadModel(CONFIG)
    _, ref = sharded_logits(model, (1, 1, 1), "data", *batch)
    _, out = sharded_logits(model, (2, 2, 2), "fsdp_tp", *batch)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_load_pretrained_places_parameters_in_their_shardings(tmp_path):
    model_dir = save_random_model("llama", str(tmp_path / "m"))
    mesh = parallel.make_mesh(2, 2, 2)
    rules = parallel.get_rules("fsdp_tp")
    config, params = load_pretrained(model_dir, mesh=mesh, rules=rules)
    q = params["trunk"]["layers"]["attn"]["q"]["kernel"]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    _, plain = load_pretrained(model_dir)
    ids, mask = left_padded_batch(batch=8)
    batch = parallel.shard_batch({"ids": ids, "mask": mask}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(CausalLM(config).apply)({"params": params}, batch["ids"],
                                              attention_mask=batch["mask"])
    ref = CausalLM(config).apply({"params": plain}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_mesh_shapes_and_errors():
    assert parallel.mesh_shape(-1, 2, 2, num_devices=8) == (2, 2, 2)
    assert parallel.mesh_shape(2, -1, 1, num_devices=8) == (2, 4, 1)
    partitioner = parallel.Partitioner.from_config(ml_collections.ConfigDict(
        dict(data=-1, fsdp=2, tensor=2, devices=0, rules="fsdp")))
    assert dict(partitioner.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="not divisible by 3"):
        parallel.mesh_shape(3, -1, 1, num_devices=8)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        parallel.mesh_shape(-1, -1, 1, num_devices=8)
    with pytest.raises(ValueError, match="has 4 slots for 8 devices"):
        parallel.mesh_shape(2, 2, 1, num_devices=8)
    with pytest.raises(ValueError, match="unknown sharding rules 'zero'"):
        parallel.get_rules("zero")


def test_rules_given_in_a_config_take_precedence_over_the_preset():
    """``mesh.axis_rules`` pairs replace the preset's rule of their logical names."""
    partitioner = parallel.Partitioner.from_config(ml_collections.ConfigDict(dict(
        data=2, fsdp=2, tensor=2, devices=0, rules="fsdp",
        axis_rules=(("embed", None), ("mlp", "tensor"), ("heads", ("data", "tensor"))))))
    rules = dict(partitioner.rules)
    assert rules["embed"] is None and rules["mlp"] == "tensor"
    assert rules["heads"] == ("data", "tensor")
    assert rules["activation_batch"] == dict(parallel.get_rules("fsdp"))["activation_batch"]
    assert [name for name, _ in partitioner.rules].count("embed") == 1
