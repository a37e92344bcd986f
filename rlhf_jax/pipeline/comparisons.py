"""Sampling saved policies inside the pipeline: the comparisons the labelers rank, and the
reference answers the PPO judge measures win rates against.

``comparisons(...)`` is the stage ``round<r>/comparisons``: K = k_min..k_max samples per RM
prompt from the round's sampler (the SFT model, later the last PPO-ptx policy), ranked by a
random training labeler; with real data, the user's comparisons as they are.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

import numpy as np

from rlhf_jax.evaluation.models import Policy
from rlhf_jax.feedback.labelers import heldout_labelers, pairwise_agreement, training_labelers
from rlhf_jax.feedback.world import World
from rlhf_jax.pipeline import layout
from rlhf_jax.pipeline.inputs import Inputs, write_shared


def responder(config, path: str) -> Callable[[list[str]], list[str]]:
    """``respond(prompts)``: one response per prompt from the model at ``path`` (loaded on first
    use), sampled as in the evaluation with a fixed seed."""
    policy: list[Policy] = []

    def respond(prompts):
        if not policy:
            policy.append(Policy(path, config.evaluation.dtype))
        e = config.evaluation
        return [s[0] for s in policy[0].sample(
            prompts, 1, config.seed + 2000, chat=config.sft.data.chat,
            max_prompt_len=config.ppo.data.max_prompt_len, max_new_tokens=e.max_new_tokens,
            temperature=e.temperature, batch_size=e.batch_size)]

    return respond


def comparisons(config, world: Optional[World], inputs: Inputs, sampler: str,
                earlier: Sequence[str], round_index: int, directory: str) -> dict:
    """Writes this round's comparisons and ``all.jsonl`` (with the ``earlier`` rounds' files);
    returns counts and the labelers' agreement. Responses that decode to blank text are left out
    (records hold no empty response), and so are prompts left with fewer than two."""
    path = os.path.join(directory, layout.COMPARISONS)
    all_path = os.path.join(directory, layout.ALL_COMPARISONS)
    if world is None:  # real data: the user's comparisons
        records = [json.loads(line) for line in open(inputs.comparisons)]
        write_shared(records, path)
        write_shared(records, all_path)
        return dict(comparisons=len(records), source=inputs.comparisons)
    c = config.comparisons
    prompts = [json.loads(line) for line in open(inputs.rm_prompts)]
    samples = Policy(sampler, config.evaluation.dtype).sample(
        [p["prompt"] for p in prompts], c.k_max, config.seed + round_index,
        chat=config.sft.data.chat, max_prompt_len=config.ppo.data.max_prompt_len,
        max_new_tokens=c.max_new_tokens, temperature=c.temperature, batch_size=c.batch_size,
        min_new_tokens=1)
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
