"""Jitted generation: one prefill over the prompt, then a ``lax.while_loop`` of cached decode steps.

The output shape is fixed by the batch, the prompt bucket and ``max_new_tokens``,
so rollouts of the same size reuse one compiled program, and the loop exits as
soon as every row has emitted a stop token. Under ``jax.set_mesh`` and
``nn.logical_axis_rules`` the same code runs sharded: the batch and the cache
over ``data``/``fsdp``, heads over ``tensor``.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax.models import CausalLM, KVCache, ModelConfig, last_token_index, unstack_layers
from rlhf_jax.models.kv_cache import constrain_cache
from rlhf_jax.sampling.config import SamplingConfig
from rlhf_jax.sampling.filters import draw


@flax.struct.dataclass
class Samples:
    """A batch of generations; P is the bucketed prompt length, N is ``max_new_tokens``."""

    sequences: jax.Array  # (B, P+N) prompt (padded to P) then response: feed back to the model
    sequence_mask: jax.Array  # (B, P+N) 1 on real prompt tokens and on the response up to its stop
    response: jax.Array  # (B, N) sampled tokens; pad_token after the stop
    response_mask: jax.Array  # (B, N) 1 up to and including the first stop token
    logprobs: jax.Array  # (B, N) log-prob under the sampling distribution (0 when greedy)
    raw_logprobs: jax.Array  # (B, N) log-prob under the model itself (temperature 1, unfiltered)
    prompt_length: int = flax.struct.field(pytree_node=False)  # P


def generate(model_config: ModelConfig, params, prompt_ids, prompt_mask, rng: jax.Array,
             sampling_config: SamplingConfig) -> Samples:
    """Samples ``sampling_config.max_new_tokens`` tokens after each prompt.

    Prompts (B, T) are padded (left or right; ``prompt_mask`` marks real tokens)
    and are left-padded further to the prompt bucket that holds T; a row without
    a single real prompt token (batch padding) generates nothing. Deterministic
    given ``rng``; greedy decoding does not depend on the mesh.
    """
    bucket = sampling_config.bucket(prompt_ids.shape[1])
    pad = bucket - prompt_ids.shape[1]
    prompt_ids = jnp.pad(jnp.asarray(prompt_ids), ((0, 0), (pad, 0)),
                         constant_values=sampling_config.pad_token)
    prompt_mask = jnp.pad(jnp.asarray(prompt_mask).astype(jnp.int32), ((0, 0), (pad, 0)))
    return _generate(params, prompt_ids, prompt_mask, rng, model_config=model_config,
                     config=sampling_config)


def _pick(t, logits, done, rng, *, config: SamplingConfig):
    """``(token, live, logp, raw, done)``: token t drawn from the model's logits (B, V) (stop
    tokens banned before ``min_new_tokens``); finished rows get padding and log-prob 0."""
    stops = jnp.asarray(config.stop_tokens, jnp.int32)
    if config.stop_tokens and config.min_new_tokens:
        banned = (t < config.min_new_tokens) & jnp.isin(jnp.arange(logits.shape[-1]), stops)
        sample_from = jnp.where(banned, -jnp.inf, logits)
    else:
        sample_from = logits
    token, logp = draw(sample_from, jax.random.fold_in(rng, t), config)
    raw = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), token[:, None], -1)[:, 0]
    live = ~done
    stop = jnp.any(token[:, None] == stops[None, :], axis=1) if config.stop_tokens else \
        jnp.zeros(token.shape, bool)
    return (jnp.where(live, token, config.pad_token).astype(jnp.int32), live,
            jnp.where(live, logp, 0.0), jnp.where(live, raw, 0.0), done | (live & stop))


@functools.partial(jax.jit, static_argnames=("model_config", "config"))
def _generate(params, prompt_ids, prompt_mask, rng, *, model_config: ModelConfig,
              config: SamplingConfig) -> Samples:
    batch, prompt_len = prompt_ids.shape
    n = config.max_new_tokens
    if model_config.scan_layers:
        # Per-layer weights as separate buffers, sliced once here: a scan over stacked layers
        # would slice (copy) every layer's weights again at every decode step.
        params, model_config = unstack_layers(params), model_config.replace(scan_layers=False)
    # Decoding reads every weight once per token: read them in the compute dtype. Its steps
    # multiply a few rows by each weight, faster on CPU with the weight as left operand.
    params = jax.tree.map(lambda x: x.astype(model_config.compute_dtype), params)
    model_config = model_config.replace(weights_left=jax.default_backend() == "cpu")
    model = CausalLM(model_config)
    pick = functools.partial(_pick, config=config)
    cache = constrain_cache(KVCache.init(model_config, batch, prompt_len + n))
    logits, cache = model.apply({"params": params}, prompt_ids, attention_mask=prompt_mask,
                                cache=cache, logit_index=last_token_index(prompt_mask))
    empty = ~jnp.any(prompt_mask > 0, axis=1)  # a padding row (no prompt) generates nothing
    token, live, logp, raw, done = pick(0, logits[:, 0], empty, rng)
    buffers = dict(response=jnp.full((batch, n), config.pad_token, jnp.int32),
                   response_mask=jnp.zeros((batch, n), jnp.int32),
                   logprobs=jnp.zeros((batch, n), jnp.float32),
                   raw_logprobs=jnp.zeros((batch, n), jnp.float32))

    def write(buffers, t, token, live, logp, raw):
        values = dict(response=token, response_mask=live.astype(jnp.int32), logprobs=logp,
                      raw_logprobs=raw)
        return {k: jax.lax.dynamic_update_slice(b, values[k][:, None], (0, t))
                for k, b in buffers.items()}

    buffers = write(buffers, 0, token, live, logp, raw)

    def cond(state):
        t, _, _, _, done = state
        return (t < n) & ~jnp.all(done)

    def body(state):
        t, cache, buffers, last_token, done = state
        fed_mask = jax.lax.dynamic_slice_in_dim(buffers["response_mask"], t - 1, 1, axis=1)
        logits, cache = model.apply({"params": params}, last_token[:, None],
                                    attention_mask=fed_mask, cache=cache)
        token, live, logp, raw, done = pick(t, logits[:, -1], done, rng)
        return t + 1, constrain_cache(cache), write(buffers, t, token, live, logp, raw), token, done

    _, _, buffers, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, buffers, token, done))
    return Samples(
        sequences=jnp.concatenate([prompt_ids, buffers["response"]], axis=1),
        sequence_mask=jnp.concatenate([prompt_mask, buffers["response_mask"]], axis=1),
        prompt_length=prompt_len, **buffers)
