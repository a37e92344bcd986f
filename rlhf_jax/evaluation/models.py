"""Saved models as the evaluation uses them: sample responses, score them, measure likelihoods.

``Policy(path)`` loads a causal LM (Hugging Face directory or ``.gguf``) and its
tokenizer. ``policy.sample(prompts, n, seed, ...)`` returns ``n`` responses per
prompt as text, rendered either as a chat turn (the SFT and PPO models) or as
raw text after an optional prefix (a base model, prompted the way the corpus
shows requests); ``policy.loglik(contexts, continuations)`` sums the
log-probabilities of each continuation given its context. ``RewardModel(path)``
scores (prompt, response) pairs with a saved reward model. Everything runs in
fixed-shape batches (the last one padded with zero rows), deterministically
given the seed, under the model's own ``Partitioner``: by default one device
of this process (each process of a multi-host run may then evaluate on its
own), or a stage's mesh, so that a model too large for one device is never
gathered on one.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.checkpoints import load_pretrained, load_tokenizer
from rlhf_jax.checkpoints.scalar_model import load_scalar_model
from rlhf_jax.data.loaders import padded_batches
from rlhf_jax.data.tokenize import (decode_responses, encode, encode_prompt, left_pad,
                                    stop_tokens, truncate)
from rlhf_jax.models import CausalLM, ScalarHeadModel
from rlhf_jax.parallel import Partitioner
from rlhf_jax.sampling import SamplingConfig, generate
from rlhf_jax.train.actor_critic import token_logprobs
from rlhf_jax.train.reward import score_responses


def on_partitioner(method):
    """Runs ``method`` under the model's partitioner (its mesh and rules), whatever mesh a caller
    has entered."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.partitioner.activate():
            return method(self, *args, **kwargs)

    return run


def _batches(rows: dict[str, np.ndarray], batch_size: int, partitioner: Partitioner):
    """``(rows in it, sharded batch)`` for each batch of ``rows``, the last one padded with zero
    rows (the one padding policy: ``data.loaders.padded_batches``)."""
    n = len(next(iter(rows.values())))
    for start, batch in zip(range(0, n, batch_size), padded_batches(rows, batch_size)):
        yield min(batch_size, n - start), partitioner.shard_batch(batch)


class Policy:
    def __init__(self, path: str, dtype: str = "float32", partitioner: Partitioner | None = None):
        self.partitioner = partitioner or Partitioner.single_device()
        self.config, self.params = load_pretrained(path, dtype=dtype, mesh=self.partitioner.mesh,
                                                   rules=self.partitioner.rules)
        self.tokenizer = load_tokenizer(path)
        self.pad = self.tokenizer.pad_token_id or 0

    @on_partitioner
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
        for i, (real, batch) in enumerate(_batches(dict(ids=ids, mask=mask), batch_size,
                                                   self.partitioner)):
            out = generate(self.config, self.params, batch["ids"], batch["mask"],
                           jax.random.fold_in(jax.random.key(seed), i), sampling)
            response, keep = parallel.to_host((out.response, out.response_mask))
            texts += decode_responses(self.tokenizer, response[:real], keep[:real],
                                      first_line=line_stop)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    @on_partitioner
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
        rows = dict(tokens=tokens, mask=mask.astype(np.int32), target=target)
        return np.concatenate([parallel.to_host(_loglik(self.config, self.params, batch))[:real]
                               for real, batch in _batches(rows, batch_size, self.partitioner)])


@functools.partial(jax.jit, static_argnames="config")
def _loglik(config, params, batch):
    """Σ_t target_t · log p(token_t | tokens_<t) per row (``train.actor_critic.token_logprobs``)."""
    logits = CausalLM(config).apply({"params": params}, batch["tokens"],
                                    attention_mask=batch["mask"])
    logprobs = token_logprobs(logits[:, :-1], batch["tokens"][:, 1:])
    return jnp.sum(logprobs * batch["target"][:, 1:], axis=-1)


class RewardModel:
    def __init__(self, path: str, max_len: int, chat: bool = True,
                 partitioner: Partitioner | None = None):
        self.partitioner = partitioner or Partitioner.single_device()
        self.config, self.params, self.info = load_scalar_model(path, self.partitioner.mesh,
                                                                self.partitioner.rules)
        self.tokenizer = load_tokenizer(path)
        self.max_len, self.chat = max_len, chat

    @on_partitioner
    def score(self, prompts: Sequence[str], responses: Sequence[str],
              batch_size: int = 64) -> np.ndarray:
        """The (normalized) reward of each (prompt, response) pair."""
        tokens = np.full((len(prompts), self.max_len), self.tokenizer.pad_token_id or 0, np.int32)
        mask = np.zeros_like(tokens)
        for row, (p, r) in enumerate(zip(prompts, responses)):
            ids = truncate(*encode(self.tokenizer, p, r, self.chat), self.max_len).tokens
            tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
        return np.concatenate([
            parallel.to_host(_scores(self.config, self.params, batch["tokens"][:, None],
                                     batch["mask"][:, None]))[:real, 0]
            for real, batch in _batches(dict(tokens=tokens, mask=mask), batch_size,
                                        self.partitioner)])


@functools.partial(jax.jit, static_argnames="config")
def _scores(config, params, tokens, mask):
    return score_responses(ScalarHeadModel(config), params, tokens, mask)
