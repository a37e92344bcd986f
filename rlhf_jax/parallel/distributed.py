"""Multi-host start-up: join every process into one JAX runtime before any device is touched."""

from __future__ import annotations

from typing import Optional, Sequence

import jax


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Sequence[int]] = None) -> None:
    """``jax.distributed.initialize`` for a multi-process run; a no-op for ``num_processes=1``.

    On TPU pods and SLURM / Open MPI / Kubernetes GPU clusters every argument may
    be omitted (jax detects the cluster). Elsewhere, for example several CPU
    processes on one machine, give the coordinator ``host:port``, the process
    count and this process's id; CPU collectives then run over gloo (jax's
    default on CPU). Call it first, before anything touches ``jax.devices()``.
    """
    if num_processes == 1:
        return
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
