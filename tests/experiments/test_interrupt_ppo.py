"""The PPO-ptx stage, stopped (SIGTERM) or killed (SIGKILL), ends exactly as an uninterrupted run:
the same policy, EMA and value parameters, bit for bit, and the same metrics (KL coefficient
and the pretraining stream's position included)."""

import random
import re
import signal

from tests.experiments import runs
from tests.metrics_log import wait_for_step

STAGE = "ppo"


def test_sigterm_checkpoints_the_iteration_in_flight_and_the_rerun_ends_as_uninterrupted(
        reference, tmp_path):
    workdir = str(tmp_path / "run")
    signalled_after = random.Random(18).randint(2, runs.STEPS[STAGE] - 3)
    process = runs.start(STAGE, workdir)
    wait_for_step([process], workdir, signalled_after)
    seconds = runs.stop(process, signal.SIGTERM)
    output = runs.finish(process)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    stopped = int(re.search(rf"stopped at step (\d+) of {STAGE}; run the same command to resume",
                            output).group(1))
    assert signalled_after <= stopped <= signalled_after + 2
    assert runs.latest_checkpoint(workdir) == stopped
    step_seconds = max(r["step_seconds"] for r in runs.read_raw_metrics(workdir)
                       if r["split"] == "train")
    assert seconds < 2 * step_seconds + 15, seconds

    status, output = runs.run(STAGE, workdir)
    assert status == 0, output[-3000:]
    runs.assert_same_outcome(STAGE, workdir, reference)


def test_sigkill_at_six_moments_and_the_reruns_end_as_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    runs.run_through_kills(STAGE, workdir, runs.draw_moments(STAGE, seed=18))
    runs.assert_same_outcome(STAGE, workdir, reference)
