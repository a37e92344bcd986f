"""The reward-model stage, killed (SIGKILL) at six moments, ends exactly as an uninterrupted run."""

from tests.experiments import runs

STAGE = "rm"


def test_sigkill_at_six_moments_and_the_reruns_end_as_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    runs.run_through_kills(STAGE, workdir, runs.draw_moments(STAGE, seed=17))
    runs.assert_same_outcome(STAGE, workdir, reference)
