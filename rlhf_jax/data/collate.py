"""Records to the arrays the train steps take."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlhf_jax.data.records import Comparison, Demonstration
from rlhf_jax.data.tokenize import Example, encode, truncate


def demonstration_examples(tokenizer, demos: Sequence[Demonstration], max_len: int,
                           chat: bool) -> list[Example]:
    """Tokenized, truncated demonstrations with response-only loss masks (ready for ``pack``)."""
    return [truncate(*encode(tokenizer, d.prompt, d.response, chat), max_len) for d in demos]


def comparison_batch(tokenizer, comparisons: Sequence[Comparison], max_len: int, k_max: int,
                     chat: bool, pad_token: int = 0) -> dict[str, np.ndarray]:
    """``tokens``, ``mask``, ``response_mask`` (B, k_max, max_len), ``rank``, ``valid`` (B, k_max)
    for ``reward_step`` and ``dpo_step``.

    Row b holds prompt b with each of its K responses (right-padded; ``response_mask``
    is 1 on the response's tokens); ``rank[b, i]``
    is the position of response i in the ranking (0 = best); responses beyond K
    are padding with ``valid`` false.
    """
    b = len(comparisons)
    out = dict(tokens=np.full((b, k_max, max_len), pad_token, np.int32),
               mask=np.zeros((b, k_max, max_len), np.int32),
               response_mask=np.zeros((b, k_max, max_len), np.int32),
               rank=np.full((b, k_max), k_max, np.int32), valid=np.zeros((b, k_max), bool))
    for row, comp in enumerate(comparisons):
        if comp.k > k_max:
            raise ValueError(f"comparison {row} has K={comp.k} responses, more than k_max={k_max}")
        for i, response in enumerate(comp.responses):
            example = truncate(*encode(tokenizer, comp.prompt, response, chat), max_len)
            n = len(example.tokens)
            out["tokens"][row, i, :n] = example.tokens
            out["mask"][row, i, :n] = 1
            out["response_mask"][row, i, :n] = example.loss_mask
            out["valid"][row, i] = True
        out["rank"][row, list(comp.ranking)] = np.arange(comp.k)
    return out
