"""All of InstructGPT: ``python -m experiments.instructgpt --config=configs/instructgpt.py:tiny
--workdir=DIR``.

Pretrains (or loads) the base model, runs SFT, the reward model, PPO and PPO-ptx,
evaluates them, writes ``DIR/report.md`` and ``DIR/results.json``, and prints the
summary table. Re-running with the same workdir skips finished stages and
resumes an interrupted one. Any field can be overridden
(``--config.ppo.iterations=20``).
"""

from __future__ import annotations

import time

from absl import flags
from ml_collections import config_flags

from experiments import cli
from rlhf_jax import parallel
from rlhf_jax.evaluation.report import summary
from rlhf_jax.pipeline.instructgpt import run_instructgpt
from rlhf_jax.pipeline.settings import settings

config_flags.DEFINE_config_file("config", "configs/instructgpt.py", "pipeline config: "
                                "configs/instructgpt.py:<preset>", lock_config=True)
flags.DEFINE_string("workdir", None, "output directory (every stage, the report)")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = settings(FLAGS.config)  # typed and checked once, here
    parallel.initialize_from_env(config.distributed)  # before anything touches devices
    began = time.perf_counter()
    results = run_instructgpt(config, FLAGS.workdir)
    print(summary(results))
    print(f"report: {FLAGS.workdir}/report.md ({time.perf_counter() - began:.1f} s)")


if __name__ == "__main__":
    cli.run(main)
