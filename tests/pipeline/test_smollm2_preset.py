"""The ``smollm2`` preset at its smallest setting (``smollm2,micro=1``, shrunk further) on the real
GGUF, through the entry point, so the preset the results in docs/results/smollm2.md come from never
rots: every stage runs, LoRA in every stage on one base, sane numbers."""

import json
import math
import os

import pytest

from configs.instructgpt import get_config
from rlhf_jax.checkpoints import smollm2_path
from rlhf_jax.evaluation.evaluate import model_rows
from rlhf_jax.pipeline.instructgpt import stage_names
from tests import processes
from tests.pipeline.test_instructgpt import numbers


# ``smollm2,micro=1`` with fewer records and iterations still: one of each step is what the test
# needs, and a 135M model's steps are slow. Of the extra rows, DPO alone (the micro pipeline
# test runs the others with adapters on the tiny model).
SMALLEST = ["--config=configs/instructgpt.py:smollm2,micro=1", "--config.world.demonstrations=48",
            "--config.world.rm_prompts=24", "--config.world.eval_prompts=8",
            "--config.ppo.iterations=2", "--config.methods=('dpo',)"]


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """The entry point in a process of its own at XLA's default optimization level (the suite's
    level 0 makes this model's steps about three times slower)."""
    workdir = str(tmp_path_factory.mktemp("smollm2"))
    process = processes.start(["-m", "experiments.instructgpt", *SMALLEST, f"--workdir={workdir}"],
                              XLA_FLAGS="--xla_force_host_platform_device_count=1")
    # 5 min 37 s alone on a 2-core CPU with AVX512-BF16, more than 30 min inside the suite on
    # one without bf16 arithmetic (RESULTS.md#run-times).
    processes.finish([process], timeout=3600)
    config = get_config("smollm2,micro=1")
    config.methods = ("dpo",)
    with open(os.path.join(workdir, "results.json")) as f:
        return workdir, config, json.load(f)


def test_the_preset_is_the_full_run_shrunk():
    full, small = get_config("smollm2"), get_config("smollm2,micro=1")
    assert full.base.init == small.base.init == smollm2_path()
    for stage in ("sft", "rm", "ppo", "dpo"):
        assert full[stage].lora == small[stage].lora and full[stage].lora.rank == 8
        assert full[stage].model == small[stage].model
    assert full.world.rm_prompts > small.world.rm_prompts
    assert full.ppo.iterations > small.ppo.iterations


def test_every_stage_runs_on_the_gguf_with_adapters_on_one_base(smollm2_run):
    workdir, config, results = smollm2_run
    assert stage_names(config)[0] == "sft"  # no pretraining: the GGUF is the base
    for stage in stage_names(config):
        assert os.path.exists(os.path.join(workdir, stage, "result.json")), stage
    for adapter in ("sft/model_adapter", "round1/ppo/policy_adapter",
                    "round1/ppo_ptx/policy_adapter", "round1/dpo/model_adapter"):
        assert os.path.exists(os.path.join(workdir, adapter, "adapter_model.safetensors"))
    rm = json.load(open(os.path.join(workdir, "round1/rm/reward_model/model.json")))
    assert rm["base"] == os.path.join(workdir, "sft/model")  # adapters and head on the SFT base
    assert list(results["win_rate_vs_sft"]) == list(model_rows(("ppo", "ppo_ptx", "dpo")))
    assert results["rm_accuracy"]["comparisons"] > 0
    for run in ("ppo", "ppo_ptx"):
        assert len(results["overoptimization"][run]) >= 2
    for path, value in numbers(results):
        assert math.isfinite(value), path
