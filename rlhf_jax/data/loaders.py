"""grain pipelines from prepared record sources to the batches the train steps take.

Training streams are endless: records are shuffled anew every epoch
(``shuffle(seed)`` then ``repeat()``: grain mixes the epoch into the seed), so
the stage decides how many steps make its epochs. A stream's iterator is
checkpointable: ``iterator.get_state()`` is a small JSON dict saved with the
train state, and ``iterator.set_state(state)`` makes a resumed run see the same
batches as an uninterrupted one. Each process reads its own slice of the
records (process i of P takes records i, i+P, …): rows are process-local, as
``parallel.shard_batch`` expects.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import grain
import grain.experimental
import numpy as np

from rlhf_jax.data.datasets import to_record
from rlhf_jax.data.records import Comparison, Demonstration, Prompt
from rlhf_jax.data.tokenize import Example

Shard = tuple[int, int]  # (this process, process count)
# A batch takes milliseconds to make and a step far longer, so one thread a few elements ahead
# keeps up. grain's default (16 threads, 500 elements ahead) would tokenize thousands of
# records at the start of a stage, competing for the interpreter and the cores with the
# tracing and compiling of its steps (a tiny RM stage took 1.5x as long).
READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _records(source, kind: str, seed: int, shard: Shard, epochs) -> grain.MapDataset:
    index, count = shard
    return (grain.MapDataset.source(source)[index::count].shuffle(seed=seed).repeat(epochs)
            .map(lambda example: to_record(kind, example)))


def sft_stream(source, encode: Callable[[Demonstration], Example], *, batch_size: int,
               row_len: int, seed: int, shard: Shard = (0, 1), epochs: Optional[int] = None,
               kind: str = "demonstration") -> grain.IterDataset:
    """Batches of ``batch_size`` rows of ``row_len`` tokens, examples packed first-fit.

    Each batch: ``tokens``, ``segment_ids`` (1, 2, … per example, 0 on padding)
    and ``loss_mask`` (response tokens, never an example's first token), (B, T)
    int32, as ``sft_step`` takes them. Endless unless ``epochs`` is given (to count
    the batches of an epoch). With ``kind='pretrain'`` the records are pretraining
    texts (``encode`` then marks every token for the loss): PPO-ptx's rows.
    """

    def arrays(record) -> dict:
        example = encode(record)
        loss_mask = np.asarray(example.loss_mask, np.int32)
        loss_mask[0] = 0  # the first token of an example is not predicted from the one before
        return dict(tokens=np.asarray(example.tokens, np.int32), loss_mask=loss_mask)

    examples = _records(source, kind, seed, shard, epochs).map(arrays).to_iter_dataset(READ_OPTIONS)
    packed = grain.experimental.FirstFitPackIterDataset(
        examples, length_struct=dict(tokens=row_len, loss_mask=row_len),
        num_packing_bins=batch_size, shuffle_bins=False)
    return packed.batch(batch_size, drop_remainder=True).map(
        lambda b: dict(tokens=b["tokens"], segment_ids=b["tokens_segment_ids"],
                       loss_mask=b["loss_mask"]))


def record_stream(source, kind: str, encode: Callable[[Comparison | Prompt], dict], *,
                  batch_size: int, seed: int, shard: Shard = (0, 1)) -> grain.IterDataset:
    """Endless batches of ``batch_size`` records, each made into fixed-shape arrays by ``encode``:
    for comparisons one prompt's ``tokens``, ``mask`` (k_max, T), ``rank`` and ``valid``
    (k_max,); for prompts ``prompt_ids`` and ``prompt_mask`` (T,), left-padded."""
    return (_records(source, kind, seed, shard, None).map(encode)
            .batch(batch_size, drop_remainder=True).to_iter_dataset(READ_OPTIONS))


def split_records(source, kind: str, shard: Shard = (0, 1)) -> list:
    """This process's records of a (validation or test) split, in stored order."""
    index, count = shard
    return [to_record(kind, source[i]) for i in range(index, len(source), count)]


def padded_batches(rows: dict[str, np.ndarray], batch_size: int) -> Sequence[dict]:
    """Cuts arrays with a common leading dimension into batches of ``batch_size`` rows, the last
    one padded with zero rows (zero masks: padding adds nothing to any loss or count)."""
    n = len(next(iter(rows.values())))
    batches = []
    for start in range(0, n, batch_size):
        batch = {}
        for key, value in rows.items():
            chunk = value[start:start + batch_size]
            pad = np.zeros((batch_size - len(chunk),) + chunk.shape[1:], chunk.dtype)
            batch[key] = np.concatenate([chunk, pad])
        batches.append(batch)
    return batches
