"""Saved models as the evaluation uses them: sample responses, score them, measure likelihoods.

``Policy(path)`` loads a causal LM (Hugging Face directory or ``.gguf``) and its
tokenizer. ``policy.sample(prompts, n, seed, ...)`` returns ``n`` responses per
prompt as text, rendered either as a chat turn (the SFT and PPO models) or as
raw text after an optional prefix (a base model, prompted the way the corpus
shows requests); ``policy.loglik(contexts, continuations)`` sums the
log-probabilities of each continuation given its context. ``RewardModel(path)``
scores (prompt, response) pairs with a saved reward model. Everything runs on
one device in fixed-shape batches (the last one padded), deterministically
given the seed, outside any mesh a caller may have set (``single_device``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.checkpoints import load_pretrained, load_tokenizer
from rlhf_jax.checkpoints.scalar_model import load_scalar_model
from rlhf_jax.data.tokenize import (decode_responses, encode, encode_prompt, left_pad,
                                    stop_tokens, truncate)
from rlhf_jax.models import CausalLM, ScalarHeadModel
from rlhf_jax.sampling import SamplingConfig, generate
from rlhf_jax.train.reward import score_responses


def single_device(method):
    """Runs ``method`` with no mesh and no sharding rules in effect (unsharded parameters)."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with jax.set_mesh(None), nn.logical_axis_rules(()):
            return method(*args, **kwargs)

    return run


def _batches(n: int, size: int):
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), 0)]) if len(rows) < size else rows


class Policy:
    @single_device
    def __init__(self, path: str, dtype: str = "float32"):
        self.config, self.params = load_pretrained(path, dtype=dtype)
        self.tokenizer = load_tokenizer(path)
        self.pad = self.tokenizer.pad_token_id or 0

    @single_device
    def sample(self, prompts: Sequence[str], n: int, seed: int, *, chat: bool, max_prompt_len: int,
               max_new_tokens: int, temperature: float, batch_size: int, prefix: str = "",
               line_stop: bool = False, min_new_tokens: int = 0) -> list[list[str]]:
        """``n`` responses to each prompt (text, special tokens dropped, stripped). With
        ``line_stop`` a newline also ends a response (a base model answering in a thread)."""
        stops = stop_tokens(self.tokenizer, chat)
        newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
        if line_stop and len(newline) == 1:
            stops = stops + tuple(newline)
        sampling = SamplingConfig.for_tokenizer(
            self.tokenizer, max_new_tokens, stop_tokens=stops, temperature=temperature,
            min_new_tokens=min_new_tokens, prompt_buckets=(max_prompt_len,))
        encoded = [left_pad(encode_prompt(self.tokenizer, prefix + p, chat), max_prompt_len,
                            self.pad) for p in prompts for _ in range(n)]
        ids, mask = (np.stack(x) for x in zip(*encoded))
        texts = []
        for i, (start, stop) in enumerate(_batches(len(ids), batch_size)):
            out = generate(self.config, self.params, _pad_rows(ids[start:stop], batch_size),
                           _pad_rows(mask[start:stop], batch_size),
                           jax.random.fold_in(jax.random.key(seed), i), sampling)
            response, keep = jax.device_get((out.response, out.response_mask))
            texts += decode_responses(self.tokenizer, response[:stop - start],
                                      keep[:stop - start], first_line=line_stop)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    @single_device
    def loglik(self, contexts: Sequence[str], continuations: Sequence[str],
               batch_size: int = 32) -> np.ndarray:
        """Σ log p(continuation tokens | context) per pair, raw text (no chat template)."""
        tokenize = lambda s: list(self.tokenizer(s, add_special_tokens=False)["input_ids"])
        pairs = [(tokenize(c), tokenize(x)) for c, x in zip(contexts, continuations)]
        length = max(len(c) + len(x) for c, x in pairs)
        tokens = np.full((len(pairs), length), self.pad, np.int32)
        target = np.zeros((len(pairs), length), np.float32)
        for row, (c, x) in enumerate(pairs):
            tokens[row, :len(c) + len(x)] = c + x
            target[row, len(c):len(c) + len(x)] = 1
        mask = (np.arange(length)[None] < np.array([len(c) + len(x) for c, x in pairs])[:, None])
        out = []
        for start, stop in _batches(len(pairs), batch_size):
            out.append(np.asarray(_loglik(
                self.config, self.params, _pad_rows(tokens[start:stop], batch_size),
                _pad_rows(mask[start:stop].astype(np.int32), batch_size),
                _pad_rows(target[start:stop], batch_size)))[:stop - start])
        return np.concatenate(out)


@functools.partial(jax.jit, static_argnames="config")
def _loglik(config, params, tokens, mask, target):
    logits = CausalLM(config).apply({"params": params}, tokens, attention_mask=mask)
    logp = jax.nn.log_softmax(logits[:, :-1])
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    return jnp.sum(picked * target[:, 1:], axis=-1)


class RewardModel:
    @single_device
    def __init__(self, path: str, max_len: int, chat: bool = True):
        self.config, self.params, self.info = load_scalar_model(path)
        self.tokenizer = load_tokenizer(path)
        self.max_len, self.chat = max_len, chat

    @single_device
    def score(self, prompts: Sequence[str], responses: Sequence[str],
              batch_size: int = 64) -> np.ndarray:
        """The (normalized) reward of each (prompt, response) pair."""
        tokens = np.full((len(prompts), self.max_len), self.tokenizer.pad_token_id or 0, np.int32)
        mask = np.zeros_like(tokens)
        for row, (p, r) in enumerate(zip(prompts, responses)):
            ids = truncate(*encode(self.tokenizer, p, r, self.chat), self.max_len).tokens
            tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
        out = []
        for start, stop in _batches(len(tokens), batch_size):
            scores = _scores(self.config, self.params, _pad_rows(tokens[start:stop], batch_size)[:, None],
                             _pad_rows(mask[start:stop], batch_size)[:, None])
            out.append(np.asarray(scores)[:stop - start, 0])
        return np.concatenate(out)


@functools.partial(jax.jit, static_argnames="config")
def _scores(config, params, tokens, mask):
    return score_responses(ScalarHeadModel(config), params, tokens, mask)
