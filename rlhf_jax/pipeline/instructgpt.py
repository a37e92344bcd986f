"""The whole of InstructGPT as one experiment: base model, SFT, RM, PPO and PPO-ptx, evaluation.

``run_instructgpt(config, workdir)`` (config: ``configs/instructgpt.py``) runs

1. ``base``: pretrain ``config.pretrain.model`` on the corpus, or take ``config.base.init``;
2. ``sft``: supervised fine-tuning on the demonstrations;
3. per round r: ``round<r>/comparisons`` (K = k_min..k_max samples per RM prompt
   from the SFT model, or in later rounds from the last PPO-ptx policy, ranked by
   the training labelers), ``round<r>/rm`` (on every round's comparisons so far,
   from the SFT model, normalized on the demonstrations), ``round<r>/ppo`` (γ = 0)
   and ``round<r>/ppo_ptx`` (γ = ``config.ptx_coef``), both from the SFT model
   with the value function initialised from the RM; in the last round also
   ``config.methods``: ``dpo`` and ``dpo_kwise`` (direct preference from the SFT
   model on the same comparisons, pairwise and Plackett–Luce, no RM) and
   ``rloo``, ``grpo`` or ``reinforce_pp`` (critic-free RL on the same RM and
   prompts, as many episodes per iteration as PPO);
4. ``evaluation``: ``results.json``, then ``report.md`` and its plots.

The pipeline is a list of ``Stage`` values (``plan``), each a name, a function of
its directory, and the paths it reads and writes (``layout.Layout`` spells them
all). ``run_instructgpt(config, workdir, through="round1/rm")`` stops after the
named stage (``stage_names(config)`` lists them), for example to run a PPO loop
of one's own from the SFT model and reward model
(``notebooks/03_ppo_from_scratch``).

Each stage works in its own directory ``workdir/<stage>`` and is finished when
its ``result.json`` exists (written last, atomically): a re-run skips finished
stages, and an interrupted stage resumes from its own checkpoints, so the
final results equal those of an uninterrupted run. With real data
(``config.world.enabled = False``) the comparisons are the user's and the
evaluation judges by the reward model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.data import datasets
from rlhf_jax.data.loaders import split_records
from rlhf_jax.errors import ConfigError, MissingFileError
from rlhf_jax.evaluation import evaluate, report
from rlhf_jax.feedback.world import World
from rlhf_jax.files import write_json
from rlhf_jax.parallel import Partitioner
from rlhf_jax.pipeline import preemption
from rlhf_jax.pipeline.comparisons import comparisons, responder
from rlhf_jax.pipeline.inputs import Inputs, real_inputs, world_inputs
from rlhf_jax.pipeline.dpo import run_dpo
from rlhf_jax.pipeline.layout import (CRITIC_FREE_METHODS, PPO_RUNS, PREFERENCE_METHODS, RESULT,
                                      Layout)
from rlhf_jax.pipeline.metrics import read_metrics
from rlhf_jax.pipeline.ppo import run_ppo
from rlhf_jax.pipeline.reward import run_reward
from rlhf_jax.pipeline.settings import settings, with_fields
from rlhf_jax.pipeline.sft import run_sft
from rlhf_jax.pipeline.validate import validate_pipeline


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline: ``run(directory)`` in ``workdir/name`` returns its result; it
    reads ``inputs`` (earlier stages' outputs or the pipeline's input files) and writes
    ``outputs``."""

    name: str
    run: Callable[[str], dict]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


def stage_names(config) -> list[str]:
    """The pipeline's stages in order, named as their directories under the workdir."""
    rounds = [f"round{r}/{stage}" for r in range(1, config.rounds + 1)
              for stage in ("comparisons", "rm", *PPO_RUNS,
                            *(config.methods if r == config.rounds else ()))]
    return [*(() if config.base.init else ("base",)), "sft", *rounds, "evaluation"]


def run_instructgpt(config, workdir: str, through: str = "evaluation") -> dict:
    """Runs every unfinished stage up to and including ``through`` (one of ``stage_names``:
    ``"round1/rm"`` stops with an SFT model and a reward model, ready for a PPO loop of one's
    own); returns that stage's result, by default the evaluation's results."""
    names = stage_names(config)
    if through not in names:
        raise ConfigError(f"through={through!r} is not a stage of this config; choose one of "
                          f"{names}")
    config = settings(config)
    validate_pipeline(config)
    world = World(config.world.seed, config.world.users) if config.world.enabled else None
    inputs = world_inputs(config, world, workdir) if world else real_inputs(config, workdir)
    parallel.sync("inputs written")
    for stage in plan(config, world, inputs, Layout(workdir, config.base.init)):
        result = once(workdir, stage)
        if stage.name == through:
            break
    if through == "evaluation":
        parallel.on_process_zero("report written", lambda: report.write(workdir, result))
    return result


def plan(config, world: Optional[World], inputs: Inputs, paths: Layout) -> list[Stage]:
    """The stages of ``config``, in order (names as ``stage_names`` gives them)."""
    stages = []
    if not config.base.init:
        stages.append(Stage("base", functools.partial(train_base, config, inputs),
                            (inputs.pretraining,), (paths.base_model,)))
    stages.append(Stage("sft", functools.partial(train_sft, config, inputs, paths.base_model),
                        (paths.base_model, inputs.demonstrations), (paths.sft_model,)))
    judge = evaluate.gold_judge(world, responder(config, paths.sft_model)) if world else None
    for r in range(1, config.rounds + 1):
        sampler = paths.policy(r - 1, "ppo_ptx") if r > 1 else paths.sft_model
        earlier = tuple(paths.comparisons(q) for q in range(1, r))
        stages.append(Stage(
            f"round{r}/comparisons",
            functools.partial(comparisons, config, world, inputs, sampler, earlier, r),
            (sampler, *earlier), (paths.comparisons(r), paths.all_comparisons(r))))
        stages.append(Stage(
            f"round{r}/rm",
            functools.partial(train_rm, config, inputs, paths.sft_model, paths.all_comparisons(r)),
            (paths.sft_model, paths.all_comparisons(r)), (paths.reward_model(r),)))
        for run, coef in zip(PPO_RUNS, (0.0, config.ptx_coef)):
            stages.append(Stage(
                f"round{r}/{run}",
                functools.partial(train_ppo, config, inputs, paths.sft_model, paths.reward_model(r),
                                  coef, judge),
                (paths.sft_model, paths.reward_model(r)), (paths.policy(r, run),)))
    last = config.rounds
    for method in config.methods:
        if method in PREFERENCE_METHODS:
            run = functools.partial(train_preference, config, paths.sft_model,
                                    paths.all_comparisons(last), PREFERENCE_METHODS[method])
            inputs_of = (paths.sft_model, paths.all_comparisons(last))
        else:
            run = functools.partial(train_critic_free, config, inputs, paths.sft_model,
                                    paths.reward_model(last), method, judge)
            inputs_of = (paths.sft_model, paths.reward_model(last))
        stages.append(Stage(f"round{last}/{method}", run, inputs_of,
                            (paths.method_policy(last, method),)))
    stages.append(Stage("evaluation", functools.partial(_evaluation, config, world, inputs, paths),
                        (paths.base_model, paths.sft_model, paths.reward_model(last),
                         *(paths.policy(last, run) for run in PPO_RUNS),
                         *(paths.method_policy(last, m) for m in config.methods))))
    return stages


def once(workdir: str, stage: Stage) -> dict:
    """``stage.run(workdir/name)`` unless its ``result.json`` exists. The file, written last (by
    process 0), holds the result and the stage's ``wall_s``; the result alone is returned."""
    directory = os.path.join(workdir, stage.name)
    path = os.path.join(directory, RESULT)
    if not os.path.exists(path):
        preemption.check_between_stages(stage.name)
        missing = [p for p in stage.inputs if not os.path.exists(p)]
        if missing:
            raise MissingFileError(f"stage {stage.name} needs {missing}: an earlier stage's "
                                   "output was removed; delete its result.json to run it again")
        os.makedirs(directory, exist_ok=True)
        print(f"[instructgpt] {stage.name}")
        began = time.perf_counter()
        try:
            result = stage.run(directory)
        except preemption.Preempted as stopped:  # name the pipeline's stage, not the driver
            raise preemption.Preempted(stopped.signum, stopped.step, stage.name) from None
        if jax.process_index() == 0:
            write_json(path, dict(result, wall_s=time.perf_counter() - began))
    # Every process, whether it ran the stage or found it finished (a stage without collectives
    # can finish on process 0 before another process looks): the file is there after this.
    parallel.sync(f"finished {stage.name}")
    with open(path) as f:
        result = json.load(f)
    result.pop("wall_s")
    return result


def train_base(config, inputs: Inputs, directory: str) -> dict:
    return run_sft(with_fields(config.pretrain, **{"data.path": inputs.pretraining,
                                                    "data.toy_records": 0}), directory)


def train_sft(config, inputs: Inputs, base: str, directory: str) -> dict:
    return run_sft(with_fields(config.sft, init=base, **{"data.path": inputs.demonstrations,
                                                          "data.toy_records": 0}), directory)


def train_rm(config, inputs: Inputs, sft: str, comparisons_path: str, directory: str) -> dict:
    return run_reward(with_fields(config.rm, init=sft, **{
        "data.path": comparisons_path, "data.toy_records": 0,
        "normalize.path": inputs.demonstrations, "normalize.toy_records": 0}), directory)


def train_ppo(config, inputs: Inputs, sft: str, reward_model: str, ptx_coef: float, judge,
         directory: str) -> dict:
    return run_ppo(with_fields(config.ppo, init=sft, value_init="reward", **{
        "reward.path": reward_model, "reward.token_count": -1, "data.path": inputs.ppo_prompts,
        "data.toy_records": 0, "ptx.path": inputs.pretraining, "ptx.toy_records": 0,
        "ppo.ptx_coef": ptx_coef}), directory, judge)


def train_preference(config, sft: str, comparisons_path: str, loss: str, directory: str,
                     probe=None) -> dict:
    return run_dpo(with_fields(config.dpo, init=sft, **{
        "data.path": comparisons_path, "data.toy_records": 0, "dpo.loss": loss}), directory, probe)


def train_critic_free(config, inputs: Inputs, sft: str, reward_model: str, advantage: str, judge,
                 directory: str) -> dict:
    """A critic-free run from the SFT model on PPO's reward model and prompts (no ptx): k samples
    of ``batch_size / k`` prompts, so as many episodes per iteration as PPO's."""
    k = 1 if advantage == "reinforce_pp" else config.samples_per_prompt
    return run_ppo(with_fields(config.ppo, init=sft, batch_size=config.ppo.batch_size // k, **{
        "reward.path": reward_model, "reward.token_count": -1, "data.path": inputs.ppo_prompts,
        "data.toy_records": 0, "ptx.path": inputs.pretraining, "ptx.toy_records": 0,
        "ppo.ptx_coef": 0.0, "ppo.advantage": advantage, "ppo.samples_per_prompt": k}),
        directory, judge)


def _evaluation(config, world: Optional[World], inputs: Inputs, paths: Layout,
                directory: str) -> dict:
    """Gathers what the last round made and runs ``evaluation.evaluate`` on it."""
    del directory  # the results go to the workdir's results.json (report.write)
    last = config.rounds
    ppo_data = paths.run_data(last, "ppo")
    if inputs.eval_prompts:
        prompts = [json.loads(line)["prompt"] for line in open(inputs.eval_prompts)]
    else:  # real data: the test split of the PPO prompts
        prompts = [r.prompt for r in _split(ppo_data, "prompt", "test")]
    evidence = evaluate.Evidence(
        prompts=prompts, reward_model=paths.reward_model(last),
        models=dict(base=paths.base_model, sft=paths.sft_model,
                    **{run: paths.policy(last, run) for run in PPO_RUNS},
                    **{m: paths.method_policy(last, m) for m in config.methods}),
        rm_validation=_split(paths.rm_data(last), "comparison", "validation"),
        pretrain_validation=_split(ppo_data, "pretrain", "validation"),
        curves={run: _curve(paths.run(last, run))
                for run in (*PPO_RUNS, *(m for m in config.methods if m in CRITIC_FREE_METHODS))},
        agreement=_agreement(paths, config.rounds) if world is not None else {})
    # By default each process evaluates whole on a device of its own; ``evaluation.sharded``
    # loads the models onto the PPO stage's mesh instead (for models too large for one device).
    partitioner = Partitioner.from_config(config.ppo.mesh) if config.evaluation.sharded else None
    return evaluate.evaluate(config, world, evidence, partitioner)


def _split(data_dir: str, kind: str, split: str) -> list:
    return split_records(datasets.read_records(kind, data_dir)[split], kind)


def _curve(run_dir: str) -> list[dict]:
    """Validation records of a PPO run: iteration, KL, RM score and (world) gold score."""
    judged = {"gold_score": "judge/gold_score", "win_rate": "judge/win_rate"}
    return [dict(iteration=r["step"], kl=r["kl"], rm_score=r["score"],
                 **{k: r[v] for k, v in judged.items() if v in r})
            for r in read_metrics(run_dir, "validation")]


def _agreement(paths: Layout, rounds: int) -> dict:
    """Inter-labeler agreement on the sampled comparisons, averaged over the rounds."""
    results = [json.load(open(paths.result(f"round{r}/comparisons"))) for r in range(1, rounds + 1)]
    return {name: float(np.mean([r[f"agreement_{name}"] for r in results]))
            for name in ("training", "heldout")}
