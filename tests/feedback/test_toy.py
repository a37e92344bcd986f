"""The toy world writes valid records, deterministically, with labelers of graded noise."""

import numpy as np

from rlhf_jax.data.records import read_jsonl
from rlhf_jax.feedback import toy
from rlhf_jax.files import write_jsonl


def test_records_are_valid_and_deterministic(tmp_path):
    for kind, make in (("demonstration", toy.demonstrations), ("comparison", toy.comparisons)):
        path = write_jsonl(make(200, seed=3), str(tmp_path / f"{kind}.jsonl"))
        records, report = read_jsonl(path, kind)
        assert report.kept == 200 and not report.skipped
        assert make(200, seed=3) == make(200, seed=3) != make(200, seed=4)


def test_rankings_follow_kind_words_up_to_each_labelers_noise():
    agreement = {}
    for c in toy.comparisons(3000, seed=0):
        quality = [sum(w.strip(",.") in toy.KIND for w in r.split()) for r in c["responses"]]
        ranked = [quality[i] for i in c["ranking"]]
        pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]]
        agreement.setdefault(c["labeler_id"], []).extend(a > b for a, b in pairs)
    rates = {k: np.mean(v) for k, v in agreement.items()}
    assert rates["l0"] > rates["l1"] > rates["l2"] > rates["l3"] > 0.6, rates
    for d in toy.demonstrations(50):
        words = d["response"].rstrip(".").split(" is ")[1].split(", ")
        assert len(words) == toy.WORDS and set(words) <= set(toy.KIND), d
