"""The PPO-ptx stage, stopped (SIGTERM) or killed (SIGKILL), ends exactly as an uninterrupted run:
the same policy, EMA and value parameters, bit for bit, and the same metrics (KL coefficient
and the pretraining stream's position included)."""

import random
import signal

from tests.experiments import runs

STAGE = "ppo"


def test_sigterm_checkpoints_the_iteration_in_flight_and_the_rerun_ends_as_uninterrupted(
        reference, tmp_path):
    runs.stop_then_resume(STAGE, str(tmp_path / "run"), signal.SIGTERM,
                          random.Random(18).randint(2, runs.STEPS[STAGE] - 3), lag=2,
                          reference=reference)  # log_every=1: every iteration is fetched


def test_sigkill_at_six_moments_and_the_reruns_end_as_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    runs.run_through_kills(STAGE, workdir, runs.draw_moments(STAGE, seed=18))
    runs.assert_same_outcome(STAGE, workdir, reference)
