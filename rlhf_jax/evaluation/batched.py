"""The one evaluator: a jitted function of sums, added up over every batch of a fixed set of rows.

``batched_sums(sums, rows, batch_size, partitioner)`` cuts host arrays (``rows``,
one leading dimension) into batches of ``batch_size``, the last padded with zero
rows, and returns ``total(params)``: ``sums(params, batch)`` added over the
batches, in float64, on the host. ``sums`` must return sums (not means) in which
a zero row counts for nothing (its masks are 0): so padding never changes a
result, and a mean is taken once, from the totals. Every process builds the same
batches from the same rows (``Partitioner.shard_batch`` takes each device's part
of a global batch), so every process runs the same number of them and none waits
forever for another in a collective. ``sums`` is compiled once for every call.

``batched_rows`` is the same walk for a function with one output per row (DPO's
reference log-probs); ``validation_loss`` is the SFT/pretraining loss of a set of examples, built on it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.data.loaders import padded_batches
from rlhf_jax.data.tokenize import Example, pack
from rlhf_jax.models import CausalLM
from rlhf_jax.parallel import Partitioner
from rlhf_jax.train.sft import sft_loss_terms

Sums = Callable[[Any, dict], Any]  # (params, batch) -> a pytree of sums


def batched_sums(sums: Sums, rows: dict[str, np.ndarray], batch_size: int,
                 partitioner: Partitioner) -> Callable[[Any], Any]:
    """``total(params)``: ``sums(params, batch)`` summed over the zero-padded batches of
    ``rows``, as NumPy float64 arrays."""
    batches = [partitioner.shard_batch(b) for b in padded_batches(rows, batch_size)]
    compiled = partitioner.jit(sums)

    def total(params) -> Any:
        out = None
        for batch in batches:
            part = jax.tree.map(lambda x: np.asarray(x, np.float64),
                                parallel.to_host(compiled(params, batch)))
            out = part if out is None else jax.tree.map(np.add, out, part)
        return out

    return total


def batched_rows(per_row: Sums, rows: dict[str, np.ndarray], batch_size: int,
                 partitioner: Partitioner) -> Callable[[Any], np.ndarray]:
    """``values(params)``: ``per_row(params, batch)`` (B, …) of every batch, joined on the host
    with the padding rows dropped: one value per row of ``rows``."""
    n = len(next(iter(rows.values())))
    batches = [partitioner.shard_batch(b) for b in padded_batches(rows, batch_size)]
    compiled = partitioner.jit(per_row)
    return lambda params: np.concatenate(
        [np.asarray(parallel.to_host(compiled(params, b))) for b in batches])[:n]


def validation_loss(model: CausalLM, examples: Sequence[Example], row_len: int, batch_size: int,
                    partitioner: Partitioner) -> Callable[[Any], dict]:
    """``evaluate(params) -> {loss, perplexity, tokens}`` over all ``examples``, packed in order
    into rows of ``row_len``, no dropout; the mean is over the loss-masked tokens of them all."""
    total = batched_sums(lambda params, b: sft_loss_terms(model, params, b, None)[:2],
                         pack(examples, row_len), batch_size, partitioner)

    def evaluate(params) -> dict:
        loss_sum, tokens = total(params)
        loss = loss_sum / max(tokens, 1.0)
        return dict(loss=float(loss), perplexity=float(np.exp(loss)), tokens=float(tokens))

    return evaluate
