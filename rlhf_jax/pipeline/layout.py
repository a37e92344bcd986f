"""Where things are in a workdir: the one place the pipeline's paths are spelled.

A stage driver writes into its own directory: ``data/`` (the prepared records),
``checkpoints/``, ``metrics.jsonl``, and its product (``MODEL``, ``REWARD_MODEL``,
``POLICY``, …). The InstructGPT pipeline gives each stage a directory under its
workdir (``Layout``): ``base``, ``sft``, ``round<r>/{comparisons, rm, ppo,
ppo_ptx}``, ``evaluation``; each holds ``RESULT`` once finished.
"""

from __future__ import annotations

import dataclasses
import os

# What a stage driver writes in its directory.
DATA = "data"  # prepared records (pipeline.data.prepare)
MODEL = "model"  # SFT / pretraining: the policy, a Hugging Face directory
REWARD_MODEL = "reward_model"  # RM: the normalized reward model (checkpoints.scalar_model)
POLICY, POLICY_EMA, VALUE_MODEL = "policy", "policy_ema", "value_model"  # PPO's products
ADAPTER_SUFFIX = "_adapter"  # beside a policy trained with LoRA: its adapters, in PEFT's format
RESULT = "result.json"  # a pipeline stage's result, written last
COMPARISONS, ALL_COMPARISONS = "comparisons.jsonl", "all.jsonl"  # a round's, and every round's
PPO_RUNS = ("ppo", "ppo_ptx")


@dataclasses.dataclass(frozen=True)
class Layout:
    """The paths of one pipeline workdir; ``base_init`` is a given base model ("" to pretrain)."""

    root: str
    base_init: str = ""

    def stage(self, name: str) -> str:
        return os.path.join(self.root, name)

    def result(self, name: str) -> str:
        return os.path.join(self.root, name, RESULT)

    @property
    def base_model(self) -> str:
        return self.base_init or os.path.join(self.stage("base"), MODEL)

    @property
    def sft_model(self) -> str:
        return os.path.join(self.stage("sft"), MODEL)

    def comparisons(self, r: int) -> str:
        return os.path.join(self.stage(f"round{r}/comparisons"), COMPARISONS)

    def all_comparisons(self, r: int) -> str:
        return os.path.join(self.stage(f"round{r}/comparisons"), ALL_COMPARISONS)

    def reward_model(self, r: int) -> str:
        return os.path.join(self.stage(f"round{r}/rm"), REWARD_MODEL)

    def rm_data(self, r: int) -> str:
        return os.path.join(self.stage(f"round{r}/rm"), DATA)

    def run(self, r: int, run: str) -> str:
        """A PPO run's directory (``run``: one of ``PPO_RUNS``)."""
        return self.stage(f"round{r}/{run}")

    def policy(self, r: int, run: str) -> str:
        return os.path.join(self.run(r, run), POLICY)

    def run_data(self, r: int, run: str) -> str:
        return os.path.join(self.run(r, run), DATA)
