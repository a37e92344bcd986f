"""Demonstrations to token ids with a response-only loss mask, and packing into fixed-length rows."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
    """One tokenized demonstration: ``tokens`` and ``loss_mask`` (1 on response tokens)."""

    tokens: tuple[int, ...]
    loss_mask: tuple[int, ...]


def encode(tokenizer, prompt: str, response: str, chat: bool) -> tuple[list[int], list[int]]:
    """``(prompt ids, response ids)``; the response ends with the token that stops generation.

    With ``chat`` the pair is rendered by the tokenizer's chat template (a user
    turn, then the assistant turn), and the response ids are what the template
    adds after the generation prompt, up to and including its end-of-turn token
    (``end_of_turn``; whatever the template writes after it, such as a newline,
    is dropped, so a model learns to end where the sampler stops and a reward
    model scores the token a sampled response ends with). Otherwise the raw
    texts are tokenized and the response ends with EOS.
    """
    head = encode_prompt(tokenizer, prompt, chat)
    if chat:
        user = [{"role": "user", "content": prompt}]
        full = list(tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}],
                                                  return_dict=True)["input_ids"])
        if full[:len(head)] != head:
            raise ValueError("the chat template renders the prompt differently with an answer")
        tail = full[len(head):]
        end = end_of_turn(tokenizer)
        if end in tail:
            tail = tail[:len(tail) - tail[::-1].index(end)]
        return head, tail
    tail = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return head, tail + [tokenizer.eos_token_id]


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    """The ids a response is generated after: with ``chat``, a user turn and the assistant's
    generation prompt (the tokenizer's chat template); otherwise the raw prompt text."""
    if chat:
        user = [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(user, add_generation_prompt=True,
                                                  return_dict=True)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=8)
def end_of_turn(tokenizer) -> int:
    """The token the chat template closes an assistant turn with (``<|im_end|>`` in ChatML): the
    first token after the content of a rendered answer."""
    user = [{"role": "user", "content": "x"}]
    head = encode_prompt(tokenizer, "x", True)
    full = list(tokenizer.apply_chat_template(user + [{"role": "assistant", "content": "y"}],
                                              return_dict=True)["input_ids"])
    content = list(tokenizer("y", add_special_tokens=False)["input_ids"])
    tail = full[len(head):]
    if tail[:len(content)] != content or len(tail) == len(content):
        raise ValueError("cannot find the chat template's end-of-turn token")
    return tail[len(content)]


def stop_tokens(tokenizer, chat: bool) -> tuple[int, ...]:
    """What ends a sampled response: EOS, and with ``chat`` the end-of-turn token."""
    stops = [tokenizer.eos_token_id]
    if chat and end_of_turn(tokenizer) not in stops:
        stops.append(end_of_turn(tokenizer))
    return tuple(stops)


def decode_responses(tokenizer, response, response_mask, first_line: bool = False) -> list[str]:
    """Sampled responses (B, N) as text: tokens under the mask, special tokens dropped, cut at
    the first newline if ``first_line``, stripped."""
    texts = [tokenizer.decode(np.asarray(r)[np.asarray(m) > 0], skip_special_tokens=True)
             for r, m in zip(response, response_mask)]
    return [(t.split("\n")[0] if first_line else t).strip() for t in texts]


def encode_text(tokenizer, text: str, max_len: int) -> Example:
    """A pretraining text: its ids then EOS, cut to ``max_len``, every token in the loss."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_len - 1]
    ids.append(tokenizer.eos_token_id)
    return Example(tuple(ids), (1,) * len(ids))


def left_pad(ids, length: int, pad_token: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` of ``length``: the last ``length`` ids, padded on the left."""
    ids = list(ids)[-length:]
    out = np.full(length, pad_token, np.int32)
    mask = np.zeros(length, np.int32)
    if ids:
        out[length - len(ids):], mask[length - len(ids):] = ids, 1
    return out, mask


def truncate(prompt: Sequence[int], response: Sequence[int], max_len: int) -> Example:
    """Fits prompt + response into ``max_len`` tokens.

    The prompt keeps its end (cut from the left) and at least half of
    ``max_len`` if it is that long; the response is cut from the right to fit.
    """
    budget = max(max_len - len(response), max_len // 2)
    prompt = list(prompt)[max(0, len(prompt) - budget):]
    response = list(response)[:max_len - len(prompt)]
    return Example(tuple(prompt + response), (0,) * len(prompt) + (1,) * len(response))


def pack(examples: Sequence[Example], row_len: int, pad_token: int = 0) -> dict[str, np.ndarray]:
    """Packs examples in order into rows of ``row_len`` tokens (a new row when one does not fit).

    Returns ``tokens``, ``segment_ids`` (1, 2, … per example in a row, 0 on
    padding) and ``loss_mask`` (0 on the first token of every example, so no
    token is predicted across an example boundary), each (rows, row_len) int32.
    """
    rows: list[list[Example]] = [[]]
    used = 0
    for ex in examples:
        if len(ex.tokens) > row_len:
            raise ValueError(f"an example of {len(ex.tokens)} tokens does not fit rows of "
                             f"{row_len}; truncate first")
        if used + len(ex.tokens) > row_len:
            rows.append([])
            used = 0
        rows[-1].append(ex)
        used += len(ex.tokens)
    out = {k: np.zeros((len(rows), row_len), np.int32)
           for k in ("tokens", "segment_ids", "loss_mask")}
    out["tokens"][:] = pad_token
    for r, row in enumerate(rows):
        start = 0
        for s, ex in enumerate(row, 1):
            end = start + len(ex.tokens)
            out["tokens"][r, start:end] = ex.tokens
            out["segment_ids"][r, start:end] = s
            out["loss_mask"][r, start:end] = ex.loss_mask
            out["loss_mask"][r, start] = 0
            start = end
    return out
