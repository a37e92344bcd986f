"""TFDS array_record storage and grain streams: round trips, packing, determinism, resumption."""

import numpy as np
import pytest

from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.data import datasets, loaders
from rlhf_jax.data.records import Comparison, Demonstration, PretrainText, Prompt
from rlhf_jax.data.tokenize import Example

RECORDS = {
    "demonstration": [Demonstration("p0", "r0", "u0", "qa"), Demonstration("p1", "r1")],
    "comparison": [Comparison("p", ("a", "b", "c"), (2, 0, 1), "l0", "u1"),
                   Comparison("q", ("x", "y"), (0, 1))],
    "prompt": [Prompt("p", "u0", "chat"), Prompt("q")],
    "pretrain": [PretrainText("some text"), PretrainText("more")],
}


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_records_round_trip_through_array_record(kind, tmp_path):
    records = RECORDS[kind]
    datasets.write_records(kind, {"train": records, "validation": records[:1]}, str(tmp_path))
    assert datasets.is_prepared(kind, str(tmp_path))
    sources = datasets.read_records(kind, str(tmp_path))
    back = [datasets.to_record(kind, sources["train"][i]) for i in range(len(sources["train"]))]
    assert sorted(back, key=repr) == sorted(records, key=repr)
    assert len(sources["validation"]) == 1
    assert list((tmp_path).rglob("*.array_record*")), "stored as array_record"


def test_writing_records_prints_nothing_and_leaves_tfds_progress_bars_as_they_were(tmp_path,
                                                                                  capfd):
    from tensorflow_datasets.core.utils import tqdm_utils

    shown = tqdm_utils._active
    datasets.write_records("prompt", {"train": RECORDS["prompt"]}, str(tmp_path))
    assert capfd.readouterr() == ("", "")
    assert tqdm_utils._active == shown


def demonstration_source(n=40):
    return [dict(prompt=f"prompt {i}".encode(), response=("r" * (1 + i % 7)).encode(),
                 user_id=b"", category=b"") for i in range(n)]


def encode(d: Demonstration) -> Example:
    prompt, response = [ord(c) for c in d.prompt], [ord(c) for c in d.response]
    return Example(tuple(prompt + response), (0,) * len(prompt) + (1,) * len(response))


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_sft_stream_packs_examples_with_segments_and_masks():
    stream = loaders.sft_stream(demonstration_source(), encode, batch_size=4, row_len=32, seed=0)
    batch = next(iter(stream))
    assert set(batch) == {"tokens", "segment_ids", "loss_mask"}
    assert all(v.shape == (4, 32) for v in batch.values())
    for row in range(4):
        seg = batch["segment_ids"][row]
        assert seg.max() >= 2, "short examples share a row"
        starts = np.flatnonzero(np.diff(np.concatenate([[0], seg])) != 0)
        assert np.all(batch["loss_mask"][row][starts] == 0), "no loss on an example's first token"
        assert np.all(batch["loss_mask"][row][seg == 0] == 0)
        # Every packed example is a whole demonstration: its response tokens are all 'r'.
        for s in range(1, seg.max() + 1):
            tokens, mask = batch["tokens"][row][seg == s], batch["loss_mask"][row][seg == s]
            assert bytes(tokens.tolist()).decode().startswith("prompt ")
            assert set(tokens[mask == 1].tolist()) == {ord("r")}


def comparison_source(n=40):
    return [dict(prompt=f"p{i}".encode(), responses=[b"a", b"b"], ranking=[1, 0], labeler_id=b"",
                 user_id=b"") for i in range(n)]


STREAMS = {  # kind -> make(seed): a stream of each kind the stages train on
    "sft": lambda seed: loaders.sft_stream(demonstration_source(), encode, batch_size=2,
                                           row_len=32, seed=seed),
    "record": lambda seed: loaders.record_stream(
        comparison_source(), "comparison", lambda c: dict(index=np.int32(int(c.prompt[1:]))),
        batch_size=4, seed=seed),  # 10 batches an epoch: 12 cross into the second
}


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_streams_are_deterministic_and_resume_from_a_saved_state(kind):
    make = STREAMS[kind]
    key = "tokens" if kind == "sft" else "index"
    straight = take(iter(make(0)), 12)
    first = iter(make(0))
    take(first, 5)
    state = first.get_state()
    resumed = iter(make(0))
    resumed.set_state(state)
    for a, b in zip(straight[5:], take(resumed, 7)):
        np.testing.assert_array_equal(a[key], b[key])
    other = take(iter(make(1)), 12)
    assert any(not np.array_equal(a[key], b[key]) for a, b in zip(straight, other))


def test_record_stream_batches_every_record_once_an_epoch():
    """The global stream: every process reads all of it (the devices take their rows later)."""
    source = comparison_source(10)
    encode_one = lambda c: dict(index=np.int32(int(c.prompt[1:])), rank=np.array(c.ranking))
    it = iter(loaders.record_stream(source, "comparison", encode_one, batch_size=5, seed=0))
    epoch = [next(it) for _ in range(2)]
    assert epoch[0]["rank"].shape == (5, 2)
    assert sorted(np.concatenate([b["index"] for b in epoch]).tolist()) == list(range(10))


def test_padded_batches_pad_the_last_batch_with_zero_rows():
    rows = dict(a=np.arange(10).reshape(5, 2) + 1, m=np.ones((5, 2), np.int32))
    batches = loaders.padded_batches(rows, 2)
    assert len(batches) == 3 and all(b["a"].shape == (2, 2) for b in batches)
    np.testing.assert_array_equal(batches[2]["m"], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(np.concatenate([b["a"] for b in batches])[:5], rows["a"])


def test_byte_tokenizer_round_trips_and_renders_chat():
    tok = byte_tokenizer()
    text = "Héllo, wörld! 123"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode()) and tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert len(tok) == 259 and tok.eos_token_id == tok.pad_token_id == 256
