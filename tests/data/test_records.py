"""Record validation: every bad line names file, line and field; skipping counts, never drops silently."""

import json
import re

import pytest

from rlhf_jax.data.records import Comparison, Demonstration, RecordError, read_jsonl


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


GOOD = {"prompt": "Say hi.", "responses": ["hi", "hello", "yo"], "ranking": [1, 0, 2],
        "labeler_id": 7}


def test_reads_every_format(tmp_path):
    comps, report = read_jsonl(write(tmp_path, [GOOD, {"prompt": "p", "chosen": "a",
                                                        "rejected": "b"}]), "comparison")
    assert comps[0] == Comparison("Say hi.", ("hi", "hello", "yo"), (1, 0, 2), "7", None)
    assert comps[1].responses == ("a", "b") and comps[1].ranking == (0, 1) and comps[1].k == 2
    assert report.kept == 2 and report.skipped == []
    demos, _ = read_jsonl(write(tmp_path, [{"prompt": "p", "response": "r", "user_id": "u1",
                                            "category": "chat"}]), "demonstration")
    assert demos == [Demonstration("p", "r", "u1", "chat")]
    texts, _ = read_jsonl(write(tmp_path, [{"text": "some text"}]), "pretrain")
    assert texts[0].text == "some text"


@pytest.mark.parametrize("bad,field,why", [
    ('{"prompt": "p", "responses": ["a", "b"], ', None, "malformed JSON"),
    ({"responses": ["a", "b"], "ranking": [0, 1]}, "prompt", "missing"),
    ({"prompt": 3, "responses": ["a", "b"], "ranking": [0, 1]}, "prompt", "expected a string"),
    ({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 2, 2]}, "ranking",
     "not a permutation"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1, 2]}, "ranking", "not a permutation"),
    ({"prompt": "p", "responses": ["a"], "ranking": [0]}, "responses", "K=1"),
    ({"prompt": "p", "responses": [str(i) for i in range(10)], "ranking": list(range(10))},
     "responses", "K=10"),
    ({"prompt": "p", "responses": ["a", "  "], "ranking": [0, 1]}, r"responses\[1\]",
     "empty response"),
    ({"prompt": "p", "responses": ["a", 2], "ranking": [0, 1]}, r"responses\[1\]",
     "expected a string"),
    ({"prompt": "p", "responses": ["a", "b"]}, "ranking", "missing"),
    ({"prompt": "p", "chosen": "a"}, "rejected", "missing"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1], "labeler_id": [1]},
     "labeler_id", "expected a string or integer id"),
])
def test_bad_comparison_names_file_line_and_field(tmp_path, bad, field, why):
    path = write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(RecordError) as err:
        read_jsonl(path, "comparison")
    message = str(err.value)
    assert message.startswith(f"{path}:3: ")
    if field:
        assert re.search(f"field '{field}'", message), message
    assert why in message


def test_bad_demonstration_and_pretraining_lines(tmp_path):
    path = write(tmp_path, [{"prompt": "p", "response": ""}])
    with pytest.raises(RecordError, match=r":1: field 'response': empty"):
        read_jsonl(path, "demonstration")
    path = write(tmp_path, [{"text": "ok"}, ["not", "an", "object"]])
    with pytest.raises(RecordError, match=r":2: expected a JSON object, got list"):
        read_jsonl(path, "pretrain")


def test_skipping_counts_each_bad_line(tmp_path):
    rows = [GOOD, {"prompt": "p", "responses": ["a", "b"], "ranking": [1, 1]}, "{oops",
            GOOD, {"prompt": "p", "responses": ["a"], "ranking": [0]}]
    records, report = read_jsonl(write(tmp_path, rows), "comparison", on_error="skip")
    assert len(records) == report.kept == 2
    assert len(report.skipped) == 3
    assert [m.split(": ")[0].rsplit(":", 1)[1] for m in report.skipped] == ["2", "3", "5"]
    assert "field 'ranking'" in report.skipped[0] and "malformed JSON" in report.skipped[1]
