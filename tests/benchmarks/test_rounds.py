"""Alternating rounds of a side-by-side benchmark (benchmarks/rounds.py)."""

import numpy as np

from benchmarks import rounds


def test_every_side_runs_once_per_round_in_turn_and_an_error_stops_a_side():
    calls = []

    def side(name, error_from=None):
        def run():
            calls.append(name)
            n = calls.count(name)
            return dict(error="down") if error_from and n >= error_from else dict(step_s=float(n))
        return run

    runs = rounds.alternate({"ours": side("ours"), "peer": side("peer", error_from=2)}, 3)
    assert calls == ["ours", "peer", "ours", "peer", "ours"]
    assert [r["step_s"] for r in runs["ours"]] == [1.0, 2.0, 3.0]
    assert runs["peer"] == [dict(step_s=1.0), dict(error="down")]
    assert rounds.median_round(runs["peer"], "step_s") == dict(error="down")


def test_the_median_round_keeps_its_own_figures_and_lists_every_rounds_time():
    runs = [dict(step_s=t, loss=10 * t) for t in (4.0, 1.0, 3.0, 2.0)]
    assert rounds.median_round(runs, "step_s") == dict(step_s=2.0, loss=20.0,
                                                       step_s_rounds=[4.0, 1.0, 3.0, 2.0])
    assert rounds.median_round(runs[:3], "step_s")["loss"] == 30.0


def test_the_ratio_is_the_median_of_the_ratios_within_rounds():
    ours, theirs = [1.0, 2.0, 4.0, 8.0, 3.0], [1.2, 1.0, 4.8, 9.0, 3.0]
    ratio = rounds.paired_ratio([dict(t=t) for t in ours], [dict(s=s) for s in theirs], "t", "s")
    assert np.isclose(ratio, np.median(np.array(theirs) / np.array(ours)))  # 1.125
    assert not np.isclose(ratio, np.median(theirs) / np.median(ours))  # 1.0: not the same thing
