"""Where things are in a workdir: the one place the pipeline's paths are spelled.

A stage driver writes into its own directory: ``data/`` (the prepared records),
``checkpoints/``, ``metrics.jsonl``, and its product (``MODEL``, ``REWARD_MODEL``,
``POLICY``, …). The InstructGPT pipeline gives each stage a directory under its
workdir (``Layout``): ``base``, ``sft``, ``round<r>/{comparisons, rm, ppo,
ppo_ptx}``, the last round's ``METHODS`` (``round<r>/dpo``, …), ``evaluation``;
each holds ``RESULT`` once finished.
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
# Figure 1's rows beyond the paper's, trained in the last round: direct preference on its
# comparisons (no reward model), and critic-free RL against its reward model.
PREFERENCE_METHODS = {"dpo": "dpo", "dpo_kwise": "plackett_luce"}  # row -> dpo.loss
CRITIC_FREE_METHODS = ("rloo", "grpo", "reinforce_pp")  # row = ppo.advantage
METHODS = (*PREFERENCE_METHODS, *CRITIC_FREE_METHODS)


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

    def method_policy(self, r: int, method: str) -> str:
        """The policy a ``METHODS`` row trained in round r (a preference stage writes ``MODEL``,
        an RL stage ``POLICY``)."""
        return os.path.join(self.run(r, method),
                            MODEL if method in PREFERENCE_METHODS else POLICY)

    def run_data(self, r: int, run: str) -> str:
        return os.path.join(self.run(r, run), DATA)
