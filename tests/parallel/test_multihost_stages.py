"""Whole stages on two processes of 4 CPU devices each = one process of 8 devices.

SFT, the reward model and PPO-ptx run as ``python -m experiments.train`` twice at once: as two
processes joined by the ``JAX_*`` environment variables, and as one process. Both must end with
the same parameters and the same train and validation metrics (timings aside), within 1e-5.
Every validation split here has an odd number of records, so no split halves evenly over the
processes (with per-process shards, one process would run a batch fewer and the other wait for
it forever in a collective).
"""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rlhf_jax.checkpoints.scalar_model import load_scalar_model
from tests.metrics_log import timeless_metrics
from tests.processes import finish, free_port, joined, start


TOLERANCE = 1e-5
SMALL = ["--config.mesh.devices=0", "--config.optimizer.warmup_steps=0", "--config.save_every=2",
         "--config.eval_every=2"]
# Validation records (from the data reports): SFT 13, RM 17, PPO prompts 21, pretraining text 21.
SFT = ["--config=configs/sft.py:tiny,records=150", "--config.steps=4", "--config.data.max_len=128",
       *SMALL]
RM = ["--config=configs/rm.py:tiny,records=150", "--config.steps=4", "--config.data.max_len=96",
      "--config.normalize.toy_records=37", *SMALL]
PPO = ["--config=configs/ppo.py:tiny,records=200", "--config.iterations=2",
       "--config.ppo.ptx_coef=1.0", "--config.ptx.toy_records=200", "--config.ptx.max_len=48",
       "--config.sampling.max_new_tokens=16", "--config.eval_prompts=16",
       "--config.warmup_iterations=0", *SMALL[:1], *SMALL[2:]]


def run_both(root, args: list[str]) -> tuple[str, str]:
    """``(one process's workdir, two processes' workdir)`` of one stage, all three processes
    started together."""
    one, two = str(root / "one_process"), str(root / "two_processes")
    train = ["-m", "experiments.train", *args]
    port = free_port()
    finish([start([*train, f"--workdir={one}"], devices=8),
            *(start([*train, f"--workdir={two}"], devices=4, **joined(port, 2, i))
              for i in range(2))])
    return one, two


def assert_close(a, b, what: str) -> tuple[float, float]:
    """``(max |a - b|, max |a - b| / max(1, |a|))`` over nested dicts of numbers and arrays with
    the same keys; fails where the second exceeds 1e-5 (a float32 metric near 500, such as an
    untrained model's perplexity, cannot be closer than 6e-5: its spacing)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), what
        diffs = [assert_close(a[k], b[k], f"{what}/{k}") for k in a]
        return tuple(max(d, default=0.0) for d in zip(*diffs)) if diffs else (0.0, 0.0)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    scaled = float(np.max(diff / np.maximum(1.0, np.abs(a)), initial=0))
    assert scaled <= TOLERANCE, f"{what}: {a} and {b} differ by {np.max(diff)}"
    return float(np.max(diff, initial=0)), scaled


def assert_same_metrics(one: str, two: str) -> tuple[float, float]:
    """Every line of both ``metrics.jsonl``, timings aside (``assert_close``)."""
    logs = [{f"step {r.pop('step')} {r.pop('split')}": r for r in timeless_metrics(w)}
            for w in (one, two)]
    assert list(logs[0]) == list(logs[1])
    assert {line.split()[-1] for line in logs[0]} == {"train", "validation"}, list(logs[0])
    return assert_close(*logs, "metrics.jsonl")


def assert_same_data_positions(one: str, two: str) -> None:
    """The checkpoints hold the same data iterator state: that of the one global stream."""
    steps = sorted(os.listdir(os.path.join(one, "checkpoints")))
    assert steps and steps == sorted(os.listdir(os.path.join(two, "checkpoints")))
    for step in steps:
        extra = [json.load(open(os.path.join(w, "checkpoints", step, "extra", "metadata")))
                 for w in (one, two)]
        assert extra[0] == extra[1] and extra[0]["data"], step


def safetensors(workdir: str, name: str) -> dict:
    return load_file(os.path.join(workdir, name, "model.safetensors"))


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return run_both(tmp_path_factory.mktemp("sft"), SFT)


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    return run_both(tmp_path_factory.mktemp("rm"), RM)


def report(stage: str, **diffs: tuple[float, float]) -> None:
    print(f"\n{stage}: " + "; ".join(f"{name} max |diff| {a:.2e} (scaled {r:.2e})"
                                      for name, (a, r) in diffs.items()))


def test_sft_on_two_processes_equals_one(sft):
    one, two = sft
    metrics = assert_same_metrics(one, two)
    assert_same_data_positions(one, two)
    params = assert_close(safetensors(one, "model"), safetensors(two, "model"), "model")
    report("SFT", metrics=metrics, params=params)


def test_reward_model_on_two_processes_equals_one(rm):
    metrics = assert_same_metrics(*rm)
    assert_same_data_positions(*rm)
    (_, params_one, info_one), (_, params_two, info_two) = (
        load_scalar_model(os.path.join(w, "reward_model")) for w in rm)
    params = assert_close(params_one, params_two, "reward_model")
    # model.json: the demonstration mean before and after centering, the validation metrics.
    info = assert_close(info_one, info_two, "reward_model/model.json")
    report("RM", metrics=metrics, params=params, model_json=info)


def test_ppo_ptx_on_two_processes_equals_one(sft, rm, tmp_path):
    # The two-process runs' outputs: what one multi-host stage writes, the next one loads.
    inputs = [f"--config.init={sft[1]}/model", f"--config.reward.path={rm[1]}/reward_model"]
    one, two = run_both(tmp_path, PPO + inputs)
    metrics = assert_same_metrics(one, two)
    assert_same_data_positions(one, two)
    models = [dict(policy=safetensors(w, "policy"), policy_ema=safetensors(w, "policy_ema"),
                   value=load_scalar_model(os.path.join(w, "value_model"))[1])
              for w in (one, two)]
    report("PPO-ptx", metrics=metrics, params=assert_close(*models, "models"))
