"""Step 2 of InstructGPT: the reward model, trained on rankings of K responses per prompt.

``run_reward(config, workdir)`` prepares the comparisons, streams batches of
prompts (each with all its responses), runs ``reward_step`` (the K-wise loss)
for ``config.epochs`` epochs (the paper: one), evaluates pairwise accuracy on
the validation split overall and per labeler, then shifts the head's bias so
that the SFT demonstrations (``config.normalize``) score 0 on average, and
saves the result to ``workdir/reward_model`` (``checkpoints.load_scalar_model``).
With ``config.lora.rank > 0`` only adapters and the head train, on the frozen
``init``; the saved model then holds them alone and names its base, which a PPO
run from the same ``init`` shares with its policy.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.checkpoints.scalar_model import save_scalar_model
from rlhf_jax.data.collate import comparison_batch, demonstration_examples
from rlhf_jax.data.loaders import record_stream, split_records
from rlhf_jax.data.records import read_jsonl
from rlhf_jax.evaluation.batched import batched_sums
from rlhf_jax.models import ScalarHeadModel
from rlhf_jax.models.lora import combine
from rlhf_jax.parallel import Partitioner
from rlhf_jax.pipeline import layout, stage
from rlhf_jax.pipeline.loop import train
from rlhf_jax.pipeline.state import create_train_state, initial_weights
from rlhf_jax.rl.ranking import per_prompt_ranking
from rlhf_jax.train.optim import make_optimizer
from rlhf_jax.train.reward import (center_reward, reward_step, score_comparisons,
                                   score_responses)


def run_reward(config, workdir: str) -> dict:
    """Trains, normalizes and saves the reward model; returns its final metrics."""
    config, partitioner, tokenizer = stage.start(config)
    with partitioner.activate():
        sources = stage.prepare("comparison", config, workdir, tokenizer)
        demonstrations = _demonstration_rows(config, workdir, tokenizer)  # a bad file fails now
        encode_one = functools.partial(encode_comparison, tokenizer, config.data,
                                       prompt_len=config.data.max_prompt_len)
        batch = config.batch_size
        steps = config.steps or config.epochs * (len(sources["train"]) // config.batch_size)
        model_config, pretrained = initial_weights(config, partitioner)
        model = ScalarHeadModel(model_config)
        state, abstract, frozen = create_train_state(
            model, make_optimizer(stage.optimizer_config(config, steps)), partitioner,
            jax.random.key(config.seed), np.zeros((1, 8), np.int32),
            None if pretrained is None else {"trunk": pretrained["trunk"]})
        full = lambda state: combine(state.params, frozen)
        accuracy = ranking_accuracy(model, split_records(sources["validation"], "comparison"),
                                    encode_one, batch, partitioner)
        evaluate = lambda state: accuracy(full(state))
        step = partitioner.jit(functools.partial(reward_step, model=model,
                                                 microbatches=config.microbatches),
                               donate_argnums=0)
        stream = record_stream(sources["train"], "comparison", encode_one, batch_size=batch,
                               seed=config.seed)
        state, _ = train(
            lambda s, b, r: step(s, b, r, frozen), state, abstract, stream,
            jax.random.key(config.seed + 1),
            config=stage.loop_config(config, steps, "comparisons"), workdir=workdir,
            partitioner=partitioner, evaluate=evaluate, count_units=count_pairs)
        demonstration_mean = mean_reward(model, demonstrations, batch, partitioner)
        offset = demonstration_mean(full(state))
        trainable = center_reward(state.params, offset)
        result = dict(validation=evaluate(state.replace(params=trainable)),
                      demonstration_offset=offset,
                      demonstration_mean_after=demonstration_mean(combine(trainable, frozen)))
        save_scalar_model(os.path.join(workdir, layout.REWARD_MODEL), model_config, trainable,
                          result, tokenizer, frozen=frozen, base=config.init)
        return result


def encode_comparison(tokenizer, data_config, comparison, prompt_len: int = 0) -> dict:
    """One comparison's arrays (``comparison_batch``; the prompt-once layout with
    ``prompt_len`` > 0, the RM's ``data.max_prompt_len``)."""
    one = comparison_batch(tokenizer, [comparison], data_config.max_len, data_config.k_max,
                           data_config.chat, tokenizer.pad_token_id or 0, prompt_len)
    return {k: v[0] for k, v in one.items()}


def count_pairs(batch: dict) -> int:
    k = np.sum(batch["valid"], axis=1)
    return int(np.sum(k * (k - 1) // 2))


def ranking_accuracy(model: ScalarHeadModel, comparisons, encode_one, batch_size: int,
                     partitioner: Partitioner):
    """``evaluate(params)``: K-wise ``loss``, pairwise ``accuracy`` (overall and
    ``accuracy/<labeler>`` per labeler id) and reward ``reward_mean``/``reward_std`` over the
    responses of all validation comparisons."""
    labelers = sorted({c.labeler_id for c in comparisons if c.labeler_id is not None})
    encoded = [encode_one(c) for c in comparisons]
    rows = {k: np.stack([e[k] for e in encoded]) for k in encoded[0]
            if k != "response_mask"}  # the reward reads no response mask: not sent to devices
    index = {name: i for i, name in enumerate(labelers)}
    rows["labeler"] = np.array([index.get(c.labeler_id, -1) for c in comparisons], np.int32)

    def sums(params, b):
        rewards = score_comparisons(model, params, b)
        per = per_prompt_ranking(rewards, b["rank"], b["valid"])
        by_labeler = jax.nn.one_hot(b["labeler"], max(len(labelers), 1))  # (B, L); -1 → zeros
        valid = b["valid"].astype(jnp.float32)
        rewards = jnp.where(b["valid"], rewards, 0.0)
        return dict(loss=jnp.sum(per["loss"]), prompts=jnp.sum(per["pairs"] > 0),
                    correct=jnp.sum(per["correct_pairs"]), pairs=jnp.sum(per["pairs"]),
                    correct_by=per["correct_pairs"] @ by_labeler, pairs_by=per["pairs"] @ by_labeler,
                    reward_sum=jnp.sum(rewards), reward_sq=jnp.sum(rewards ** 2),
                    responses=jnp.sum(valid))

    totals = batched_sums(sums, rows, batch_size, partitioner)

    def evaluate(params) -> dict:
        total = totals(params)
        mean = total["reward_sum"] / total["responses"]
        metrics = dict(loss=total["loss"] / max(total["prompts"], 1),
                       accuracy=total["correct"] / max(total["pairs"], 1), reward_mean=mean,
                       reward_std=np.sqrt(max(total["reward_sq"] / total["responses"] - mean ** 2, 0)))
        for name, i in index.items():
            metrics[f"accuracy/{name}"] = total["correct_by"][i] / max(total["pairs_by"][i], 1)
        return {k: float(v) for k, v in metrics.items()}

    return evaluate


def _demonstration_rows(config, workdir: str, tokenizer) -> dict:
    """Prompt + response token rows (N, T) of the first ``max_records`` of ``config.normalize``'s
    demonstrations (all of them on every process: ``mean_reward`` cuts them into global batches)."""
    section = stage.data_config(config, workdir, "normalize")
    demos, _ = read_jsonl(section.path, "demonstration", on_error=section.on_error)
    demos = demos[:section.max_records]
    tokens = np.full((len(demos), config.data.max_len), tokenizer.pad_token_id or 0, np.int32)
    mask = np.zeros_like(tokens)
    for row, example in enumerate(demonstration_examples(tokenizer, demos, config.data.max_len,
                                                         config.data.chat)):
        ids = example.tokens
        tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return dict(tokens=tokens, mask=mask)


def mean_reward(model: ScalarHeadModel, rows: dict, batch_size: int, partitioner: Partitioner):
    """``mean(params)``: the mean reward of the rows (padding rows, all-zero masks, excluded)."""

    def sums(params, b):
        rewards = score_responses(model, params, b["tokens"][:, None], b["mask"][:, None])[:, 0]
        real = jnp.any(b["mask"] > 0, axis=1)
        return jnp.sum(jnp.where(real, rewards, 0.0)), jnp.sum(real)

    totals = batched_sums(sums, rows, batch_size, partitioner)

    def mean(params) -> float:
        reward_sum, count = totals(params)
        return float(reward_sum / max(count, 1))

    return mean
