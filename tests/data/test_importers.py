"""HH-RLHF and summarize-from-feedback files, written in exactly their published formats."""

import json

import pytest

from rlhf_jax.data.importers import read_hh_rlhf, read_summarize_from_feedback
from rlhf_jax.data.records import RecordError


def write(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


HH = [
    {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
     "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5, I think."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: Apple.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: No."},
]


def test_hh_rlhf_prompt_is_the_shared_conversation(tmp_path):
    comps, report = read_hh_rlhf(write(tmp_path, HH))
    assert report.kept == 2
    assert comps[0].prompt == "Human: What is 2+2?\n\nAssistant:"
    assert comps[0].responses == ("4.", "5, I think.") and comps[0].ranking == (0, 1)
    assert comps[1].prompt == ("Human: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit."
                               "\n\nAssistant:")
    assert comps[1].responses == ("Apple.", "No.")


def test_hh_rlhf_errors_name_line_and_field(tmp_path):
    bad = {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}
    path = write(tmp_path, HH + [bad])
    with pytest.raises(RecordError, match=r"data\.jsonl:3: field 'rejected': does not continue"):
        read_hh_rlhf(path)
    comps, report = read_hh_rlhf(path, on_error="skip")
    assert len(comps) == 2 and len(report.skipped) == 1


SUMMARIES = [{
    "info": {"id": "t3_1", "post": "I adopted a cat. It ignores me.", "title": "Cat question",
             "subreddit": "cats"},
    "summaries": [{"text": " Cat ignores me.", "policy": "sup2"},
                  {"text": " I like turtles.", "policy": "ref"}],
    "choice": 0, "worker": "w17", "batch": "batch3", "split": "train"},
    {"info": {"id": "t3_2", "post": "Long post.", "title": None, "subreddit": "AskReddit"},
     "summaries": [{"text": "Bad."}, {"text": "Good."}], "choice": 1, "worker": "w2"}]


def test_summarize_from_feedback_layout_and_choice(tmp_path):
    comps, _ = read_summarize_from_feedback(write(tmp_path, SUMMARIES))
    assert comps[0].prompt == ("SUBREDDIT: r/cats\nTITLE: Cat question\n"
                               "POST: I adopted a cat. It ignores me.\nTL;DR:")
    assert comps[0].responses == ("Cat ignores me.", "I like turtles.")
    assert comps[0].ranking == (0, 1) and comps[0].labeler_id == "w17"
    assert comps[1].prompt == "SUBREDDIT: r/AskReddit\nPOST: Long post.\nTL;DR:"
    assert comps[1].ranking == (1, 0)


def test_summarize_from_feedback_errors(tmp_path):
    bad = dict(SUMMARIES[0], choice=2)
    with pytest.raises(RecordError, match=r":2: field 'choice': expected 0 or 1, got 2"):
        read_summarize_from_feedback(write(tmp_path, [SUMMARIES[0], bad]))
    bad = dict(SUMMARIES[0], summaries=[{"text": "only one"}])
    with pytest.raises(RecordError, match=r":1: field 'summaries'"):
        read_summarize_from_feedback(write(tmp_path, [bad]))
    bad = dict(SUMMARIES[0], summaries=[{"text": "a"}, {"txt": "b"}])
    with pytest.raises(RecordError, match=r":1: summaries\[1\]: field 'text': missing"):
        read_summarize_from_feedback(write(tmp_path, [bad]))
