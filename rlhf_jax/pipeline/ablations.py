"""The reviewers' questions as one study in the simulated world (``configs/ablations.py``).

``run_ablations(config, workdir)`` runs the pipeline's base, SFT and first
comparisons once (``workdir/shared``), keeps a fixed ``test_fraction`` of those
comparisons aside (by prompt) to measure reward models on, and then, for every
setting and seed, trains from the same SFT model on the rest:

- ``size``: a random share (1/16 … 1) of the comparisons;
- ``labelers``: the same responses ranked again by only the first n training
  labelers (n = 4 is every one: the ``size`` = 1 data);
- ``noise``: ranked again by the training labelers with their noise scaled
  (× 1 is the ``size`` = 1 data).

A setting trains its reward model and the methods its sweep names
(``ppo_ptx`` on that RM; ``dpo``, ``dpo_kwise`` on the same comparisons, no
RM; ``best_of_n``, the RM's favourite of n SFT samples) and judges each policy
by the held-out labelers on the evaluation prompts: win rate against one SFT
sample per prompt and gold score. The RM's accuracy is measured on the
test comparisons as the training labelers ranked them and as held-out
labelers rank them again. Every step is a pipeline stage (``instructgpt.once``):
an interrupted study re-run with the same command skips what is done.
``report.write`` then gives each sweep a table (mean and 95% t-interval over
seeds) and a plot, and draws the over-optimization of PPO-ptx and DPO: the gold
score of each validation checkpoint against √KL from SFT (Gao et al. 2022).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Optional

import numpy as np

from rlhf_jax.data.records import Comparison
from rlhf_jax.evaluation import ablation_report, evaluate
from rlhf_jax.evaluation.models import Policy, RewardModel
from rlhf_jax.feedback.labelers import training_labelers
from rlhf_jax.feedback.world import World
from rlhf_jax.files import write_jsonl
from rlhf_jax.pipeline import instructgpt, layout
from rlhf_jax.pipeline.comparisons import responder
from rlhf_jax.pipeline.dpo import Probe
from rlhf_jax.pipeline.inputs import world_inputs
from rlhf_jax.pipeline.instructgpt import Stage, once
from rlhf_jax.pipeline.layout import PREFERENCE_METHODS, Layout
from rlhf_jax.pipeline.metrics import read_metrics
from rlhf_jax.pipeline.settings import Pipeline, typed, with_fields

SWEEPS = ("size", "labelers", "noise")
STUDY_METHODS = ("ppo_ptx", "dpo", "dpo_kwise", "best_of_n")


@dataclasses.dataclass(frozen=True)
class Ablations:
    """The study's settings (``configs/ablations.py``)."""

    pipeline: Pipeline  # the world, the shared stages and every trained stage's settings
    seeds: tuple  # every setting is trained once per seed
    size: tuple  # shares of the comparisons
    labelers: tuple  # numbers of training labelers
    noise: tuple  # factors of the training labelers' noise
    methods: dict  # sweep -> the methods trained at each of its settings
    test_fraction: float  # comparisons kept aside to measure reward models on
    curve_prompts: int  # evaluation prompts DPO samples at each of its validations


@dataclasses.dataclass(frozen=True)
class Setting:
    sweep: str
    value: float
    seed: int

    @property
    def data(self) -> str:
        """The directory of its comparisons (the baseline of each sweep is ``size1``)."""
        baseline = (self.sweep, self.value) in (("labelers", 4), ("noise", 1))
        return "size1" if baseline else f"{self.sweep}{self.value:g}"

    @property
    def name(self) -> str:
        return f"{self.data}/seed{self.seed}"


def settings_of(config: Ablations) -> list[Setting]:
    """Every (sweep, value, seed), in order."""
    return [Setting(sweep, value, seed) for sweep in SWEEPS for value in getattr(config, sweep)
            for seed in config.seeds]


def run_ablations(config, workdir: str) -> dict:
    """Runs the study (every unfinished step) and writes ``report.md``, ``results.json`` and the
    plots in ``workdir``; returns the results."""
    config = config if isinstance(config, Ablations) else typed(Ablations, config, "config")
    p = config.pipeline
    world = World(p.world.seed, p.world.users)
    shared = os.path.join(workdir, "shared")
    instructgpt.run_instructgpt(p, shared, through="round1/comparisons")
    inputs = world_inputs(p, world, shared)
    paths = Layout(shared)
    records = [json.loads(line) for line in open(paths.all_comparisons(1))]
    test, pool = _split(records, config.test_fraction)
    prompts = [json.loads(line)["prompt"] for line in open(inputs.eval_prompts)]
    judge = Judgement(p, world, paths.sft_model, prompts)
    gold = evaluate.gold_judge(world, responder(p, paths.sft_model))
    probe = _probe(config, p, gold, prompts)
    rows = []
    for setting in settings_of(config):
        data = _comparisons(world, pool, setting, os.path.join(workdir, setting.data))
        seeded = with_fields(p, **{f"{s}.seed": setting.seed for s in ("rm", "ppo", "dpo")})
        methods = config.methods[setting.sweep]
        directory = os.path.join(workdir, setting.name)
        for stage in _stages(seeded, inputs, paths.sft_model, data, methods, gold, probe,
                             directory):
            once(directory, stage)
        judged = once(directory, Stage(
            "judged", functools.partial(judge.setting, directory, methods, test)))
        measured = {k: v for k, v in judged.items()  # a baseline shared by sweeps has more
                    if k.startswith("rm_") or k.rsplit("_", 2)[0] in methods}
        rows.append(dict(sweep=setting.sweep, value=setting.value, seed=setting.seed, **measured))
    results = dict(rows=rows, curves=_curves(workdir, config), sft=judge.sft_row(),
                   test_comparisons=len(test), pool_comparisons=len(pool),
                   eval_prompts=len(prompts), seeds=list(config.seeds))
    ablation_report.write(workdir, results)
    return results


def _split(records: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """``(test, pool)``: every ``1/fraction``-th prompt's comparison (a fixed, spread choice)."""
    every = max(int(round(1 / fraction)), 2)
    return records[::every], [r for i, r in enumerate(records) if i % every]


def _comparisons(world: World, pool: list[dict], setting: Setting, directory: str) -> str:
    """The setting's comparisons file: a share of the pool (drawn by seed), or the pool ranked
    again by other labelers (by seed)."""
    path = os.path.join(directory, f"seed{setting.seed}.jsonl")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng([setting.seed, 17])
    if setting.sweep == "size" and setting.value < 1:
        chosen = np.sort(rng.choice(len(pool), max(2, round(setting.value * len(pool))),
                                    replace=False))
        records = [pool[i] for i in chosen]
    elif setting.data == "size1":
        records = pool
    else:
        records = _reranked(world, pool, setting, rng)
    os.makedirs(directory, exist_ok=True)
    return write_jsonl(records, path)


def _reranked(world: World, pool: list[dict], setting: Setting, rng) -> list[dict]:
    """The pool's responses ranked again by the first ``value`` training labelers, or by all of
    them with their noise times ``value``."""
    rankers = training_labelers(world.panel)
    if setting.sweep == "labelers":
        rankers = rankers[:int(setting.value)]
    else:
        rankers = [dataclasses.replace(r, noise=r.noise * setting.value) for r in rankers]
    out = []
    for record in pool:
        labeler = rankers[rng.integers(len(rankers))]
        ranking = labeler.rank(world.task(record["prompt"]), record["responses"], rng)
        out.append(dict(record, ranking=ranking, labeler_id=labeler.name))
    return out


def _probe(config: Ablations, p, gold, prompts: list[str]) -> Probe:
    """DPO's validation samples: the first ``curve_prompts`` evaluation prompts (whole batches),
    judged by ``gold``."""
    n = min(config.curve_prompts, len(prompts))
    return Probe(gold, tuple(prompts[:n - n % p.dpo.batch_size]), p.ppo.data.max_prompt_len,
                 p.evaluation.max_new_tokens, p.evaluation.temperature)


def _stages(p, inputs, sft: str, data: str, methods, gold, probe: Probe,
            directory: str) -> list[Stage]:
    """The RM, then each trained method of ``methods`` (best-of-n needs only the RM), in
    ``directory``."""
    stages = [Stage("rm", functools.partial(instructgpt.train_rm, p, inputs, sft, data))]
    if "ppo_ptx" in methods:
        stages.append(Stage("ppo_ptx", functools.partial(
            instructgpt.train_ppo, p, inputs, sft,
            os.path.join(directory, "rm", layout.REWARD_MODEL), p.ptx_coef, gold)))
    for method in (m for m in methods if m in PREFERENCE_METHODS):
        stages.append(Stage(method, functools.partial(
            instructgpt.train_preference, p, sft, data, PREFERENCE_METHODS[method], probe=probe)))
    return stages


class Judgement:
    """The held-out labelers' verdicts on one setting's products: every policy sampled once per
    evaluation prompt and compared with the same SFT sample; best-of-n from the same n SFT
    samples per prompt, scored by each setting's RM."""

    def __init__(self, p, world: World, sft: str, prompts: list[str]):
        e = p.evaluation
        self.p, self.world, self.prompts, self.seed = p, world, prompts, p.seed + 1000
        self.chat = dict(chat=p.sft.data.chat, max_prompt_len=p.ppo.data.max_prompt_len,
                         max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                         batch_size=e.batch_size)
        self.sft_path = sft
        self._sft: Optional[dict] = None

    @property
    def sft(self) -> dict:
        """The SFT reference response, a second SFT sample and n candidates per prompt."""
        if self._sft is None:
            policy = Policy(self.sft_path, self.p.evaluation.dtype)
            self._sft = dict(
                reference=[s[0] for s in policy.sample(self.prompts, 1, self.seed, **self.chat)],
                second=[s[0] for s in policy.sample(self.prompts, 1, self.seed + 1, **self.chat)],
                candidates=policy.sample(self.prompts, self.p.evaluation.best_of_n,
                                         self.seed + 2, **self.chat))
        return self._sft

    def verdict(self, responses: list[str], name: str) -> dict:
        judged = evaluate.judge_responses(self.world, None, self.prompts, {name: responses},
                                          self.sft["reference"], self.seed)
        return dict(win_rate=judged["win_rate_vs_sft"][name]["value"],
                    gold_score=judged["gold_score"][name]["value"])

    def sft_row(self) -> dict:
        return self.verdict(self.sft["second"], "sft")

    def setting(self, directory: str, methods, test: list[dict], _stage_dir: str) -> dict:
        """RM accuracy on ``test`` and each method's verdict."""
        reward = RewardModel(os.path.join(directory, "rm", layout.REWARD_MODEL),
                             self.p.rm.data.max_len, self.p.sft.data.chat)
        out = {f"rm_{k}": v for k, v in evaluate.rm_accuracy(
            self.world, reward, _records(test)).items() if k != "comparisons"}
        for method in methods:
            if method == "best_of_n":
                groups = self.sft["candidates"]
                scores = evaluate.score_groups(reward, self.prompts, groups)
                responses = [g[int(np.argmax(s))] for g, s in zip(groups, scores)]
            else:
                path = os.path.join(directory, method,
                                    layout.POLICY if method == "ppo_ptx" else layout.MODEL)
                policy = Policy(path, self.p.evaluation.dtype)
                responses = [s[0] for s in policy.sample(self.prompts, 1, self.seed + 3,
                                                         **self.chat)]
            out.update({f"{method}_{k}": v for k, v in self.verdict(responses, method).items()})
        return out


def _records(test: list[dict]) -> list[Comparison]:
    return [Comparison(**dict(r, responses=tuple(r["responses"]), ranking=tuple(r["ranking"])))
            for r in test]


def _curves(workdir: str, config: Ablations) -> dict:
    """Per method and seed, each validation checkpoint's KL and gold score on the full data."""
    out: dict = {"ppo_ptx": {}, "dpo": {}}
    for seed in config.seeds:
        base = os.path.join(workdir, "size1", f"seed{seed}")
        for method, proxy in (("ppo_ptx", "score"), ("dpo", "implicit_reward")):
            run = os.path.join(base, method)
            if os.path.exists(os.path.join(run, "metrics.jsonl")):
                out[method][str(seed)] = [
                    dict(step=r["step"], kl=r["kl"], gold_score=r["judge/gold_score"],
                         proxy=r[proxy]) for r in read_metrics(run, "validation")
                    if "judge/gold_score" in r]
    return out
