"""The paper's prompt hygiene: length limit, containment deduplication, per-user cap, user splits.

Every filter returns the kept records and the number it removed, so a stage can
log what each step did. Records are any objects with ``prompt`` and ``user_id``
attributes (demonstrations, comparisons, prompts); order is preserved.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Callable, Sequence, TypeVar

R = TypeVar("R")


def drop_long(records: Sequence[R], count_tokens: Callable[[str], int],
              max_tokens: int = 1024) -> tuple[list[R], int]:
    """Drops records whose prompt has more than ``max_tokens`` tokens."""
    kept = [r for r in records if count_tokens(r.prompt) <= max_tokens]
    return kept, len(records) - len(kept)


def drop_containing(records: Sequence[R]) -> tuple[list[R], int]:
    """Drops every record whose prompt contains another record's prompt (duplicates: all but one).

    A prompt is kept iff no shorter kept prompt, and no earlier identical one, is
    a substring of it. Quadratic in the number of distinct prompts.
    """
    by_length = sorted(range(len(records)), key=lambda i: (len(records[i].prompt), i))
    kept_prompts: list[str] = []
    keep = set()
    for i in by_length:
        prompt = records[i].prompt
        if not any(k in prompt for k in kept_prompts):
            kept_prompts.append(prompt)
            keep.add(i)
    kept = [r for i, r in enumerate(records) if i in keep]
    return kept, len(records) - len(kept)


def _user(record) -> str:
    """The user id, or (for records without one) the prompt, or a pretraining text, as its own
    user."""
    user = getattr(record, "user_id", None)
    if user is not None:
        return user
    return "prompt:" + record.prompt if hasattr(record, "prompt") else "text:" + record.text


def cap_per_user(records: Sequence[R], max_per_user: int = 200) -> tuple[list[R], int]:
    """Keeps at most ``max_per_user`` records of each user (the first ones)."""
    seen: collections.Counter = collections.Counter()
    kept = []
    for r in records:
        seen[_user(r)] += 1
        if seen[_user(r)] <= max_per_user:
            kept.append(r)
    return kept, len(records) - len(kept)


def split_by_user(records: Sequence[R], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> list[list[R]]:
    """Splits records so that no user is in two splits.

    Each user goes to split j with probability ``fractions[j]``, decided by a hash
    of (seed, user id): stable across runs and machines, and a user's records all
    land together.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions {tuple(fractions)} must be non-negative and sum to 1")
    bounds = [sum(fractions[:j + 1]) for j in range(len(fractions))]
    splits: list[list[R]] = [[] for _ in fractions]
    for r in records:
        digest = hashlib.sha256(f"{seed}\0{_user(r)}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2 ** 64
        splits[next(j for j, b in enumerate(bounds) if u < b or j == len(bounds) - 1)].append(r)
    return splits
