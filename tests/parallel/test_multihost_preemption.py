"""SIGTERM to one of two processes: both stop at the same step, checkpointed, and the same command
on both resumes to the uninterrupted two-process run's end, bit for bit.

Only process 1 is signalled: jax's coordination service tells process 0, and both agree on the
step to stop at (``multihost_utils.reached_preemption_sync_point``), so neither waits forever for
the other in a collective.
"""

import os
import re
import signal

import numpy as np
from safetensors.numpy import load_file

from tests.metrics_log import timeless_metrics, wait_for_step
from tests.processes import finish, free_port, joined, start


SFT = ["-m", "experiments.train", "--config=configs/sft.py:tiny,records=150", "--config.steps=10",
       "--config.data.max_len=128", "--config.mesh.devices=0", "--config.save_every=4",
       "--config.eval_every=5", "--config.optimizer.warmup_steps=0"]


def two_processes(workdir: str) -> list:
    port = free_port()
    return [start([*SFT, f"--workdir={workdir}"], devices=4, **joined(port, 2, i))
            for i in range(2)]


def outcome(workdir: str) -> tuple[dict, list]:
    return load_file(os.path.join(workdir, "model", "model.safetensors")), \
        timeless_metrics(workdir)


def test_sigterm_to_one_process_stops_both_at_one_step_and_they_resume_exactly(tmp_path):
    straight = str(tmp_path / "straight")
    finish(two_processes(straight))

    workdir = str(tmp_path / "stopped")
    processes = two_processes(workdir)
    wait_for_step(processes, workdir, 3)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [128 + signal.SIGTERM] * 2, outputs
    stopped = {int(m.group(1)) for out in outputs
               for m in [re.search(r"stopped at step (\d+) of sft; run the same command", out)]}
    assert len(stopped) == 1, outputs
    step = stopped.pop()
    assert 3 <= step < 10
    assert max(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()) \
        == step

    finish(two_processes(workdir))
    (params, metrics), (want_params, want_metrics) = outcome(workdir), outcome(straight)
    assert metrics == want_metrics
    for name, value in want_params.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)
