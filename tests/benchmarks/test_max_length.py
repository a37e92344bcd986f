"""benchmarks/max_length.py at tiny shapes: the search's answer brackets the budget, memory grows
with length, full remat needs less than none, and the RSS check runs real steps."""

import math

import pytest

from benchmarks import max_length

# tiny, 8 rows: a step needs ~27 MB at T=128, ~62 MB at 256 and ~178 MB at 512 without remat,
# 1-3% less with full remat (attention keeps no (T, T) tensors for the backward pass, and tiny's
# other activations are small), so 0.1 GB stops both at 256.
BUDGET_GB, GRANULARITY, MAX_SEQ = 0.1, 128, 1024


@pytest.fixture(scope="module")
def rows():
    return {policy: max_length.search("tiny", policy, "float32", 8, BUDGET_GB, GRANULARITY,
                                      MAX_SEQ)
            for policy in ("none", "full")}


def test_the_longest_length_fits_and_the_next_does_not(rows):
    for row in rows.values():
        assert 0 < row["max_seq"] < MAX_SEQ and row["max_seq"] % GRANULARITY == 0
        assert row["next_seq"] == row["max_seq"] + GRANULARITY
        assert row["peak_gb_at_max"] <= BUDGET_GB < row["peak_gb_at_next"]
        assert row["compile_s"] > 0


def test_memory_grows_with_length_and_is_the_formula(rows):
    for row in rows.values():
        probes = row["probes"]
        assert [p["seq"] for p in probes] == sorted(p["seq"] for p in probes)
        peaks = [p["peak_gb"] for p in probes]
        assert all(a < b for a, b in zip(peaks, peaks[1:])), peaks
        for p in probes:
            assert math.isclose(p["peak_gb"], p["argument_gb"] + p["output_gb"] + p["temp_gb"]
                                - p["alias_gb"], rel_tol=1e-9)
            assert p["alias_gb"] > 0  # the donated state is written in place


def test_full_remat_needs_less_at_every_length(rows):
    assert rows["full"]["max_seq"] >= rows["none"]["max_seq"]
    none = {p["seq"]: p["peak_gb"] for p in rows["none"]["probes"]}
    full = {p["seq"]: p["peak_gb"] for p in rows["full"]["probes"]}
    assert len(set(none) & set(full)) >= 2
    assert all(full[s] < none[s] for s in set(none) & set(full))


def test_the_check_runs_the_step_and_reports_the_same_analysis():
    c = max_length.check("tiny", "none", "float32", 8, 128, steps=2)
    analysed = max_length.analyse("tiny", "none", "float32", 8, 128)
    assert math.isclose(c["analysis_peak_gb"], analysed["peak"] / max_length.GB, rel_tol=1e-6)
    assert len(c["losses"]) == 2 and all(math.isfinite(x) for x in c["losses"])
    assert c["losses"][1] < c["losses"][0]  # the second step runs on the updated state
    assert c["measured_growth_gb"] >= 0 and c["analysis_transient_gb"] > 0
