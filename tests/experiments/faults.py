"""Runs an entry point with one fault planted: the process SIGKILLs itself at a chosen moment.

    python -m tests.experiments.faults '{"at": "save", "step": 6}' experiments.train --workdir=W ...

Moments (``kill -9`` gives a process no chance to clean up; these land it where a real kill
does the most damage):

- ``{"at": "data", "records": n}``: inside data preparation, once the TFDS builder has written
  ``n`` records of a split;
- ``{"at": "save", "step": s}``: inside the asynchronous checkpoint write of step ``s``, right
  after it started (orbax's temporary directory is on disk, half-written);
- ``{"at": "step", "step": s}``: after step ``s`` was logged, before its checkpoint;
- ``{"at": "torn", "step": s}``: in the middle of writing step ``s``'s metrics line;
- ``{"at": "export"}``: in the middle of writing the stage's first export (its largest file
  half-written).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _data(records: int) -> None:
    from rlhf_jax.data import datasets

    original = datasets._RecordsBuilder._generate_examples

    def generate(self, split_records):
        for count, example in enumerate(original(self, split_records), 1):
            yield example
            if count == records:
                _die()

    datasets._RecordsBuilder._generate_examples = generate


def _save(step: int) -> None:
    from rlhf_jax.checkpoints.train_state import TrainCheckpoints

    original = TrainCheckpoints.save

    def save(self, at, *args, **kwargs):
        started = original(self, at, *args, **kwargs)
        if at == step and started:
            _die()
        return started

    TrainCheckpoints.save = save


def _metrics(step: int, torn: bool) -> None:
    from rlhf_jax.pipeline.metrics import MetricsLog

    original = MetricsLog.write

    def write(self, at, split, metrics):
        if at == step and split == "train" and torn:
            self.file.write(json.dumps(dict(step=at, split=split, **metrics))[:40])
            self.file.flush()
            _die()
        original(self, at, split, metrics)
        if at == step and split == "train":
            _die()

    MetricsLog.write = write


def _export() -> None:
    from rlhf_jax.pipeline import reward, stage

    def torn(original):
        def export(*args, **kwargs):
            directory = original(*args, **kwargs)
            files = [os.path.join(root, name) for root, _, names in os.walk(directory)
                     for name in names]
            largest = max(files, key=os.path.getsize)
            with open(largest, "r+b") as f:
                f.truncate(os.path.getsize(largest) // 2)
            _die()
        return export

    stage.export_hf = torn(stage.export_hf)  # the SFT and PPO stages export through stage.py
    reward.save_scalar_model = torn(reward.save_scalar_model)


def plant(moment: dict) -> None:
    at = moment["at"]
    if at == "data":
        _data(moment["records"])
    elif at == "save":
        _save(moment["step"])
    elif at in ("step", "torn"):
        _metrics(moment["step"], torn=at == "torn")
    elif at == "export":
        _export()
    else:
        raise ValueError(f"unknown moment {moment}")


if __name__ == "__main__":
    plant(json.loads(sys.argv[1]))
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
