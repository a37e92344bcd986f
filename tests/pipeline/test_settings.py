"""Configs become typed, frozen settings once: fields checked, types strict, paths filled in."""

import dataclasses

import ml_collections
import pytest

from configs.instructgpt import get_config as pipeline_config
from configs.ppo import get_config as ppo_config
from configs.rm import get_config as rm_config
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig
from rlhf_jax.pipeline import settings as s
from rlhf_jax.train.ppo_config import PPOConfig


def test_every_preset_becomes_its_record_with_the_library_types():
    rm, ppo, pipeline = (s.settings(c) for c in (rm_config("tiny"), ppo_config("tiny"),
                                                 pipeline_config("micro")))
    assert isinstance(rm, s.Stage) and isinstance(ppo, s.PPO) and isinstance(pipeline, s.Pipeline)
    assert isinstance(rm.model, ModelConfig) and isinstance(ppo.ppo, PPOConfig)
    assert rm.normalize.max_records == 512 and rm.data.k_max == 4
    assert isinstance(pipeline.rm, s.Stage) and pipeline.ppo.ppo.minibatches == 2
    assert s.settings(rm) is rm  # a record passes through
    with pytest.raises(dataclasses.FrozenInstanceError):
        rm.seed = 1


@pytest.mark.parametrize("key, value, message", [
    ("data.chat", 1, r"config.data.chat=1: must be True or False"),
    ("data.chat", "true", r"config.data.chat='true': must be True or False"),
    ("batch_size", True, r"config.batch_size=True: must be an integer"),
    ("batch_size", 8.0, r"config.batch_size=8.0: must be an integer"),
    ("optimizer.learning_rate", "3e-4", r"config.optimizer.learning_rate='3e-4': must be a number"),
    ("model.n_kv_heads", 3, r"config.model: ModelConfig.n_kv_heads=3: must divide n_heads=4"),
])
def test_a_value_of_the_wrong_type_is_named_with_its_key(key, value, message):
    config = rm_config("tiny").to_dict()  # plain dicts: no ml_collections type checks
    group, _, field = key.rpartition(".")
    (config[group] if group else config)[field] = value
    with pytest.raises(ConfigError, match=message):
        s.settings(config)


def test_unknown_and_missing_fields_are_named():
    config = ml_collections.ConfigDict(rm_config("tiny").to_dict())
    config.mesh.shards = 2
    with pytest.raises(ConfigError, match=r"config.mesh.shards: unknown field; config.mesh has"):
        s.settings(config)
    config = rm_config("tiny").to_dict()
    del config["optimizer"]["b2"]
    with pytest.raises(ConfigError, match=r"config.optimizer.b2: missing"):
        s.settings(config)
    assert s.settings(dict(ppo_config("tiny").to_dict(), ppo=dict(
        ppo_config("tiny").ppo.to_dict(), ema_decay=0))).ppo.ema_decay == 0.0  # int to float


def test_with_fields_replaces_fields_in_groups_and_leaves_the_rest():
    rm = s.settings(rm_config("tiny"))
    filled = s.with_fields(rm, init="sft/model", **{"data.path": "c.jsonl", "data.toy_records": 0,
                                                     "normalize.path": "d.jsonl"})
    assert (filled.init, filled.data.path, filled.data.toy_records) == ("sft/model", "c.jsonl", 0)
    assert filled.normalize.path == "d.jsonl" and filled.normalize.max_records == 512
    assert filled.data.k_max == rm.data.k_max and rm.data.path == ""  # the original is unchanged
