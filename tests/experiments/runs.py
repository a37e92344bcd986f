"""Stages run as a user runs them, ``python -m experiments.train`` in a process of their own, so a
test can stop or kill them and compare the outcome with an uninterrupted run's.

``STAGES`` holds a small setting of the ``tiny`` SFT, RM and PPO-ptx presets (a dozen steps,
checkpoints every few, one device). ``outcome(stage, workdir)`` is what must not depend on
interruptions: the final parameters (the stage's exports, as numpy arrays) and every train and
validation metric except wall-clock ones (the ``reference`` fixture of
``tests/experiments/conftest.py`` holds an uninterrupted run's).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from typing import Optional

import numpy as np
import safetensors.numpy

from tests import processes
from tests.metrics_log import wait_for_step, without_timings

_COMMON = ["--config.mesh.devices=1", "--config.keep_checkpoints=3"]
STAGES = {
    "sft": ["--config=configs/sft.py:tiny", "--config.steps=12", "--config.data.toy_records=300",
            "--config.save_every=3", "--config.eval_every=6", *_COMMON],
    "rm": ["--config=configs/rm.py:tiny", "--config.steps=12", "--config.data.toy_records=300",
           "--config.normalize.toy_records=32", "--config.normalize.max_records=32",
           "--config.save_every=3", "--config.eval_every=6", *_COMMON],
    # PPO-ptx on the toy token-count reward, value function on the policy's trunk.
    "ppo": ["--config=configs/ppo.py:tiny", "--config.iterations=8", "--config.batch_size=8",
            "--config.eval_prompts=8", "--config.data.toy_records=300",
            "--config.ptx.toy_records=300", "--config.ppo.ptx_coef=0.5",
            "--config.reward.token_count=5", "--config.value_init=policy",
            "--config.sampling.max_new_tokens=16", "--config.save_every=2",
            "--config.eval_every=4", *_COMMON],
}
STEPS = {"sft": 12, "rm": 12, "ppo": 8}
SAVE_EVERY = {"sft": 3, "rm": 3, "ppo": 2}
# What a stage exports at its end: safetensors files, or orbax params of a scalar model.
EXPORTS = {"sft": ["model/model.safetensors"], "rm": ["reward_model"],
           "ppo": ["policy/model.safetensors", "policy_ema/model.safetensors", "value_model"]}


def command(stage: str, workdir: str, fault: Optional[dict] = None) -> list[str]:
    """The stage's arguments to ``python``; with ``fault``, run under ``tests.experiments.faults``."""
    entry = ["-m", "experiments.train"] if fault is None else \
        ["-m", "tests.experiments.faults", json.dumps(fault), "experiments.train"]
    return [*entry, f"--workdir={workdir}", *STAGES[stage]]


def start(stage: str, workdir: str, fault: Optional[dict] = None) -> subprocess.Popen:
    """Starts the stage; its output goes to ``<workdir>.log`` (``finish`` returns it)."""
    return processes.start(command(stage, workdir, fault), log=f"{workdir}.log")


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Waits for the process; returns its output."""
    return processes.output(process, timeout)


def run(stage: str, workdir: str, fault: Optional[dict] = None) -> tuple[int, str]:
    """``(exit status, output)`` of one run."""
    process = start(stage, workdir, fault)
    output = finish(process)
    return process.returncode, output


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> float:
    """Sends ``signum``; returns the seconds until the process ended."""
    began = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=300)
    return time.monotonic() - began


def read_raw_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def metrics(workdir: str) -> list[dict]:
    """The train and validation lines of ``metrics.jsonl`` without wall-clock metrics."""
    return without_timings(read_raw_metrics(workdir))


def params(stage: str, workdir: str) -> dict[str, np.ndarray]:
    """Every exported parameter of the stage, by file and name."""
    from rlhf_jax.checkpoints.scalar_model import load_scalar_model
    import jax

    out = {}
    for export in EXPORTS[stage]:
        path = os.path.join(workdir, export)
        if export.endswith(".safetensors"):
            tensors = safetensors.numpy.load_file(path)
        else:
            flat = jax.tree_util.tree_flatten_with_path(load_scalar_model(path)[1])[0]
            tensors = {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
        out.update({f"{export}:{name}": value for name, value in tensors.items()})
    return out


def outcome(stage: str, workdir: str) -> tuple[dict, list[dict]]:
    return params(stage, workdir), metrics(workdir)


def assert_same_outcome(stage: str, workdir: str, reference: tuple[dict, list[dict]]) -> None:
    """Bit for bit: the same parameters and the same metrics as the reference run."""
    got_params, got_metrics = outcome(stage, workdir)
    want_params, want_metrics = reference
    assert sorted(got_params) == sorted(want_params)
    for name, value in want_params.items():
        np.testing.assert_array_equal(got_params[name], value, err_msg=name)
    assert got_metrics == want_metrics


def draw_moments(stage: str, seed: int) -> list[dict]:
    """Kill moments in the order one run after another meets them (``tests.experiments.faults``):
    inside data preparation, inside an asynchronous checkpoint write, three more after or in
    the middle of logging a step, and inside the final export; the steps are drawn with
    ``seed``."""
    rng = random.Random(seed)
    steps, every = STEPS[stage], SAVE_EVERY[stage]
    save = rng.choice([s for s in range(every, steps, every)])
    others = rng.sample([s for s in range(1, steps) if s != save], 3)
    moments = [dict(at="save", step=save)] + [dict(at=rng.choice(("step", "torn")), step=s)
                                              for s in others]
    return ([dict(at="data", records=rng.randint(1, 60))] +
            sorted(moments, key=lambda m: m["step"]) + [dict(at="export")])


def run_through_kills(stage: str, workdir: str, moments: list[dict]) -> None:
    """Runs the stage once per moment, each run killed there and the next resuming, then once
    to the end; checks each kill happened where it was planted."""
    for moment in moments:
        status, output = run(stage, workdir, fault=moment)
        assert status == -signal.SIGKILL, f"{moment}: exit {status}\n{output[-3000:]}"
        if moment["at"] == "save":  # killed in the middle of writing that checkpoint
            assert os.path.isdir(os.path.join(workdir, "checkpoints",
                                              f"{moment['step']}.orbax-checkpoint-tmp")), moment
        if moment["at"] == "data":  # killed before the data report, which is written last
            assert not [n for n in os.listdir(os.path.join(workdir, "data"))
                        if n.endswith("_report.json")], moment
    status, output = run(stage, workdir)
    assert status == 0, output[-3000:]


def stop_then_resume(stage: str, workdir: str, signum: int, signalled_after: int, lag: int,
                     reference: tuple[dict, list[dict]]) -> None:
    """Sends ``signum`` once step ``signalled_after`` is in ``metrics.jsonl``, then checks: the
    run names the step it stopped at (at most ``lag`` steps on: lines reach the file at metric
    fetches), exits 128 + signum within two steps, the save and the exit, has that step as its
    latest checkpoint, and the same command then ends bit-identical to ``reference``."""
    process = start(stage, workdir)
    wait_for_step([process], workdir, signalled_after)
    seconds = stop(process, signum)
    output = finish(process)
    assert process.returncode == 128 + signum, output[-3000:]
    stopped = int(re.search(rf"stopped at step (\d+) of {stage}; run the same command to resume",
                            output).group(1))
    assert signalled_after <= stopped <= signalled_after + lag
    assert latest_checkpoint(workdir) == stopped
    assert max(r["step"] for r in metrics(workdir)) == stopped
    step_seconds = max(r["step_seconds"] for r in read_raw_metrics(workdir) if r["split"] == "train")
    assert seconds < 2 * step_seconds + 15, seconds
    status, output = run(stage, workdir)
    assert status == 0, output[-3000:]
    assert_same_outcome(stage, workdir, reference)


def latest_checkpoint(workdir: str) -> Optional[int]:
    directory = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) \
        else []
    return max(steps, default=None)
