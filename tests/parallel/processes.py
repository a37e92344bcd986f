"""Several JAX processes on this machine: CPU devices each, joined over gloo, run as subprocesses."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def joined(port: int, count: int, index: int) -> dict:
    """The environment variables that make a process ``index`` of ``count`` in one JAX run
    (``rlhf_jax.parallel.initialize_from_env`` reads them)."""
    return dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
                JAX_PROCESS_ID=str(index))


def start(args: list[str], devices: int, **env: str) -> subprocess.Popen:
    """``python ARGS`` in the repository root with ``devices`` CPU devices and the tests' XLA
    optimization level (tests/conftest.py), output collected."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **env,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                         "--xla_backend_optimization_level=0")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    """Waits for every process; fails with the end of their output if one did not exit 0."""
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in processes), "\n\n".join(l[-3000:] for l in logs)
    return logs
