"""Programs the tests run in processes of their own: ``python ARGS`` in the repository root, as a
user runs an entry point, with this process's environment (tests/conftest.py's XLA flags and
compilation cache) and the repository importable. Several JAX processes on this machine: CPU
devices each, joined over gloo (``joined``, ``free_port``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment(devices: Optional[int] = None, **env: str) -> dict[str, str]:
    """This process's environment with the repository importable, output unbuffered (a test reads
    it while the process runs) and ``env``; with ``devices``, that many CPU devices and the tests'
    XLA optimization level (tests/conftest.py)."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", **env)
    if devices is not None:
        env.update(JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                             "--xla_backend_optimization_level=0")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def joined(port: int, count: int, index: int) -> dict:
    """The environment variables that make a process ``index`` of ``count`` in one JAX run
    (``rlhf_jax.parallel.initialize_from_env`` reads them)."""
    return dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
                JAX_PROCESS_ID=str(index))


def start(args: list[str], devices: Optional[int] = None, log: Optional[str] = None,
          **env: str) -> subprocess.Popen:
    """``python ARGS`` in the repository root (``environment(devices, **env)``), its stdout and
    stderr together collected, or written to the file ``log``; ``output`` returns them."""
    command = dict(args=[sys.executable, *args], cwd=ROOT, env=environment(devices, **env),
                   stderr=subprocess.STDOUT, text=True)
    if log is None:
        return subprocess.Popen(**command, stdout=subprocess.PIPE)
    with open(log, "w") as f:
        process = subprocess.Popen(**command, stdout=f)
    process.log = log
    return process


def output(process: subprocess.Popen, timeout: float = 600) -> str:
    """Waits for a process ``start`` started; returns its output."""
    if getattr(process, "log", None) is None:
        return process.communicate(timeout=timeout)[0]
    process.wait(timeout=timeout)
    with open(process.log) as f:
        return f.read()


def finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    """Waits for every process; fails with the end of their output if one did not exit 0."""
    try:
        logs = [output(p, timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in processes), "\n\n".join(l[-3000:] for l in logs)
    return logs


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository root (``environment()``) to its end, stdout and stderr
    captured as text; ``kwargs`` go to ``subprocess.run``."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, **kwargs)
