"""The ``smollm2`` preset at its smallest setting (``smollm2,micro=1``, shrunk further) on the real
GGUF, through the entry point, so the preset the results in docs/results/smollm2.md come from never
rots: every stage of InstructGPT runs, LoRA in every stage on one base, sane numbers."""

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
# needs, and a 135M model's steps are slow. One PPO iteration, validated on one batch of prompts
# before and after it (two points of each over-optimization curve; 2 iterations on 2 batches
# took 180 and 148 s for PPO and PPO-ptx alone, 1 on 1 took 99 and 84 s). None of the extra
# rows (DPO alone took 128 s): tests/pipeline/test_instructgpt.py runs DPO with adapters on the
# tiny model.
SMALLEST = ["--config=configs/instructgpt.py:smollm2,micro=1", "--config.world.demonstrations=48",
            "--config.world.rm_prompts=24", "--config.world.eval_prompts=8",
            "--config.ppo.iterations=1", "--config.ppo.eval_prompts=8", "--config.methods=()"]
# Where the CPU has no bf16 arithmetic (neither AVX512-BF16 nor AMX), XLA:CPU converts each bf16
# product to float32 and back: there the test computes in float32 on the same bf16 frozen base
# (45 min 34 s in bf16, 28 min 49 s in float32 on a 2-core AVX2 CPU, RESULTS.md#run-times). bf16
# compute itself is tested in tests/models and tests/train/test_lora_steps.py.
FLOAT32_COMPUTE = [f"--config.{section}.dtype=float32" for section in
                   ("sft.model", "rm.model", "ppo.model", "dpo.model", "evaluation")]


def has_bf16_arithmetic() -> bool:
    """Whether this CPU multiplies bf16 natively, from its flags in /proc/cpuinfo (True where
    that file cannot be read: the preset as written)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """The entry point in a process of its own at XLA's default optimization level (the suite's
    level 0 makes this model's steps about three times slower)."""
    workdir = str(tmp_path_factory.mktemp("smollm2"))
    args = SMALLEST + ([] if has_bf16_arithmetic() else FLOAT32_COMPUTE)
    process = processes.start(["-m", "experiments.instructgpt", *args, f"--workdir={workdir}"],
                              XLA_FLAGS="--xla_force_host_platform_device_count=1")
    # Alone and within the suite on a 2-core CPU: RESULTS.md#run-times.
    processes.finish([process], timeout=3600)
    config = get_config("smollm2,micro=1")
    config.methods = ()
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
                    "round1/ppo_ptx/policy_adapter"):
        assert os.path.exists(os.path.join(workdir, adapter, "adapter_model.safetensors"))
    rm = json.load(open(os.path.join(workdir, "round1/rm/reward_model/model.json")))
    assert rm["base"] == os.path.join(workdir, "sft/model")  # adapters and head on the SFT base
    assert list(results["win_rate_vs_sft"]) == list(model_rows(("ppo", "ppo_ptx")))
    assert results["rm_accuracy"]["comparisons"] > 0
    for run in ("ppo", "ppo_ptx"):
        assert len(results["overoptimization"][run]) >= 2
    for path, value in numbers(results):
        assert math.isfinite(value), path
