"""Records to the arrays the train steps take."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlhf_jax.data.records import Comparison, Demonstration
from rlhf_jax.data.tokenize import Example, encode, left_pad, truncate


def demonstration_examples(tokenizer, demos: Sequence[Demonstration], max_len: int,
                           chat: bool) -> list[Example]:
    """Tokenized, truncated demonstrations with response-only loss masks (ready for ``pack``)."""
    return [truncate(*encode(tokenizer, d.prompt, d.response, chat), max_len) for d in demos]


def comparison_batch(tokenizer, comparisons: Sequence[Comparison], max_len: int, k_max: int,
                     chat: bool, pad_token: int = 0, prompt_len: int = 0) -> dict[str, np.ndarray]:
    """``tokens``, ``mask``, ``response_mask`` (B, k_max, max_len), ``rank``, ``valid`` (B, k_max)
    for ``reward_step`` and ``dpo_step``.

    Row b holds prompt b with each of its K responses (right-padded, cut by ``truncate``;
    ``response_mask`` is 1 on the response's tokens); ``rank[b, i]`` is the position of
    response i in the ranking (0 = best); responses beyond K are padding with ``valid`` false.

    With ``prompt_len`` > 0, the prompt-once layout (``train.reward.score_comparisons``):
    ``prompt``, ``prompt_mask`` (B, prompt_len) hold each prompt once, left-padded (cut from
    the left), and ``tokens``, ``mask``, ``response_mask`` (B, k_max, max_len − prompt_len)
    the responses alone (cut from the right).
    """
    b, width = len(comparisons), max_len - prompt_len
    out = dict(tokens=np.full((b, k_max, width), pad_token, np.int32),
               mask=np.zeros((b, k_max, width), np.int32),
               response_mask=np.zeros((b, k_max, width), np.int32),
               rank=np.full((b, k_max), k_max, np.int32), valid=np.zeros((b, k_max), bool))
    if prompt_len:
        out["prompt"] = np.full((b, prompt_len), pad_token, np.int32)
        out["prompt_mask"] = np.zeros((b, prompt_len), np.int32)
    for row, comp in enumerate(comparisons):
        if comp.k > k_max:
            raise ValueError(f"comparison {row} has K={comp.k} responses, more than k_max={k_max}")
        for i, response in enumerate(comp.responses):
            head, tail = encode(tokenizer, comp.prompt, response, chat)
            if prompt_len:
                example = Example(tuple(tail[:width]), (1,) * len(tail[:width]))
            else:
                example = truncate(head, tail, max_len)
            n = len(example.tokens)
            out["tokens"][row, i, :n] = example.tokens
            out["mask"][row, i, :n] = 1
            out["response_mask"][row, i, :n] = example.loss_mask
            out["valid"][row, i] = True
        if prompt_len:
            out["prompt"][row], out["prompt_mask"][row] = left_pad(head, prompt_len, pad_token)
        out["rank"][row, list(comp.ranking)] = np.arange(comp.k)
    return out
