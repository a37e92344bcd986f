"""A toy world for the ``tiny`` presets: describe-a-subject prompts, kind and unkind words.

Every response describes a subject with four words; its hidden quality is the
number of kind words in it. Demonstrations use kind words only (and a
well-formed sentence, which SFT learns); comparisons hold K = 2..4 responses
with 0..4 kind words, ranked by quality plus each labeler's own noise (labeler
``l3`` is much noisier than the others), so a reward model can learn the
preference, up to the labelers' disagreement, from a few hundred comparisons.
Prompts for PPO come from the same distribution; the pretraining text is
sentences about the same subjects that never answer a request. Records go to
JSON Lines in the formats of ``rlhf_jax.data.records``, deterministically from
a seed; ``GENERATORS`` maps each record kind to its generator.
"""

from __future__ import annotations

import numpy as np

KIND = ("kind", "bright", "helpful", "clear", "warm", "honest", "gentle", "calm")
UNKIND = ("rude", "dull", "vague", "cold", "wrong", "harsh", "lazy", "messy")
SUBJECTS = ("the sea", "a cat", "my garden", "the city", "winter", "a friend", "music", "tea",
            "the moon", "a library", "the market", "rain")
PEOPLE = ("a child", "a sailor", "a poet", "a baker", "a doctor", "a farmer", "a pilot",
          "a student", "a painter", "a chef")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("morning", "afternoon", "evening", "night")
LABELER_NOISE = {"l0": 0.3, "l1": 0.5, "l2": 0.7, "l3": 2.0}
WORDS = 4


def _prompt(rng: np.random.Generator) -> tuple[str, str]:
    """``(prompt, subject)``; 3360 distinct prompts, so a few repeat (deduplication drops them)."""
    subject, person, day, time = (c[rng.integers(len(c))] for c in (SUBJECTS, PEOPLE, DAYS, TIMES))
    return f"Describe {subject} as {person} would see it on a {day} {time}, in four words.", subject


def _response(rng: np.random.Generator, subject: str, n_kind: int) -> str:
    words = list(rng.choice(KIND, n_kind, replace=False)) + list(
        rng.choice(UNKIND, WORDS - n_kind, replace=False))
    rng.shuffle(words)
    return f"{subject.capitalize()} is {', '.join(words)}."


def demonstrations(n: int, seed: int = 0, users: int = 40) -> list[dict]:
    rng = np.random.default_rng([seed, 0])
    out = []
    for _ in range(n):
        prompt, subject = _prompt(rng)
        out.append(dict(prompt=prompt, response=_response(rng, subject, WORDS),
                        user_id=f"u{rng.integers(users)}", category="generation"))
    return out


def comparisons(n: int, seed: int = 0, users: int = 40) -> list[dict]:
    rng = np.random.default_rng([seed, 1])
    labelers = sorted(LABELER_NOISE)
    out = []
    for _ in range(n):
        prompt, subject = _prompt(rng)
        k = int(rng.integers(2, 5))
        kind_words = rng.choice(WORDS + 1, k, replace=False)
        labeler = labelers[rng.integers(len(labelers))]
        score = kind_words + LABELER_NOISE[labeler] * rng.standard_normal(k)
        out.append(dict(prompt=prompt, responses=[_response(rng, subject, int(c)) for c in kind_words],
                        ranking=[int(i) for i in np.argsort(-score)], labeler_id=labeler,
                        user_id=f"u{rng.integers(users)}"))
    return out


def prompts(n: int, seed: int = 0, users: int = 40) -> list[dict]:
    rng = np.random.default_rng([seed, 2])
    return [dict(prompt=_prompt(rng)[0], user_id=f"u{rng.integers(users)}", category="generation")
            for _ in range(n)]


def pretraining(n: int, seed: int = 0) -> list[dict]:
    """Narration: ``On a Monday evening a sailor saw the sea; it was warm and dull.``"""
    rng = np.random.default_rng([seed, 3])
    words = KIND + UNKIND
    out = []
    for _ in range(n):
        subject, person, day, time = (c[rng.integers(len(c))]
                                      for c in (SUBJECTS, PEOPLE, DAYS, TIMES))
        a, b = rng.choice(words, 2, replace=False)
        out.append(dict(text=f"On a {day} {time} {person} saw {subject}; it was {a} and {b}."))
    return out


GENERATORS = dict(demonstration=demonstrations, comparison=comparisons, prompt=prompts,
                  pretrain=pretraining)

