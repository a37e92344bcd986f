"""The PPO stage end to end on the tiny preset: SFT and RM checkpoints in, resumption, meshes."""

import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import ppo
from configs.models import get_config as model_preset
from experiments.train import run
from rlhf_jax import parallel
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.scalar_model import save_scalar_model
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import CausalLM, LoraConfig, ModelConfig, ScalarHeadModel, lora
from rlhf_jax.pipeline import ppo as ppo_stage
from rlhf_jax.pipeline.settings import settings
from rlhf_jax.train.rollout import Rollout
from tests.metrics_log import straight_and_interrupted, timeless_metrics


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A (random) SFT policy as a HF directory and a reward model as ``run_reward`` saves it."""
    root = tmp_path_factory.mktemp("stages")
    config = ModelConfig.from_dict(dict(model_preset("tiny")))
    x = np.zeros((1, 8), np.int32)
    mesh = parallel.make_mesh(-1, 1, 1)
    rules = parallel.get_rules("fsdp")
    policy, _ = parallel.init_params(CausalLM(config), mesh, rules, jax.random.key(0), x)
    reward, _ = parallel.init_params(ScalarHeadModel(config), mesh, rules, jax.random.key(1), x)
    export_hf(config, policy, str(root / "model"), byte_tokenizer())
    save_scalar_model(str(root / "reward_model"), config, reward, {}, byte_tokenizer())
    return str(root / "model"), str(root / "reward_model")


def tiny(checkpoints, **fields):
    config = ppo.get_config("tiny,records=400")
    config.init, config.reward.path = checkpoints
    config.ptx.toy_records = 400
    config.ptx.max_len = 48
    config.sampling.max_new_tokens = 16
    config.batch_size = 8
    config.eval_prompts = 8
    config.ppo.ptx_coef = 1.0
    config.mesh.devices = 1  # one device compiles faster; the mesh test sets its own
    for key, value in fields.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    return config


def test_interrupted_ppo_run_resumes_exactly(checkpoints, tmp_path, monkeypatch):
    # An adaptive β, so the KL controller's state must be restored too.
    config = tiny(checkpoints, iterations=4, save_every=2, eval_every=2, kl__target=1.0,
                  kl__horizon=100)
    straight, resumed = straight_and_interrupted(run, config, tmp_path, monkeypatch, 3)
    assert TrainCheckpoints(os.path.join(resumed, "checkpoints")).latest_step() == 2
    run(config, resumed)
    assert timeless_metrics(resumed) == timeless_metrics(straight)
    train = [r for r in timeless_metrics(straight) if r["split"] == "train"]
    assert len(train) == 4 and all(r["ptx_loss"] > 0 for r in train)
    assert len({r["kl_coef"] for r in train}) == 4  # β moved every iteration
    for name in ("policy", "policy_ema"):
        a, b = (load_file(os.path.join(d, name, "model.safetensors")) for d in (straight, resumed))
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert os.path.exists(os.path.join(straight, "value_model", "model.json"))


def test_one_iteration_is_the_same_on_a_2x2x2_mesh(checkpoints, tmp_path):
    results = {}
    for name, shape in (("single", (1, 1, 1)), ("mesh", (2, 2, 2))):
        config = tiny(checkpoints, iterations=1, eval_every=0)
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = shape
        config.mesh.devices = int(np.prod(shape))
        run(config, str(tmp_path / name))
        results[name] = timeless_metrics(str(tmp_path / name))
    assert len(results["single"]) == len(results["mesh"]) == 3  # validation, train, validation
    for a, b in zip(results["single"], results["mesh"]):
        assert a.keys() == b.keys()
        for key in a:
            if key not in ("step", "split"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key


def test_missing_reward_and_pretraining_text_are_named(checkpoints, tmp_path):
    config = tiny(checkpoints)
    config.reward.path = ""
    with pytest.raises(ConfigError, match=r"config.reward.path='': is empty: give the reward "
                                          r"model directory"):
        run(config, str(tmp_path / "a"))
    config.reward.token_count = 3
    with pytest.raises(ConfigError, match=r"config.reward.path='': is empty, but "
                                          r"value_init='reward' copies the reward model"):
        run(config, str(tmp_path / "a"))
    config = tiny(checkpoints)
    config.ptx.toy_records = 0
    with pytest.raises(ConfigError, match=r"config.ptx.path='': is empty: give a JSON Lines file "
                                          r"of pretrain records"):
        run(config, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


@pytest.fixture(scope="module")
def lora_reward_model(checkpoints, tmp_path_factory):
    """A reward model with rank-4 adapters and a head on the SFT policy ``checkpoints[0]``,
    saved as ``run_reward`` saves one: its trainable params and the name of its base."""
    config = ModelConfig.from_dict(dict(model_preset("tiny"))).replace(
        lora=LoraConfig(rank=4))
    params, _ = parallel.init_params(ScalarHeadModel(config), parallel.make_mesh(-1, 1, 1),
                                     parallel.get_rules("fsdp"), jax.random.key(2),
                                     np.zeros((1, 8), np.int32))
    trainable, _ = lora.split(params, config.lora)
    trainable = jax.tree_util.tree_map_with_path(  # adapters that change the scores
        lambda path, x: x + 0.05 * jax.random.normal(jax.random.key(3), x.shape)
        if path[-1].key == "lora_b" else x, trainable)
    path = str(tmp_path_factory.mktemp("lora_rm") / "reward_model")
    save_scalar_model(path, config, trainable, {}, byte_tokenizer(), base=checkpoints[0])
    return path


def test_one_base_under_policy_reference_reward_and_value(checkpoints, lora_reward_model):
    """The policy's frozen base is the reference, the reward model's trunk and the value
    function's trunk: the same arrays, not copies."""
    config = settings(tiny((checkpoints[0], lora_reward_model), lora__rank=4))
    partitioner = parallel.Partitioner.from_config(config.mesh)
    with partitioner.activate():
        policy_config, base = ppo_stage._policy(config, partitioner)
        _, value, _, reward = ppo_stage._models(config, policy_config, base, partitioner)
    same = lambda a, b: all(x is y for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa
    assert same(lora.base(reward)["trunk"], base["trunk"])
    assert same(value.frozen["trunk"], base["trunk"])
    assert lora.adapter_count(value.given) == lora.adapter_count(reward) > 0
    assert value.base_path == os.path.abspath(checkpoints[0])


def test_lora_ppo_checkpoints_only_what_trains_and_resumes_exactly(checkpoints, lora_reward_model,
                                                                   tmp_path, monkeypatch):
    config = tiny((checkpoints[0], lora_reward_model), iterations=4, save_every=2, eval_every=2,
                  lora__rank=4, kl__target=1.0, kl__horizon=100)  # PPO-ptx, adaptive β
    straight, resumed = straight_and_interrupted(run, config, tmp_path, monkeypatch, 3)
    run(config, resumed)
    assert timeless_metrics(resumed) == timeless_metrics(straight)
    train = [r for r in timeless_metrics(straight) if r["split"] == "train"]
    assert len({r["kl_coef"] for r in train}) == 4 and all(r["ptx_loss"] > 0 for r in train)
    for name in ("policy", "policy_ema", "policy_adapter", "policy_ema_adapter"):
        file = "adapter_model.safetensors" if name.endswith("adapter") else "model.safetensors"
        a, b = (load_file(os.path.join(d, name, file)) for d in (straight, resumed))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    base = load_file(os.path.join(checkpoints[0], "model.safetensors"))
    policy = load_file(os.path.join(straight, "policy", "model.safetensors"))
    assert any(not np.array_equal(base[k], policy[k]) for k in base)  # the adapters trained
    # The checkpoint holds adapters, heads and their optimizer state, not the base.
    state = TrainCheckpoints(os.path.join(straight, "checkpoints")).restore(None)[0]
    saved = sum(np.asarray(x).size for x in jax.tree.leaves(state["train"]["params"]))
    assert saved < sum(x.size for x in base.values()) / 4
    assert "kernel" not in str(jax.tree_util.tree_structure(state["train"]["params"]["policy"]))


def test_the_ema_changes_only_the_ema_metrics(checkpoints, tmp_path, monkeypatch):
    """Two validation batches; the policy's metrics must not depend on the EMA's decay. Before
    the first update the EMA is the policy, so that validation samples the policy alone."""
    runs, rollouts = {}, []
    sample = Rollout.__call__
    monkeypatch.setattr(Rollout, "__call__",
                        lambda self, *args: rollouts.append(1) or sample(self, *args))
    for decay in (0.0, 0.9):
        config = tiny(checkpoints, iterations=2, eval_every=1, eval_prompts=16,
                      ppo__ema_decay=decay)
        run(config, str(tmp_path / str(decay)))
        # Two iterations' rollouts (two minibatches: scored apart from the update), then two
        # validation batches at iterations 0 (the policy alone), 1 and 2 (policy and EMA).
        assert len(rollouts) == 2 + 2 * (1 + 2 + 2), rollouts
        rollouts.clear()
        runs[decay] = [r for r in timeless_metrics(str(tmp_path / str(decay)))
                       if r["split"] == "validation"]
    for a, b in zip(runs[0.0], runs[0.9]):
        assert {k: v for k, v in a.items() if not k.startswith("ema/")} == \
            {k: v for k, v in b.items() if not k.startswith("ema/")}
    assert runs[0.0][-1]["ema/score"] != runs[0.9][-1]["ema/score"]
    assert all(runs[d][0]["ema/" + k] == runs[d][0][k] for d in runs for k in ("score", "kl"))
