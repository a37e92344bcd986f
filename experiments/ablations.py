"""The ablation study: ``python -m experiments.ablations --workdir=DIR`` (``configs/ablations.py``).

Writes ``DIR/ablations.md`` (tables and plots) and ``ablations.json``; re-running the same
command skips every finished step (``rlhf_jax/pipeline/ablations.py``).
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from experiments import cli
from rlhf_jax.pipeline.ablations import run_ablations

config_flags.DEFINE_config_file("config", "configs/ablations.py:tiny",
                                "study config: configs/ablations.py:<preset>", lock_config=True)
flags.DEFINE_string("workdir", None, "output directory (every setting's stages, the report)")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    results = run_ablations(FLAGS.config, FLAGS.workdir)
    print(json.dumps(dict(rows=len(results["rows"]), report=f"{FLAGS.workdir}/ablations.md")))


if __name__ == "__main__":
    cli.run(main)
