"""Every test is in exactly one tier (tests/tiers.py), so ``-m TIER`` runs it somewhere."""

import ast
from pathlib import Path

from tests.tiers import PLACES, TIERS, tier_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_file_is_placed_once_and_every_entry_exists():
    entries = [entry for listed in TIERS.values() for entry in listed.split()]
    assert len(entries) == len(set(entries)), "an entry is in two tiers"
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("**/test_*.py"))
    unplaced = [f for f in files if f not in PLACES]
    assert not unplaced, f"place these test files in a tier in tests/tiers.py: {unplaced}"
    for place, tier in PLACES.items():
        path, _, test = place.partition("::")
        assert (ROOT / path).is_file(), f"tests/tiers.py: {place}: no such file"
        if test:
            names = {node.name for node in ast.parse((ROOT / path).read_text()).body
                     if isinstance(node, ast.FunctionDef)}
            assert test in names, f"tests/tiers.py: {place}: no such test"
            assert tier != PLACES[path], f"tests/tiers.py: {place}: already its file's tier"


def test_tier_of_takes_a_test_s_own_entry_then_its_file_s():
    assert tier_of("tests/data/test_records.py::test_x[a::b-1]") == "unit"
    single = "tests/pipeline/test_instructgpt.py::" \
             "test_sigterm_stops_the_pipeline_entry_point_and_the_same_command_resumes"
    assert tier_of(single) == "slow" and tier_of(single + "[case]") == "slow"
    assert tier_of("tests/pipeline/test_instructgpt.py::test_other") == "pipeline"
    assert tier_of("tests/new/test_new.py::test_x") is None


def test_every_collected_test_has_exactly_one_tier(request):
    """The tests this run collected (those ``-m`` kept): one tier marker each, the one
    tests/tiers.py gives (a test's own ``pytest.mark.<tier>`` would be a second place)."""
    for item in request.session.items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        assert tiers == [tier_of(item.nodeid)], f"{item.nodeid}: tiers {tiers}"
