"""What every stage reads from its config: mesh, batch, optimizer, loop and data settings.

The config fields are those of ``configs/sft.py`` and ``configs/rm.py``; each
function turns one group of them into the object the library takes.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError
from rlhf_jax.feedback import toy
from rlhf_jax.files import write_jsonl
from rlhf_jax.pipeline.loop import LoopConfig
from rlhf_jax.train.optim import OptimizerConfig


def mesh_and_rules(config):
    """The mesh over all devices, or over the first ``config.mesh.devices`` (one process only:
    on several, a mesh must hold devices of every process)."""
    devices = None
    if config.mesh.devices:
        if jax.process_count() > 1:
            raise ValueError(f"config.mesh.devices={config.mesh.devices}: a run on "
                             f"{jax.process_count()} processes uses every device (set it to 0)")
        devices = jax.devices()[:config.mesh.devices]
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    return mesh, parallel.get_rules(config.mesh.rules)


def optimizer_config(config, steps: int) -> OptimizerConfig:
    """The optimizer of a run of ``steps`` updates (from ``config.steps`` or the epochs)."""
    if steps <= config.optimizer.warmup_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={config.optimizer.warmup_steps}: must be "
                          f"fewer than the run's {steps} steps")
    return OptimizerConfig(total_steps=steps, **config.optimizer.to_dict())


def loop_config(config, steps: int, unit: str) -> LoopConfig:
    return LoopConfig(steps=steps, eval_every=config.eval_every, save_every=config.save_every,
                      keep=config.keep_checkpoints, throughput_unit=unit, name=config.stage,
                      log_every=config.log_every, profile_steps=tuple(config.profile_steps))


def data_config(config, workdir: str, section: str = "data") -> ml_collections.ConfigDict:
    """``config[section]``, with ``path`` pointing at generated toy records when ``toy_records``
    is set (written once to ``workdir/toy/``, by process 0)."""
    section_config = ml_collections.ConfigDict(config[section].to_dict())
    if section_config.toy_records:
        kind = section_config.kind
        path = os.path.join(workdir, "toy", f"{kind}s.jsonl")

        def write():
            if not os.path.exists(path):
                write_jsonl(toy.GENERATORS[kind](section_config.toy_records, seed=config.seed),
                            path)

        parallel.on_process_zero(f"toy {section} records", write)
        section_config.path = path
    return section_config


def announce(stage: str, report: dict) -> None:
    """Prints what the data preparation kept and removed (also in ``workdir/data``)."""
    if jax.process_index() == 0:
        print(f"[{stage}] data: {json.dumps({k: v for k, v in report.items() if k != 'skipped_lines'})}")
        for line in report.get("skipped_lines", []):
            print(f"[{stage}] skipped: {line}")
