"""The ablation study: ``--config=configs/ablations.py:tiny`` (or ``:micro`` for the tests).

Three sweeps, each setting trained once per seed from one shared SFT model on the
simulated world (``rlhf_jax/pipeline/ablations.py``): the share of the
comparisons (RM accuracy, PPO-ptx, DPO, K-wise DPO and best-of-n at the same
budget), the number of training labelers and their noise (RM accuracy,
PPO-ptx, best-of-n). ``pipeline`` is the whole ``configs/instructgpt.py``
config, so every stage's field can be overridden:
``--config.pipeline.ppo.iterations=40``.
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg
from configs.instructgpt import get_config as pipeline_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny")
    if args.name not in ("tiny", "micro"):
        raise ValueError(f"unknown ablation preset {args.name!r}; choose tiny or micro")
    c = ml_collections.ConfigDict()
    c.pipeline = pipeline_config(args.name)
    p = c.pipeline
    # The smallest shares leave a few steps: no warmup; the RM and DPO train on 90% of their
    # comparisons (the rest is their stages' own validation split).
    for section in (p.rm, p.dpo):
        section.optimizer.warmup_steps = 0
        section.data.split_fractions = (0.9, 0.1, 0.0)
    p.dpo.eval_every = 10  # DPO's over-optimization curve: a sampled and judged point every 10 steps
    c.seeds = (0, 1, 2)
    c.size = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)  # shares of the comparisons
    c.labelers = (1, 2, 4)  # the first n training labelers rank (4: all of them)
    c.noise = (0.5, 1.0, 2.0)  # the training labelers' noise, times this
    c.methods = dict(size=("ppo_ptx", "dpo", "dpo_kwise", "best_of_n"),
                     labelers=("ppo_ptx", "best_of_n"), noise=("ppo_ptx", "best_of_n"))
    c.test_fraction = 0.15  # comparisons (every 7th prompt) kept aside to measure RMs on
    c.curve_prompts = 64  # evaluation prompts DPO samples at each of its validations
    if args.name == "micro":
        c.seeds = (0, 1)
        c.size, c.labelers, c.noise = (0.5, 1.0), (1, 4), (1.0, 2.0)
        c.curve_prompts = 8
    return c
