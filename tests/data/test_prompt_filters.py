"""Prompt hygiene filters against direct definitions."""

import itertools

import numpy as np
import pytest

from rlhf_jax.data.prompt_filters import cap_per_user, drop_containing, drop_long, split_by_user
from rlhf_jax.data.records import Prompt


def prompts(texts, users=None):
    return [Prompt(t, None if users is None else users[i]) for i, t in enumerate(texts)]


def test_drop_long_counts_tokens_with_the_given_tokenizer():
    records = prompts(["a b c", "a b c d e", "x"])
    kept, removed = drop_long(records, lambda s: len(s.split()), max_tokens=3)
    assert [r.prompt for r in kept] == ["a b c", "x"] and removed == 1


def test_drop_containing_matches_the_definition():
    texts = ["write a poem", "write a poem about cats", "cats", "a dog", "write a poem",
             "tell me about a dog please", "unrelated"]
    kept, removed = drop_containing(prompts(texts))
    kept_texts = [r.prompt for r in kept]
    assert kept_texts == ["write a poem", "cats", "a dog", "unrelated"] and removed == 3
    for a, b in itertools.permutations(kept_texts, 2):
        assert a not in b


def test_cap_per_user_keeps_the_first_records():
    records = prompts([f"p{i}" for i in range(7)], ["u1", "u2", "u1", "u1", "u2", "u1", None])
    kept, removed = cap_per_user(records, max_per_user=2)
    assert [r.prompt for r in kept] == ["p0", "p1", "p2", "p4", "p6"] and removed == 2


def test_split_by_user_never_shares_a_user_and_follows_the_fractions():
    rng = np.random.RandomState(0)
    users = [f"user{rng.randint(400)}" for _ in range(4000)]
    records = prompts([f"prompt {i}" for i in range(4000)], users)
    train, val, test = split_by_user(records, (0.8, 0.1, 0.1), seed=3)
    assert len(train) + len(val) + len(test) == 4000
    user_sets = [{r.user_id for r in split} for split in (train, val, test)]
    assert not (user_sets[0] & user_sets[1] or user_sets[0] & user_sets[2]
                or user_sets[1] & user_sets[2])
    n_users = sum(len(s) for s in user_sets)
    assert abs(len(user_sets[0]) / n_users - 0.8) < 0.06
    again = split_by_user(records, (0.8, 0.1, 0.1), seed=3)
    assert [r.prompt for r in again[1]] == [r.prompt for r in val]
    other = split_by_user(records, (0.8, 0.1, 0.1), seed=4)
    assert [r.prompt for r in other[1]] != [r.prompt for r in val]
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_user(records, (0.5, 0.1))
