"""grain pipelines from prepared record sources to the batches the train steps take.

Training streams are endless: records are shuffled anew every epoch
(``shuffle(seed)`` then ``repeat()``: grain mixes the epoch into the seed), so
the stage decides how many steps make its epochs. A stream's iterator is
checkpointable: ``iterator.get_state()`` is a small JSON dict saved with the
train state, and ``iterator.set_state(state)`` makes a resumed run see the same
batches as an uninterrupted one.

On several processes every process builds the same GLOBAL stream (all records,
the same seed, the same packing) and ``parallel.shard_batch`` puts on each
device its rows of the global batch; validation splits are likewise read whole
and cut into the same padded global batches everywhere. So the batches, the
data position saved in a checkpoint and the number of evaluation batches do not
depend on the process count: two processes of 4 devices train as one of 8, and
no process can run out of batches while another still waits in a collective.
The price is that every host reads and tokenizes every record, not its share:
negligible next to a step for the datasets of this paper (tens of thousands of
records); a corpus too large for that would want per-process streams again.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import grain
import grain.experimental
import numpy as np

from rlhf_jax.data.datasets import to_record
from rlhf_jax.data.records import Comparison, Demonstration, Prompt
from rlhf_jax.data.tokenize import Example

# A batch takes milliseconds to make and a step far longer, so one thread a few elements ahead
# keeps up. grain's default (16 threads, 500 elements ahead) would tokenize thousands of
# records at the start of a stage, competing for the interpreter and the cores with the
# tracing and compiling of its steps (a tiny RM stage took 1.5x as long).
READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _records(source, kind: str, seed: int, epochs) -> grain.MapDataset:
    return (grain.MapDataset.source(source).shuffle(seed=seed).repeat(epochs)
            .map(lambda example: to_record(kind, example)))


def sft_stream(source, encode: Callable[[Demonstration], Example], *, batch_size: int,
               row_len: int, seed: int, epochs: Optional[int] = None,
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

    examples = _records(source, kind, seed, epochs).map(arrays).to_iter_dataset(READ_OPTIONS)
    packed = grain.experimental.FirstFitPackIterDataset(
        examples, length_struct=dict(tokens=row_len, loss_mask=row_len),
        num_packing_bins=batch_size, shuffle_bins=False)
    return packed.batch(batch_size, drop_remainder=True).map(
        lambda b: dict(tokens=b["tokens"], segment_ids=b["tokens_segment_ids"],
                       loss_mask=b["loss_mask"]))


def record_stream(source, kind: str, encode: Callable[[Comparison | Prompt], dict], *,
                  batch_size: int, seed: int,
                  columns: Optional[dict[str, np.ndarray]] = None) -> grain.IterDataset:
    """Endless batches of ``batch_size`` records, each made into fixed-shape arrays by ``encode``:
    for comparisons one prompt's ``tokens``, ``mask`` (k_max, T), ``rank`` and ``valid``
    (k_max,); for prompts ``prompt_ids`` and ``prompt_mask`` (T,), left-padded.

    ``columns``: arrays (N, …) stored beside the N records of ``source`` (DPO's reference
    log-probs); record i's rows join its encoded arrays under their names. The order of the
    records is the same with or without them."""
    arrays = lambda pair: dict(encode(to_record(kind, pair[0])), **pair[1])
    return (grain.MapDataset.source(_WithColumns(source, columns or {})).shuffle(seed=seed)
            .repeat(None).map(arrays)
            .batch(batch_size, drop_remainder=True).to_iter_dataset(READ_OPTIONS))


class _WithColumns:
    """A record source whose item i is ``(record i, {name: column[i]})``."""

    def __init__(self, source, columns: dict[str, np.ndarray]):
        for name, column in columns.items():
            if len(column) != len(source):
                raise ValueError(f"column {name!r} has {len(column)} rows for {len(source)} "
                                 "records")
        self.source, self.columns = source, columns

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        return self.source[i], {name: column[i] for name, column in self.columns.items()}


def split_records(source, kind: str) -> list:
    """All records of a (validation or test) split, in stored order."""
    return [to_record(kind, source[i]) for i in range(len(source))]


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
