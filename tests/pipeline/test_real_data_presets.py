"""The real-data presets on tiny files in the published layouts and a tiny random checkpoint."""

import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import models as presets
from configs.instructgpt import get_config
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.errors import ConfigError
from rlhf_jax.feedback.tasks import FAMILIES
from rlhf_jax.feedback.world import World
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.pipeline.instructgpt import run_instructgpt


def pairs(n):
    world, rng = World(3), np.random.default_rng(0)
    tasks = [t for t, _ in world.tasks(n, "rm")]
    return [(t.prompt, t.answer, FAMILIES[t.category].flawed(rng, t)) for t in tasks]


def hh_rlhf_rows(n):
    return [{"chosen": f"\n\nHuman: {p}\n\nAssistant: {good}",
             "rejected": f"\n\nHuman: {p}\n\nAssistant: {bad}"} for p, good, bad in pairs(n)]


def summarize_rows(n):
    return [{"info": {"id": f"t3_{i}", "post": p, "title": "Help", "subreddit": "tasks"},
             "summaries": [{"text": f" {bad}", "policy": "ref"}, {"text": f" {good}", "policy": "sup2"}],
             "choice": 1, "worker": f"w{i % 5}", "batch": "b1", "split": "train"}
            for i, (p, good, bad) in enumerate(pairs(n))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf") / "tiny")
    config = ModelConfig.from_dict(presets.get_config("tiny"))
    params = nn.meta.unbox(CausalLM(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
                           ["params"])
    export_hf(config, params, path, byte_tokenizer())
    return path


def real_config(preset, data, checkpoint, devices):
    config = get_config(preset)
    config.base.init, config.data.comparisons = checkpoint, str(data)
    for section in (config.sft, config.rm, config.ppo, config.dpo):
        section.mesh.devices = devices  # the preset's data axis over this many (fake) devices
        section.model.dtype = "float32"
    config.sft.data.max_len = config.rm.data.max_len = config.dpo.data.max_len = 128
    config.ppo.data.max_prompt_len, config.ppo.sampling.max_new_tokens = 64, 16
    config.ppo.ptx.max_len = 64
    config.ppo.update(iterations=2, batch_size=8, eval_prompts=8, eval_every=1, save_every=1)
    config.ppo.ppo.minibatches = 1
    config.evaluation.update(best_of_n=2, batch_size=8, max_new_tokens=16)
    return config


def comparisons_read(workdir):
    with open(os.path.join(workdir, "round1", "rm", "data", "comparison_report.json")) as f:
        return json.load(f)["read"]


def test_hh_rlhf_preset_runs_every_stage_on_a_data_parallel_mesh(checkpoint, tmp_path):
    data = tmp_path / "comparisons.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hh_rlhf_rows(160)))
    workdir = str(tmp_path / "run")
    results = run_instructgpt(real_config("hh_rlhf", data, checkpoint, devices=2), workdir)

    assert results["judge"] == "reward model" and results["prompts"] > 0
    assert set(results["win_rate_vs_sft"]) == {"base", "sft", "ppo", "ppo_ptx", "dpo",
                                               "dpo_kwise", "rloo", "best_of_n"}
    assert results["gold_score"] == {} and "heldout_labelers" not in results["rm_accuracy"]
    assert all(math.isfinite(w["value"]) for w in results["win_rate_vs_sft"].values())
    assert comparisons_read(workdir) == 160
    assert os.path.exists(os.path.join(workdir, "report.md"))


def test_summarize_preset_trains_sft_and_reward_model_on_its_layout(checkpoint, tmp_path):
    """The layouts differ only in how records are read, so this one stops after the RM (the
    HH-RLHF test above runs the stages after it on the same preset machinery)."""
    data = tmp_path / "comparisons.jsonl"
    rows = summarize_rows(160)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    workdir = str(tmp_path / "run")
    result = run_instructgpt(real_config("summarize", data, checkpoint, devices=1), workdir,
                             through="round1/rm")
    assert 0 <= result["validation"]["accuracy"] <= 1 and comparisons_read(workdir) == 160
    with open(os.path.join(workdir, "inputs", "demonstrations.jsonl")) as f:
        first = json.loads(f.readline())
    # the chosen summary ("choice": 1) of the first post is its demonstration
    assert first["response"].strip() == rows[0]["summaries"][1]["text"].strip()


def test_real_data_needs_a_checkpoint_and_one_round(tmp_path):
    config = get_config("hh_rlhf")
    config.data.comparisons = str(tmp_path / "x.jsonl")
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(ConfigError, match="config.base.init='': must name a pretrained model"):
        run_instructgpt(config, str(tmp_path))
    config.base.init, config.rounds = str(tmp_path), 2
    with pytest.raises(ConfigError, match="config.rounds=2: must be 1 without simulated labelers"):
        run_instructgpt(config, str(tmp_path))
