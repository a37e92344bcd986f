"""Atomic writes leave the old file or the new one; a torn last log line is dropped, damage raises."""

import json
import os

import pytest

from rlhf_jax.files import read_jsonl_lines, write_atomic, write_json, write_jsonl


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "results.json")
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with write_atomic(path) as f:
            f.write('{"a": 2, "b"')
            raise RuntimeError("killed")
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_records_round_trip(tmp_path):
    records = [{"step": 1, "loss": 0.5}, {"step": 2, "text": "é\n"}]
    assert read_jsonl_lines(write_jsonl(records, str(tmp_path / "m.jsonl"))) == records


def test_a_torn_last_line_is_dropped_with_a_warning_and_damage_elsewhere_raises(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with pytest.warns(UserWarning, match="torn last line"):
        assert read_jsonl_lines(str(path)) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        read_jsonl_lines(str(path))
