"""Helpers shared by the presets."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
    """Parses ``'name,key=value,...'`` into typed fields (big_vision style).

    ``spec`` gives each known key with its default; the value's type is the
    default's type. The first bare word (if any) goes to the ``name`` key.
    """
    result = ml_collections.ConfigDict(dict(spec))
    for part in (arg or "").split(","):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "name", part
        if key not in spec:
            raise ValueError(f"config argument {arg!r}: unknown key {key!r}; known: {sorted(spec)}")
        kind = type(spec[key])
        result[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return result


def distributed() -> ml_collections.ConfigDict:
    """How an entry point joins a multi-process run (``rlhf_jax.parallel.initialize_from_env``):
    an unset field is read from its environment variable; nothing set anywhere is one process."""
    return ml_collections.ConfigDict(dict(
        coordinator="",  # host:port of process 0's coordinator; "" = $JAX_COORDINATOR_ADDRESS
        num_processes=0,  # processes in the run; 0 = $JAX_NUM_PROCESSES
        process_id=-1,  # this process, 0 … num_processes - 1; -1 = $JAX_PROCESS_ID
    ))


def lora(rank: int = 0) -> ml_collections.ConfigDict:
    """Low-rank adapters on a frozen base (``rlhf_jax.models.lora``); rank 0 = full fine-tuning."""
    return ml_collections.ConfigDict(dict(
        rank=rank,  # adapter rank r; 0: every weight trains
        alpha=16.0,  # adapters are scaled by alpha / rank
        dropout=0.0,  # on each adapter's input
        # projections with adapters: q, k, v, o, gate, up, down; also "lm_head" (untied) and
        # "embed" (the token embedding, and the LM head when tied)
        targets=("q", "k", "v", "o", "gate", "up", "down"),
    ))
