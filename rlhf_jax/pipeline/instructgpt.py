"""The whole of InstructGPT as one experiment: base model, SFT, RM, PPO and PPO-ptx, evaluation.

``run_instructgpt(config, workdir)`` (config: ``configs/instructgpt.py``) runs

1. ``base``: pretrain ``config.pretrain.model`` on the corpus, or take ``config.base.init``;
2. ``sft``: supervised fine-tuning on the demonstrations;
3. per round r: ``round<r>/comparisons`` (K = k_min..k_max samples per RM prompt
   from the SFT model, or in later rounds from the last PPO-ptx policy, ranked by
   the training labelers), ``round<r>/rm`` (on every round's comparisons so far,
   from the SFT model, normalized on the demonstrations), ``round<r>/ppo`` (γ = 0)
   and ``round<r>/ppo_ptx`` (γ = ``config.ptx_coef``), both from the SFT model
   with the value function initialised from the RM;
4. ``evaluation``: ``results.json``, then ``report.md`` and its plots.

``run_instructgpt(config, workdir, through="round1/rm")`` stops after the named
stage (``stage_names(config)`` lists them), for example to run a PPO loop of
one's own from the SFT model and reward model (``notebooks/03_ppo_from_scratch``).

Each stage works in its own directory ``workdir/<stage>`` and is finished when
its ``result.json`` exists (written last, atomically): a re-run skips finished
stages, and an interrupted stage resumes from its own checkpoints, so the
final results equal those of an uninterrupted run. With real data
(``config.world.enabled = False``) the comparisons are the user's and the
evaluation judges by the reward model.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError
from rlhf_jax.evaluation import evaluate, report
from rlhf_jax.evaluation.models import Policy
from rlhf_jax.feedback.labelers import heldout_labelers, pairwise_agreement, training_labelers
from rlhf_jax.feedback.world import World
from rlhf_jax.files import write_json
from rlhf_jax.pipeline import preemption
from rlhf_jax.pipeline.inputs import Inputs, real_inputs, world_inputs, write_shared
from rlhf_jax.pipeline.ppo import run_ppo
from rlhf_jax.pipeline.reward import run_reward
from rlhf_jax.pipeline.sft import run_sft
from rlhf_jax.pipeline.validate import validate_pipeline

RESULT = "result.json"


def once(workdir: str, name: str, run: Callable[[str], dict]) -> dict:
    """``run(workdir/name)`` unless its ``result.json`` exists. The file, written last (by process
    0), holds the result and the stage's ``wall_s``; the result alone is returned."""
    directory = os.path.join(workdir, name)
    path = os.path.join(directory, RESULT)
    if not os.path.exists(path):
        preemption.check_between_stages(name)
        os.makedirs(directory, exist_ok=True)
        print(f"[instructgpt] {name}")
        began = time.perf_counter()
        try:
            result = run(directory)
        except preemption.Preempted as stopped:  # name the pipeline's stage, not the driver
            raise preemption.Preempted(stopped.signum, stopped.step, name) from None
        if jax.process_index() == 0:
            write_json(path, dict(result, wall_s=time.perf_counter() - began))
    # Every process, whether it ran the stage or found it finished (a stage without collectives
    # can finish on process 0 before another process looks): the file is there after this.
    parallel.sync(f"finished {name}")
    with open(path) as f:
        result = json.load(f)
    result.pop("wall_s")
    return result


def stage_config(section, **fields) -> ml_collections.ConfigDict:
    """An unlocked copy of a stage's section with the pipeline's paths filled in (``a.b`` keys
    reach into subsections)."""
    config = ml_collections.ConfigDict(section.to_dict())
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def stage_names(config) -> list[str]:
    """The pipeline's stages in order, named as their directories under the workdir."""
    rounds = [f"round{r}/{stage}" for r in range(1, config.rounds + 1)
              for stage in ("comparisons", "rm", "ppo", "ppo_ptx")]
    return [*(() if config.base.init else ("base",)), "sft", *rounds, "evaluation"]


def run_instructgpt(config, workdir: str, through: str = "evaluation") -> dict:
    """Runs every unfinished stage up to and including ``through`` (one of ``stage_names``:
    ``"round1/rm"`` stops with an SFT model and a reward model, ready for a PPO loop of one's
    own); returns that stage's result, by default the evaluation's results."""
    names = stage_names(config)
    if through not in names:
        raise ConfigError(f"through={through!r} is not a stage of this config; choose one of "
                          f"{names}")
    return next(result for name, result in stages(config, workdir) if name == through)


def stages(config, workdir: str) -> Iterator[tuple[str, dict]]:
    """Runs the stages in order, yielding ``(name, result)`` as each finishes (or is found
    finished); the last is ``("evaluation", results)``, after the report is written."""
    validate_pipeline(config)
    world = World(config.world.seed, config.world.users) if config.world.enabled else None
    inputs = world_inputs(config, world, workdir) if world else real_inputs(config, workdir)
    parallel.sync("inputs written")

    def stage(name: str, run: Callable[[str], dict]) -> tuple[str, dict]:
        return name, once(workdir, name, run)

    base = config.base.init or os.path.join(workdir, "base", "model")
    if not config.base.init:
        yield stage("base", lambda d: run_sft(stage_config(
            config.pretrain, **{"data.path": inputs.pretraining, "data.toy_records": 0}), d))
    sft = os.path.join(workdir, "sft", "model")
    yield stage("sft", lambda d: run_sft(stage_config(
        config.sft, init=base, **{"data.path": inputs.demonstrations, "data.toy_records": 0}), d))

    sampler, comparison_files, runs = sft, [], {}
    judge = evaluate.gold_judge(world, _responder(config, sft)) if world else None
    for r in range(1, config.rounds + 1):
        name = f"round{r}"
        yield stage(f"{name}/comparisons",
                    lambda d: _comparisons(config, world, inputs, sampler, comparison_files, r, d))
        comparison_files.append(os.path.join(workdir, name, "comparisons", "comparisons.jsonl"))
        rm = os.path.join(workdir, name, "rm", "reward_model")
        every_round = os.path.join(workdir, name, "comparisons", "all.jsonl")
        yield stage(f"{name}/rm", lambda d: run_reward(stage_config(
            config.rm, init=sft, **{"data.path": every_round, "data.toy_records": 0,
                                    "normalize.path": inputs.demonstrations,
                                    "normalize.toy_records": 0}), d))
        for run, coef in (("ppo", 0.0), ("ppo_ptx", config.ptx_coef)):
            yield stage(f"{name}/{run}", lambda d: run_ppo(stage_config(
                config.ppo, init=sft, value_init="reward", **{
                    "reward.path": rm, "reward.token_count": -1, "data.path": inputs.ppo_prompts,
                    "data.toy_records": 0, "ptx.path": inputs.pretraining, "ptx.toy_records": 0,
                    "ppo.ptx_coef": coef}), d, judge))
            runs[run] = os.path.join(workdir, name, run)
        sampler = os.path.join(runs["ppo_ptx"], "policy")
    models = dict(base=base, sft=sft, ppo=os.path.join(runs["ppo"], "policy"),
                  ppo_ptx=os.path.join(runs["ppo_ptx"], "policy"),
                  reward_model=rm, runs=runs)
    results = once(workdir, "evaluation",
                   lambda d: evaluate.evaluate(config, world, inputs, models, workdir))
    parallel.on_process_zero("report written", lambda: report.write(workdir, results))
    yield "evaluation", results


def _responder(config, path: str):
    """``respond(prompts)``: one response per prompt from the model at ``path`` (loaded on first
    use), sampled as in the evaluation with a fixed seed."""
    policy = []

    def respond(prompts):
        if not policy:
            policy.append(Policy(path))
        e = config.evaluation
        return [s[0] for s in policy[0].sample(
            prompts, 1, config.seed + 2000, chat=config.sft.data.chat,
            max_prompt_len=config.ppo.data.max_prompt_len, max_new_tokens=e.max_new_tokens,
            temperature=e.temperature, batch_size=e.batch_size)]

    return respond


def _comparisons(config, world: World | None, inputs: Inputs, sampler: str, earlier: list[str],
                 round_index: int, directory: str) -> dict:
    """Samples K responses per RM prompt from ``sampler``; a training labeler ranks them. Writes
    this round's ``comparisons.jsonl`` and ``all.jsonl`` (with the ``earlier`` rounds'). Responses
    that decode to blank text are left out (records hold no empty response), and so are
    prompts left with fewer than two."""
    all_path, path = os.path.join(directory, "all.jsonl"), os.path.join(directory, "comparisons.jsonl")
    if world is None:  # real data: the user's comparisons
        records = [json.loads(line) for line in open(inputs.comparisons)]
        write_shared(records, path)
        write_shared(records, all_path)
        return dict(comparisons=len(records), source=inputs.comparisons)
    c = config.comparisons
    prompts = [json.loads(l) for l in open(inputs.rm_prompts)]
    samples = Policy(sampler).sample(
        [p["prompt"] for p in prompts], c.k_max, config.seed + round_index, chat=config.sft.data.chat,
        max_prompt_len=config.ppo.data.max_prompt_len, max_new_tokens=c.max_new_tokens,
        temperature=c.temperature, batch_size=c.batch_size, min_new_tokens=1)
    rng = np.random.default_rng([config.seed, round_index])
    drawn = [s[:int(rng.integers(c.k_min, c.k_max + 1))] for s in samples]
    kept = [[r for r in s if r] for s in drawn]
    empty = sum(len(s) for s in drawn) - sum(len(s) for s in kept)  # blank after decoding
    prompts, samples = zip(*[(p, s) for p, s in zip(prompts, kept) if len(s) >= 2])
    records = world.comparisons(prompts, samples, round_index)
    write_shared(records, path)
    write_shared([json.loads(line) for done in earlier for line in open(done)] + records, all_path)
    tasks = [world.task(p["prompt"]) for p in prompts]
    agreement_rng = np.random.default_rng([config.seed, round_index, 1])
    return dict(comparisons=len(records), dropped_blank_responses=empty, sampler=sampler,
                agreement_training=pairwise_agreement(training_labelers(world.panel), tasks,
                                                      samples, agreement_rng),
                agreement_heldout=pairwise_agreement(heldout_labelers(world.panel), tasks,
                                                     samples, agreement_rng))
