"""The decoder trunk and its two heads: an LM head (policy) and a scalar head (reward, value).

Parameter trees share the trunk, so a reward model or value function can be
initialised from a policy by copying ``params['trunk']``::

    CausalLM:        {'trunk': {...}, 'lm_head': {'kernel'}}   # lm_head absent if tied
    ScalarHeadModel: {'trunk': {...}, 'head': {'kernel', 'bias'}}
    trunk:           {'embed': {'embedding'}, 'positions'?: {'embedding'},
                      'layers': {stacked over n_layers}, 'final_norm': {...}}

With ``scan_layers=False`` the trunk holds ``layers_0`` … ``layers_{n-1}`` instead
(``unstack_layers`` converts), run by a Python loop: the decode path's layout.

Inputs: ``attention_mask`` (B, T) is 1 on real tokens (left or right padding);
``segment_ids`` (B, T) numbers packed examples from 1 (0 is padding), and no
token attends across examples; ``positions`` default to the index within the
example. Residual dropout (``config.dropout_rate``) is active only when the
caller passes a ``'dropout'`` rng to ``apply``. With a ``KVCache`` the call is
a prefill or decode step: new tokens go to the cache slots from
``cache.index`` and attend to every earlier real slot.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.kv_cache import KVCache
from rlhf_jax.models.layers import (Attention, Dense, Embed, Mlp, Norm, Outputs, constrain,
                                    rope_tables, take_positions)
from rlhf_jax.parallel import axes as ax

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
RESIDUAL_NAMES = (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_EMBED)


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Index of each token within its run of equal segment ids: ``t − start(t)``, (B, T)."""
    t = jnp.arange(segment_ids.shape[1])
    is_start = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    start = jax.lax.cummax(jnp.where(is_start, t, 0), axis=1)
    return t - start


def unstack_layers(params: dict) -> dict:
    """Trunk params of ``scan_layers=True`` (stacked ``layers``) → ``layers_0``, ``layers_1``, …"""
    trunk = dict(params["trunk"])
    stacked = trunk.pop("layers")
    n = jax.tree.leaves(stacked)[0].shape[0]
    trunk.update({f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)})
    return dict(params, trunk=trunk)


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """Index of the last real token of each row, (B,); works for left and right padding."""
    t = attention_mask.shape[1]
    return t - 1 - jnp.argmax(attention_mask[:, ::-1].astype(bool), axis=1)


def sequence_attention(attention_mask, segment_ids, positions):
    """Mask (B, T, T) and positions without a cache: causal, within one segment, real keys only."""
    if segment_ids is None:
        segment_ids = attention_mask.astype(jnp.int32)
    valid = attention_mask & (segment_ids != 0)
    if positions is None:
        positions = positions_from_segments(segment_ids)
    t = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    mask = (segment_ids[:, :, None] == segment_ids[:, None, :]) & valid[:, None, :] & causal
    return mask, positions


def cached_attention(attention_mask, positions, cache: KVCache):
    """Mask (B, T, S) over the cache slots, positions, and the updated slot mask (B, S).

    New token t sits in slot ``index + t``; it attends to real slots up to its own.
    Positions continue each row's count of real tokens.
    """
    if positions is None:
        positions = (jnp.sum(cache.mask, axis=1, keepdims=True)
                     + jnp.cumsum(attention_mask, axis=1) - 1)
    slots = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, cache.index))
    q_slot = cache.index + jnp.arange(attention_mask.shape[1])
    k_slot = jnp.arange(cache.length)
    mask = slots[:, None, :] & (k_slot[None, None, :] <= q_slot[None, :, None])
    return mask, positions, slots


class DecoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(n1(x))`` then ``+ mlp(n2(·))``, or both on x when parallel.

    ``outputs`` (``take_positions``): the block's output at those positions only; keys and
    values still come from every position, so the result there is the full block's."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, shared, layer_cache, outputs: Optional[Outputs] = None):
        cfg = self.config
        rope, mask, cache_index = shared
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=not self.has_rng("dropout"))
        attn, new_cache = Attention(cfg, name="attn")(Norm(cfg, name="attn_norm")(x), rope, mask,
                                                      layer_cache, cache_index, outputs)
        x = take_positions(x, outputs)
        if cfg.parallel_residual:
            mlp = Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x))
            x = x + dropout(attn) + dropout(mlp)
        else:
            x = x + dropout(attn)
            x = x + dropout(Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x)))
        return constrain(x, RESIDUAL_NAMES), new_cache


def remat_block(config: ModelConfig):
    """``DecoderBlock``, wrapped in ``nn.remat`` with the config's policy unless it is "none"."""
    if config.remat_policy == "none":
        return DecoderBlock
    return nn.remat(DecoderBlock, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=False)


def scanned_blocks(config: ModelConfig, length: int):
    """``length`` blocks as one ``nn.scan``, their params stacked on a leading layer axis."""
    return nn.scan(
        remat_block(config),
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, 0),
        length=length,
        unroll=config.scan_unroll or length,
        metadata_params={nn.PARTITION_NAME: ax.LAYERS},
    )


class Decoder(nn.Module):
    """Embeddings, ``n_layers`` blocks stacked with ``nn.scan``, and the final norm.

    ``outputs`` (a static ``(start, stop)`` range or a (B, P) array of positions) asks
    for the final hidden states at those positions only: the last block then computes
    its queries, attention and MLP there alone (its keys and values over every
    position), which is exact and removes most of a layer when a head reads one token
    per row (a reward) or the response half of a sequence (PPO's logits and values).
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embed = Embed(cfg)
        if cfg.position == "learned":
            self.positions = nn.Embed(
                cfg.max_seq_len, cfg.d_model, param_dtype=cfg.weights_dtype,
                embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.01),
                                                            (ax.POSITIONS, ax.EMBED)))
        if cfg.scan_layers:
            self.layers = scanned_blocks(cfg, cfg.n_layers)(cfg)
        else:
            block = remat_block(cfg)
            self.layers = [block(cfg, name=f"layers_{i}") for i in range(cfg.n_layers)]
        self.final_norm = Norm(cfg)

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None,
                 cache: Optional[KVCache] = None, outputs: Optional[Outputs] = None):
        """Returns the final hidden states (B, T, D) in float32, or (B, P, D) at ``outputs``,
        and the updated cache (or None)."""
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, bool)
        attention_mask = attention_mask.astype(bool)
        if cache is None:
            mask, positions = sequence_attention(attention_mask, segment_ids, positions)
            cache_index, kv = None, None
        else:
            if segment_ids is not None:
                raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
            mask, positions, slots = cached_attention(attention_mask, positions, cache)
            cache_index, kv = cache.index, (cache.k, cache.v)
        positions = jnp.maximum(positions, 0)

        x = self.embed(input_ids)
        rope = None
        if cfg.position == "learned":
            x = x + self.positions(positions).astype(jnp.float32)
        else:
            rope = rope_tables(cfg, positions)
        x = constrain(x, RESIDUAL_NAMES)
        shared = (rope, mask, cache_index)
        last_layer_at_outputs = outputs is not None and not self.is_initializing()
        if last_layer_at_outputs:
            x, new_kv = self._layers_to(x, shared, outputs, kv)
        elif cfg.scan_layers:
            x, new_kv = self.layers(x, shared, _stack(kv))
            new_kv = _unstack(new_kv)
        else:
            x, new_kv = _in_turn(self.layers, x, shared, kv)
        if not last_layer_at_outputs:
            x = take_positions(x, outputs)
        x = self.final_norm(x)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=new_kv[0], v=new_kv[1], mask=slots,
                                index=cache.index + input_ids.shape[1])
        return x, new_cache

    def _layers_to(self, x, shared, outputs, kv):
        """Every block but the last over all positions, then the last at ``outputs`` alone
        (its keys and values still at every position, and into the cache ``kv`` if any);
        returns the last block's output at ``outputs`` and the blocks' new caches (or None).

        The blocks run as pure functions of slices of this module's parameters: the
        first n − 1 stacked layers as an ``nn.scan`` of length n − 1, the last block on
        its own (both with the config's remat policy)."""
        cfg = self.config
        params = nn.meta.unbox(self.variables["params"])
        rngs = {"dropout": self.make_rng("dropout")} if self.has_rng("dropout") else {}
        first_kv = None if kv is None else (kv[0][:-1], kv[1][:-1])
        last_kv = None if kv is None else (kv[0][-1], kv[1][-1])
        if cfg.scan_layers:
            stacked = params["layers"]
            last = jax.tree.map(lambda a: a[-1], stacked)
            new_first = None if kv is None else ((), ())
            if cfg.n_layers > 1:
                first = jax.tree.map(lambda a: a[:-1], stacked)
                x, new_first = scanned_blocks(cfg, cfg.n_layers - 1)(cfg, parent=None).apply(
                    {"params": first}, x, shared, _stack(first_kv), rngs=rngs)
                new_first = _unstack(new_first)
        else:
            last = params[f"layers_{cfg.n_layers - 1}"]
            x, new_first = _in_turn(self.layers[:-1], x, shared, first_kv)

        def last_block(p, x, layer_kv):
            return DecoderBlock(cfg, parent=None).apply({"params": p}, x, shared, layer_kv,
                                                        outputs, rngs=rngs)
        if cfg.remat_policy != "none":
            last_block = jax.checkpoint(last_block, policy=REMAT_POLICIES[cfg.remat_policy],
                                        prevent_cse=False)
        x, new_last = last_block(last, x, last_kv)
        if kv is None:
            return x, None
        return x, (tuple(new_first[0]) + (new_last[0],), tuple(new_first[1]) + (new_last[1],))

    def attend(self, h):
        return self.embed.attend(h)


def _in_turn(layers, x, shared, kv):
    """The blocks ``layers`` one after another (a Python loop), each with its cache from the
    per-layer tuples ``kv`` if any; returns x and their new caches (or None)."""
    new = [None] * len(layers)
    for i, layer in enumerate(layers):
        x, new[i] = layer(x, shared, None if kv is None else (kv[0][i], kv[1][i]))
    return x, None if kv is None else (tuple(c[0] for c in new), tuple(c[1] for c in new))


def _stack(kv):
    """Per-layer caches ``(k, v)`` (tuples of n arrays) → stacked (n, …) arrays, or None."""
    return None if kv is None else (jnp.stack(kv[0]), jnp.stack(kv[1]))


def _unstack(kv):
    """Stacked ``(k, v)`` of a scan → per-layer tuples, or None."""
    return None if kv is None else tuple(tuple(jnp.unstack(a)) for a in kv)


def after_prompt(trunk: Decoder, prompt_ids, prompt_mask, response_ids, response_mask,
                 outputs: Outputs):
    """The trunk over K responses (B, K, R) to each prompt (B, P), the prompt computed once:
    returns the prompt's final hidden state at its last position (B, 1, D) and the responses'
    at ``outputs`` (B·K, ·, D), the same as running each prompt + response as one row.

    With causal attention a prompt's keys and values do not depend on what follows it, so
    the trunk fills a ``KVCache`` with them (P tokens, left-padded, the last layer's queries
    at the last position alone), the cache is repeated K times, and the responses run as
    one chunk of R tokens after it: P + K·R token passes instead of K·(P + R). Gradients
    flow to the prompt's pass through the cache (summed over its K copies)."""
    b, k, r = response_ids.shape
    p = prompt_ids.shape[1]
    cache = KVCache.init(trunk.config, b, p + r)
    first, cache = trunk(prompt_ids, prompt_mask, cache=cache, outputs=(p - 1, p))
    mask = response_mask.reshape(b * k, r)
    h, _ = trunk(response_ids.reshape(b * k, r), mask, cache=cache.repeat(k), outputs=outputs)
    return first, h


class CausalLM(nn.Module):
    """The policy: float32 logits (B, T, V) of the next token; with a cache, ``(logits, cache)``.
    ``logits_after_prompt`` scores K responses to one prompt with the prompt computed once."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.trunk = Decoder(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = Dense(cfg, (cfg.d_model, cfg.vocab_size), (ax.EMBED, ax.VOCAB))

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None,
                 cache: Optional[KVCache] = None, logit_index: Optional[jax.Array] = None,
                 logit_range: Optional[tuple[int, int]] = None, return_hidden: bool = False):
        """``logit_index`` (B,): compute the logits at that position of each row only, (B, 1, V).
        ``logit_range=(start, stop)``: the logits of positions start … stop−1 only (one of
        the two; the trunk's last layer also runs there alone, its keys and values into the
        cache at every position). ``return_hidden``: return ``(logits, final hidden states)``
        at the same positions."""
        outputs = logit_range if logit_index is None else logit_index[:, None]
        h, new_cache = self.trunk(input_ids, attention_mask, positions, segment_ids, cache,
                                  outputs=outputs)
        logits = self._logits(h)
        if return_hidden:
            return logits, h
        return logits if cache is None else (logits, new_cache)

    def logits_after_prompt(self, prompt_ids, prompt_mask, response_ids, response_mask):
        """Logits (B, K, R, V) of K responses (B, K, R) to each prompt (B, P), aligned with
        the responses: ``[b, k, r]`` is the distribution of token r of response k given prompt
        b and that response's tokens before r. The same as the logits of prompt + response as
        one row at positions P − 1 … P + R − 2, with the prompt computed once (``after_prompt``):
        the prompt's last position gives every response's first distribution, the responses'
        positions 0 … R − 2 the rest (the last layer runs at those alone)."""
        b, k, r = response_ids.shape
        first, rest = after_prompt(self.trunk, prompt_ids, prompt_mask, response_ids,
                                   response_mask, outputs=(0, r - 1))
        h = jnp.concatenate([jnp.repeat(first, k, axis=0), rest], axis=1)  # (B·K, R, D)
        return self._logits(h).reshape(b, k, r, -1)

    def _logits(self, h):
        cfg = self.config
        logits = self.trunk.attend(h) if cfg.tie_embeddings else self.lm_head(h)
        return constrain(logits, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_VOCAB))


class ScalarHeadModel(nn.Module):
    """Reward model or value function: ``r = w·h + b`` on the trunk's hidden states.

    Returns one score per row, read at the last real token (reward), or with
    ``per_token=True`` the score at every position (B, T) (value), or at the positions
    ``score_range=(start, stop)`` only (B, stop − start). The trunk's last layer runs
    at the positions read alone (``Decoder``'s ``outputs``). The head's
    parameters are float32 whatever ``param_dtype`` (it always trains, and Adam's
    small steps would vanish in bfloat16 weights). ``score_after_prompt`` scores K
    responses to one prompt with the prompt computed once.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.trunk = Decoder(cfg)
        self.head = Dense(cfg.replace(param_dtype="float32"), (cfg.d_model,), (ax.EMBED,),
                          use_bias=True)

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None,
                 per_token: bool = False, score_range: Optional[tuple[int, int]] = None):
        if per_token:
            outputs = score_range
        elif attention_mask is None:
            outputs = (input_ids.shape[1] - 1, input_ids.shape[1])
        else:
            outputs = last_token_index(attention_mask)[:, None]
        h, _ = self.trunk(input_ids, attention_mask, positions, segment_ids, outputs=outputs)
        scores = self.head(h)  # (B, P)
        return scores if per_token else scores[:, 0]

    def score_after_prompt(self, prompt_ids, prompt_mask, response_ids, response_mask):
        """Scores (B, K) of K responses (B, K, R) to each prompt (B, P), read at each
        response's last real token (a response needs one): the same as scoring each
        prompt + response as one row, with the prompt computed once (``after_prompt``)."""
        b, k, r = response_ids.shape
        index = last_token_index(response_mask.reshape(b * k, r))[:, None]
        _, h = after_prompt(self.trunk, prompt_ids, prompt_mask, response_ids, response_mask,
                            outputs=index)
        return self.head(h)[:, 0].reshape(b, k)
