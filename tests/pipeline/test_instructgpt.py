"""The whole pipeline on the micro preset: every artifact, sane numbers, exact resumption."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal

import pytest

from configs.instructgpt import get_config
from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.evaluation.evaluate import model_rows
from rlhf_jax.feedback.world import World
from rlhf_jax.pipeline.inputs import world_inputs
from rlhf_jax.pipeline.instructgpt import plan, run_instructgpt, stage_names
from rlhf_jax.pipeline.layout import Layout
from rlhf_jax.pipeline.metrics import read_metrics
from tests import processes
from tests.metrics_log import interrupt_at, wait_for_step
from tests.pipeline.micro import micro_config

ROUND = ("comparisons", "rm", "ppo", "ppo_ptx")
METHODS = ("dpo", "dpo_kwise", "rloo")  # the last round's extra rows
STAGES = ("base", "sft", *(f"round{r}/{s}" for r in (1, 2) for s in ROUND),
          *(f"round2/{m}" for m in METHODS), "evaluation")
ROWS = model_rows(("ppo", "ppo_ptx", *METHODS))
PLOTS = ("figure1.png", "overoptimization.png", "ppo_curves.png")


def numbers(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_every_artifact_is_written_and_every_number_is_sane(micro_pipeline):
    workdir, results = micro_pipeline
    for stage in STAGES:
        assert os.path.exists(os.path.join(workdir, stage, "result.json")), stage
    for path in ("report.md", "results.json", *PLOTS, "base/model/config.json",
                 "sft/model/config.json", "round1/rm/reward_model/model.json",
                 "round1/ppo/policy/config.json", "round1/ppo_ptx/policy_ema/config.json",
                 "round2/dpo/model/config.json", "round2/dpo_kwise/reference/train.npy",
                 "round2/rloo/policy/config.json",
                 "inputs/demonstrations.jsonl", "round1/comparisons/comparisons.jsonl"):
        assert os.path.getsize(os.path.join(workdir, path)) > 0, path
    assert json.load(open(os.path.join(workdir, "results.json"))) == results
    # The second round ranks samples of the first round's PPO-ptx policy and trains its RM on
    # both rounds' comparisons.
    second = json.load(open(os.path.join(workdir, "round2/comparisons/result.json")))
    assert second["sampler"] == os.path.join(workdir, "round1/ppo_ptx/policy")
    counts = [json.load(open(os.path.join(workdir, f"round{r}/comparisons/result.json")))
              ["comparisons"] for r in (1, 2)]
    rm_data = json.load(open(os.path.join(workdir, "round2/rm/data/comparison_report.json")))
    assert rm_data["read"] == sum(counts)
    for path, value in numbers(results):
        assert math.isfinite(value), path
    assert list(results["win_rate_vs_sft"]) == list(ROWS)
    assert set(results["alignment_tax"]) == set(ROWS) - {"base_prompted", "best_of_n"}
    for model, win in results["win_rate_vs_sft"].items():
        assert 0 <= win["low"] <= win["value"] <= win["high"] <= 1, model
        assert win["n"] == results["prompts"] == 16
    rm, agreement = results["rm_accuracy"], results["agreement"]
    for value in (rm["training_labelers"], rm["heldout_labelers"], *agreement.values()):
        assert 0 <= value <= 1
    for model, tax in results["alignment_tax"].items():
        assert tax["pretrain_loss"] > 0 and 0 <= tax["fact_accuracy"] <= 1, model
        assert 0 < tax["fact_probability"] < 1, model
    assert set(results["overoptimization"]) == {"ppo", "ppo_ptx", "rloo"}
    for run, curve in results["overoptimization"].items():
        assert [r["iteration"] for r in curve] == [0, 2, 4], run
        assert all("gold_score" in r for r in curve)
    assert len(results["samples"]) == 6 and set(results["samples"][0]) == {
        "prompt", "reference_sft", *ROWS}
    report = open(os.path.join(workdir, "report.md")).read()
    assert "win rate vs SFT" in report and all(p in report for p in PLOTS)


def test_an_interrupted_pipeline_skips_finished_stages_and_resumes_exactly(
        micro_pipeline, tmp_path, monkeypatch):
    """Killed in the middle of its last PPO-ptx stage, then re-run: the finished stages are left
    alone and the results equal the uninterrupted run's. The finished stages are copies of the
    uninterrupted run's (a stage is finished when its result.json exists)."""
    workdir = str(tmp_path / "run")
    copy_without_last_ppo_ptx(micro_pipeline[0], workdir)
    redone = ("round2/ppo_ptx", "evaluation")
    finished = {s: os.path.getmtime(os.path.join(workdir, s, "result.json"))
                for s in STAGES if s not in redone}
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3, path="round2/ppo_ptx")  # in the middle of the last PPO-ptx stage
        with pytest.raises(KeyboardInterrupt):
            run_instructgpt(micro_config(), workdir)
    assert not os.path.exists(os.path.join(workdir, "round2/ppo_ptx/result.json"))
    assert TrainCheckpoints(os.path.join(workdir, "round2/ppo_ptx/checkpoints")).latest_step() == 2
    results = run_instructgpt(micro_config(), workdir)
    assert {s: os.path.getmtime(os.path.join(workdir, s, "result.json"))
            for s in STAGES if s not in redone} == finished
    assert results == micro_pipeline[1]


def copy_without_last_ppo_ptx(straight: str, workdir: str) -> None:
    """The uninterrupted run's finished stages, up to round 2's PPO-ptx."""
    last = ("evaluation", "results.json", "report.md", *PLOTS)
    shutil.copytree(straight, workdir, ignore=lambda d, names: [
        n for n in names if (d == straight and n in last)
        or (d == os.path.join(straight, "round2") and n == "ppo_ptx")])


def test_sigterm_stops_the_pipeline_entry_point_and_the_same_command_resumes(
        micro_pipeline, tmp_path):
    """``python -m experiments.instructgpt`` sent SIGTERM in round 2's PPO-ptx stage: it names
    the stage and the step it checkpointed, exits 143, and the same command finishes with the
    uninterrupted run's results."""
    workdir = str(tmp_path / "run")
    copy_without_last_ppo_ptx(micro_pipeline[0], workdir)
    command = ["-m", "experiments.instructgpt", f"--workdir={workdir}",
               "--config=configs/instructgpt.py:micro", "--config.rounds=2"]
    process = processes.start(command)
    wait_for_step([process], os.path.join(workdir, "round2", "ppo_ptx"), 1)
    process.send_signal(signal.SIGTERM)
    output = processes.output(process, timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert re.search(r"stopped at step [12] of round2/ppo_ptx; run the same command to resume",
                     output), output[-3000:]
    assert not os.path.exists(os.path.join(workdir, "round2", "ppo_ptx", "result.json"))
    rerun = processes.run(command)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.load(open(os.path.join(workdir, "results.json"))) == micro_pipeline[1]


def test_stage_names_and_an_unknown_stage_to_stop_at(tmp_path):
    assert stage_names(micro_config()) == list(STAGES)
    with pytest.raises(ValueError, match="round3/rm.*choose one of.*round2/ppo_ptx"):
        run_instructgpt(micro_config(), str(tmp_path), through="round3/rm")
    assert not any(tmp_path.iterdir())  # nothing ran


def test_the_plan_is_a_list_of_stages_each_reading_what_an_earlier_one_wrote(tmp_path):
    """The stages as values: their names are ``stage_names``, and every path a stage reads is an
    input file of the pipeline or the output of a stage before it."""
    config = micro_config()
    world = World(config.world.seed, config.world.users)
    inputs = world_inputs(config, world, str(tmp_path))
    stages = plan(config, world, inputs, Layout(str(tmp_path)))
    assert [s.name for s in stages] == stage_names(config)
    available = {getattr(inputs, f.name) for f in dataclasses.fields(inputs)} - {""}
    for stage in stages:
        assert set(stage.inputs) <= available, (stage.name, set(stage.inputs) - available)
        available |= set(stage.outputs)
    round2 = next(s for s in stages if s.name == "round2/comparisons")
    assert Layout(str(tmp_path)).policy(1, "ppo_ptx") in round2.inputs  # it samples round 1's


def test_with_lora_the_stages_share_one_base_and_export_adapters(tmp_path):
    """``:micro,lora=4``: SFT trains adapters and exports them merged and in PEFT's format; the
    RM trains adapters on the SFT model and names it as its base; PPO, PPO-ptx and DPO run on
    that base and export their adapters."""
    workdir = str(tmp_path)
    run_instructgpt(get_config("micro,lora=4"), workdir, through="round1/dpo")
    sft_model = os.path.join(workdir, "sft", "model")
    with open(os.path.join(workdir, "round1", "rm", "reward_model", "model.json")) as f:
        rm = json.load(f)
    assert rm["base"] == sft_model and rm["model"]["lora"]["rank"] == 4
    base_model = os.path.join(workdir, "base", "model")
    for adapter, base in ((os.path.join(workdir, "sft", "model_adapter"), base_model),
                          *((os.path.join(workdir, "round1", run, "policy_adapter"), sft_model)
                            for run in ("ppo", "ppo_ptx")),
                          (os.path.join(workdir, "round1", "dpo", "model_adapter"), sft_model)):
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            peft_config = json.load(f)
        assert peft_config["r"] == 4 and peft_config["base_model_name_or_path"] == base
    train = [r for r in read_metrics(os.path.join(workdir, "round1", "ppo"))
             if r["split"] == "train"]
    assert train and all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train)
