"""Side-by-side timings in alternating rounds.

On a shared VM the neighbours' load comes and goes within minutes: our `small` RM step, timed
by three runs of ``benchmarks.train_steps`` within a quarter of an hour, took 9.36, 5.40 and
6.43 s. A comparison that times one side and then the other can then measure the neighbours,
not the sides. With ``rounds`` > 1 every side runs once per round, in turn, so a slow spell
falls on both sides of at least one pair, and the ratio reported is the median over rounds of
the ratio within each round::

    ratio = median_r ( peer_time_r / our_time_r )

Each side's own figures are those of its median round (the lower middle one when the count is
even), with every round's time beside them.
"""

from __future__ import annotations

import statistics
from typing import Callable


def alternate(sides: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """``{side: [its result in each round]}``: every side run once per round, in the order of
    ``sides``, ``rounds`` times; a side whose result holds ``error`` is not run again."""
    runs = {side: [] for side in sides}
    for _ in range(rounds):
        for side, run in sides.items():
            if not (runs[side] and "error" in runs[side][-1]):
                runs[side].append(run())
    return runs


def median_round(runs: list[dict], key: str) -> dict:
    """The round whose ``key`` is the median (the lower middle one of an even count), with every
    round's ``key`` under ``{key}_rounds``; an ``error`` result as it is."""
    if "error" in runs[-1]:
        return runs[-1]
    times = [r[key] for r in runs]
    middle = sorted(range(len(runs)), key=times.__getitem__)[(len(runs) - 1) // 2]
    return dict(runs[middle], **{f"{key}_rounds": times})


def paired_ratio(ours: list[dict], theirs: list[dict], our_key: str, their_key: str) -> float:
    """The median over rounds of the peer's time over ours in the same round (above 1: we are
    faster)."""
    return statistics.median(t[their_key] / o[our_key] for o, t in zip(ours, theirs))
