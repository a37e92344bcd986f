"""Train one stage: ``python -m experiments.train --config=configs/sft.py:tiny --workdir=DIR``.

The stage is the config's ``stage`` field (``pretrain``, ``sft``, ``rm``, ``ppo`` or ``dpo``);
any field can be overridden (``--config.optimizer.learning_rate=1e-4``). Re-running with the same
workdir resumes from its last checkpoint. Several processes (hosts) join one run from
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` or
``--config.distributed.*``.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from experiments import cli
from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError
from rlhf_jax.pipeline.dpo import run_dpo
from rlhf_jax.pipeline.ppo import run_ppo
from rlhf_jax.pipeline.reward import run_reward
from rlhf_jax.pipeline.settings import settings
from rlhf_jax.pipeline.sft import run_sft

STAGES = {"pretrain": run_sft, "sft": run_sft, "rm": run_reward, "ppo": run_ppo, "dpo": run_dpo}

config_flags.DEFINE_config_file("config", None, "stage config: configs/<stage>.py:<preset>",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics, model)")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def run(config, workdir: str) -> dict:
    """Runs ``config.stage`` in ``workdir``; returns the stage's final metrics."""
    config = settings(config)  # typed and checked once, here; nothing below sees a ConfigDict
    parallel.initialize_from_env(config.distributed)  # before anything touches devices
    if config.stage not in STAGES:
        raise ConfigError(f"config.stage={config.stage!r}: must be one of {tuple(STAGES)}")
    return STAGES[config.stage](config, workdir)


def main(argv):
    del argv
    print(json.dumps(run(FLAGS.config, FLAGS.workdir)))


if __name__ == "__main__":
    cli.run(main)
