"""The SFT stage, stopped (SIGTERM, Ctrl-C), killed (SIGKILL) or with a damaged checkpoint, ends exactly
as an uninterrupted run: the same parameters, bit for bit, and the same metrics."""

import os
import random
import re
import signal

import pytest

from tests.experiments import runs

STAGE = "sft"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_checkpoints_the_step_in_flight_and_the_rerun_ends_as_uninterrupted(
        reference, tmp_path, signum):
    # Metrics reach the file at fetches, here at least at every checkpoint (3 steps): the line
    # waited for may trail the loop by a window, and the loop stops after its next step.
    runs.stop_then_resume(STAGE, str(tmp_path / "run"), signum,
                          random.Random(16 + signum).randint(2, runs.STEPS[STAGE] - 4),
                          lag=2 * runs.SAVE_EVERY[STAGE], reference=reference)


def test_sigkill_at_six_moments_and_the_reruns_end_as_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    runs.run_through_kills(STAGE, workdir, runs.draw_moments(STAGE, seed=16))
    runs.assert_same_outcome(STAGE, workdir, reference)


def test_a_truncated_latest_checkpoint_resumes_from_the_one_before(reference, tmp_path):
    workdir = str(tmp_path / "run")
    status, _ = runs.run(STAGE, workdir, fault=dict(at="step", step=8))
    assert status == -signal.SIGKILL and runs.latest_checkpoint(workdir) == 6
    data = os.path.join(workdir, "checkpoints", "6", "state")
    files = [os.path.join(root, n) for root, _, names in os.walk(data) for n in names
             if os.sep + "d" + os.sep in os.path.join(root, n)]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)

    status, output = runs.run(STAGE, workdir)
    assert status == 0, output[-3000:]
    assert re.search(r"checkpoint \S+/checkpoints/6 does not restore .*moved to \S+"
                     r"checkpoints_damaged/6; resuming from step 3", output), output[-3000:]
    runs.assert_same_outcome(STAGE, workdir, reference)
