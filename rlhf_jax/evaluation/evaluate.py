"""The paper's evaluations of a finished pipeline run, as one ``results`` dict.

- Figure 1: each model's win rate against the SFT model (a second, independent
  sample of SFT for SFT itself) on held-out prompts, judged by the held-out
  labelers (by the reward model with real data), with 95% intervals over
  prompts. Models: ``base`` (the prompt as a forum thread), ``base_prompted``
  (the same after a few answered threads), ``sft``, ``ppo``, ``ppo_ptx``, any
  other trained policy (``dpo``, ``dpo_kwise``, ``rloo``, …) and ``best_of_n``
  (the RM's favourite of n SFT samples).
- Gold scores and the rubric's parts (content, clean, concise) per model.
- RM accuracy on the RM's validation comparisons as the training labelers
  ranked them, and as held-out labelers rank the same responses.
- Alignment tax: the loss on held-out pretraining text and the accuracy on the
  held-out fact questions (``corpus.fact_questions``, a task family never
  used in RL, answered by the likelihood of each choice) for every model.
- Over-optimization: RM score, gold score and expected win rate against SFT
  along each RL run, with the KL from SFT (its validation records).
- Samples: every model's responses to the first few prompts.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Callable

import numpy as np

from rlhf_jax.data.records import Comparison, PretrainText
from rlhf_jax.data.tokenize import encode_text
from rlhf_jax.evaluation.batched import validation_loss
from rlhf_jax.evaluation.models import Policy, RewardModel
from rlhf_jax.evaluation.stats import mean_interval, pairwise_accuracy
from rlhf_jax.feedback import corpus
from rlhf_jax.feedback.labelers import heldout_labelers
from rlhf_jax.feedback.tasks import rubric
from rlhf_jax.models import CausalLM
from rlhf_jax.parallel import Partitioner

UNTRAINED = ("base", "base_prompted", "sft")  # Figure 1's first rows; best_of_n is its last


def model_rows(trained) -> tuple[str, ...]:
    """Figure 1's rows, in order, for the trained policies ``trained`` (ppo, ppo_ptx, …)."""
    return (*UNTRAINED, *trained, "best_of_n")


def gold_judge(world, reference):
    """The PPO stage's judge of validation samples: the held-out labelers' mean expected score (no
    noise), the rubric's quality, and their expected win rate against ``reference(prompts)`` (SFT
    responses to the same prompts)."""
    labelers = heldout_labelers(world.panel)
    references: dict = {}

    def judge(prompts, responses) -> dict:
        missing = [p for p in prompts if p not in references]
        if missing:
            references.update(zip(missing, reference(missing)))
        tasks = [world.task(p) for p in prompts]
        gold = [np.mean([l.expected_score(t, r) for l in labelers]) for t, r in zip(tasks, responses)]
        quality = [rubric(t, r)["quality"] for t, r in zip(tasks, responses)]
        wins = [np.mean([l.win_probability(t, r, references[p]) for l in labelers])
                for p, t, r in zip(prompts, tasks, responses)]
        return {"judge/gold_score": float(np.mean(gold)), "judge/quality": float(np.mean(quality)),
                "judge/win_rate": float(np.mean(wins))}

    return judge


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the evaluation judges, gathered by the pipeline's evaluation stage."""

    prompts: list[str]  # held-out prompts
    models: dict[str, str]  # base, sft, then trained policies: Hugging Face directories (or .gguf)
    reward_model: str  # the last round's reward model directory
    rm_validation: list[Comparison]  # that reward model's validation comparisons
    pretrain_validation: list[PretrainText]  # held-out pretraining text
    curves: dict[str, list[dict]]  # per PPO run: validation records (iteration, kl, rm_score, …)
    agreement: dict  # inter-labeler agreement on the sampled comparisons ({} without labelers)


def evaluate(config, world, evidence: Evidence, partitioner: Partitioner | None = None) -> dict:
    """The results dict of the module docstring; ``world`` is None with real data (the reward
    model then judges). Models are loaded onto ``partitioner`` (default: one device of this
    process)."""
    e, seed, prompts = config.evaluation, config.seed + 1000, evidence.prompts
    models = {name: functools.partial(Policy, path, e.dtype, partitioner=partitioner)
              for name, path in evidence.models.items()}
    chat = dict(chat=config.sft.data.chat, max_prompt_len=config.ppo.data.max_prompt_len,
                max_new_tokens=e.max_new_tokens, temperature=e.temperature, batch_size=e.batch_size)
    reward = RewardModel(evidence.reward_model, config.rm.data.max_len, config.sft.data.chat,
                         partitioner=partitioner)
    sft = models["sft"]()
    reference = [s[0] for s in sft.sample(prompts, 1, seed, **chat)]
    responses = dict(sft=[s[0] for s in sft.sample(prompts, 1, seed + 1, **chat)])
    candidates = sft.sample(prompts, e.best_of_n, seed + 2, **chat)
    responses["best_of_n"] = [c[int(np.argmax(scores))] for c, scores in
                              zip(candidates, score_groups(reward, prompts, candidates))]
    trained = [name for name in models if name not in UNTRAINED]
    for name in trained:
        responses[name] = [s[0] for s in models[name]().sample(prompts, 1, seed + 3, **chat)]
    base = models["base"]()
    forum = dict(chat, chat=False, line_stop=True, max_prompt_len=4 * config.ppo.data.max_prompt_len)
    threads = [corpus.internet_prompt(p) for p in prompts]
    responses["base"] = [s[0] for s in base.sample(threads, 1, seed + 4, **forum)]
    if world is not None:
        prefix = corpus.fewshot_prefix(world.fewshot_tasks(e.fewshot))
        responses["base_prompted"] = [s[0] for s in base.sample(threads, 1, seed + 5, prefix=prefix,
                                                                **forum)]
    responses = {m: responses[m] for m in model_rows(trained) if m in responses}

    judged = judge_responses(world, reward, prompts, responses, reference, seed)
    return dict(
        judge="held-out labelers" if world is not None else "reward model",
        prompts=len(prompts), **judged,
        rm_accuracy=rm_accuracy(world, reward, evidence.rm_validation),
        agreement=evidence.agreement,
        alignment_tax=_alignment_tax(config, models, evidence.pretrain_validation),
        overoptimization=evidence.curves,
        samples=[dict(prompt=p, reference_sft=reference[i], **{m: r[i] for m, r in responses.items()})
                 for i, p in enumerate(prompts[:e.shown_prompts])])


def score_groups(reward, prompts, groups) -> list[np.ndarray]:
    """The RM's scores of each prompt's group of responses, all scored in one pass."""
    flat = reward.score([p for p, g in zip(prompts, groups) for _ in g],
                        [r for g in groups for r in g])
    ends = np.cumsum([len(g) for g in groups])
    return np.split(flat, ends[:-1])


def judge_responses(world, reward, prompts, responses, reference, seed) -> dict:
    """Win rates against ``reference`` (per prompt: the share of judges preferring the model),
    with gold scores and rubric parts when labelers exist. The labelers' noise is drawn from a
    generator per model, seeded by ``seed`` and the model's name."""
    out = dict(win_rate_vs_sft={}, gold_score={}, rubric={})
    if world is None:
        ref_scores = reward.score(prompts, reference)
    for model, texts in responses.items():
        # each row's labeler noise of its own: a row's judgement does not depend on the others
        rng = np.random.default_rng([seed, zlib.crc32(model.encode())])
        if world is None:
            scores = reward.score(prompts, texts)
            wins = (scores > ref_scores) + 0.5 * (scores == ref_scores)
        else:
            labelers = heldout_labelers(world.panel)
            tasks = [world.task(p) for p in prompts]
            wins = [np.mean([l.prefers(t, y, r, rng) for l in labelers])
                    for t, y, r in zip(tasks, texts, reference)]
            gold = [np.mean([l.expected_score(t, y) for l in labelers]) for t, y in zip(tasks, texts)]
            out["gold_score"][model] = mean_interval(gold)
            parts = [rubric(t, y) for t, y in zip(tasks, texts)]
            out["rubric"][model] = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
        out["win_rate_vs_sft"][model] = mean_interval(wins, (0.0, 1.0))
    return out


def rm_accuracy(world, reward, comparisons: list[Comparison]) -> dict:
    """Pairwise accuracy on the RM stage's validation comparisons: as ranked by the training
    labelers, and (with the world) as ranked again by a random held-out labeler each."""
    scores = score_groups(reward, [c.prompt for c in comparisons],
                           [c.responses for c in comparisons])
    out = dict(training_labelers=pairwise_accuracy(scores, [c.ranking for c in comparisons]),
               comparisons=len(comparisons))
    if world is not None:
        rng = np.random.default_rng(0)
        labelers = heldout_labelers(world.panel)
        rankings = [labelers[rng.integers(len(labelers))].rank(world.task(c.prompt), c.responses, rng)
                    for c in comparisons]
        out["heldout_labelers"] = pairwise_accuracy(scores, rankings)
    return out


def _alignment_tax(config, models: dict[str, Callable[[], Policy]],
                   texts: list[PretrainText]) -> dict:
    """Held-out pretraining loss (on ``texts``) and the fact questions, for the base, SFT and
    every trained model."""
    questions = corpus.fact_questions()
    out = {}
    for name in models:
        policy = models[name]()
        examples = [encode_text(policy.tokenizer, t.text, config.ppo.ptx.max_len) for t in texts]
        loss = validation_loss(CausalLM(policy.config), examples, config.ppo.ptx.max_len,
                               config.evaluation.batch_size, policy.partitioner)(
                                   policy.params)["loss"]
        contexts = [q for q, choices, _ in questions for _ in choices]
        logliks = policy.loglik(contexts, [c for _, choices, _ in questions for c in choices])
        right, probs, at = [], [], 0
        for _, choices, answer in questions:
            ll = logliks[at:at + len(choices)]
            at += len(choices)
            right.append(float(np.argmax(ll) == answer))
            probs.append(float(np.exp(ll[answer] - np.logaddexp.reduce(ll))))
        out[name] = dict(pretrain_loss=float(loss), fact_accuracy=float(np.mean(right)),
                         fact_probability=float(np.mean(probs)))
    return out

