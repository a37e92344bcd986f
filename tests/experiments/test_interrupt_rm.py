"""The reward-model stage, killed (SIGKILL) at six moments, ends exactly as an uninterrupted run."""

import pytest

from tests.experiments import runs

STAGE = "rm"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    status, output = runs.run(STAGE, workdir)
    assert status == 0, output[-3000:]
    return runs.outcome(STAGE, workdir)


def test_sigkill_at_six_moments_and_the_reruns_end_as_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    runs.run_through_kills(STAGE, workdir, runs.draw_moments(STAGE, seed=17))
    runs.assert_same_outcome(STAGE, workdir, reference)
