"""Multi-host start-up, and the one way processes take turns with shared files.

Every process of a multi-host run executes the same program on its own devices
and reads the same data (see ``rlhf_jax.data.loaders``). Files in the workdir
are shared, so one process writes each of them: ``on_process_zero(name, write)``
runs ``write`` on process 0, then every process waits at a barrier, after which
all of them may read what it wrote.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import jax

from rlhf_jax.errors import ConfigError


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


def initialize_from_env(config=None) -> None:
    """Joins the multi-process run that ``config`` or the environment describes, if any.

    ``config`` is a ``distributed`` config group (``coordinator``, ``num_processes``,
    ``process_id``; ``""``, 0 and -1 mean unset). An unset field is read from
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. jax
    0.10 itself reads only the first of these (and ``JAX_LOCAL_DEVICE_IDS``); the
    count and the id are read here. Nothing set anywhere: one process, nothing to
    do. Something set: ``initialize`` with the rest ``None``, which jax fills in
    on a cluster it detects (SLURM, Open MPI, TPU pods) or names as missing.
    Already initialized (a second stage in one program): nothing to do.
    """
    if jax.distributed.is_initialized():
        return
    given = lambda field, unset: (None if config is None or getattr(config, field) == unset
                                  else getattr(config, field))
    coordinator = given("coordinator", "") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    count = _int(given("num_processes", 0), "JAX_NUM_PROCESSES")
    index = _int(given("process_id", -1), "JAX_PROCESS_ID")
    if (coordinator, count, index) != (None, None, None):
        initialize(coordinator, count, index)


def _int(value: Optional[int], variable: str) -> Optional[int]:
    if value is not None or variable not in os.environ:
        return value
    try:
        return int(os.environ[variable])
    except ValueError:
        raise ConfigError(f"{variable}={os.environ[variable]!r}: must be an integer") from None


def sync(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (the same name on every process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def on_process_zero(name: str, write: Callable[[], Any]) -> None:
    """Runs ``write()`` on process 0 only, then ``sync(name)``: a shared file is written once and
    exists for every process afterwards. Every process must call it, whether or not it sees the
    file already: whether to write is decided inside ``write``, on process 0 alone."""
    if jax.process_index() == 0:
        write()
    sync(name)


def to_host(tree) -> Any:
    """Global arrays as NumPy arrays, whole on every process. ``jax.device_get`` alone fails on an
    array split over devices of other processes: those are gathered (``process_allgather``, a
    collective: every process must call this); replicated ones are read from a local copy. The
    rest of the tree is fetched by one ``jax.device_get``, which starts every copy before
    waiting for any."""

    def gather(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            from jax.experimental import multihost_utils
            return multihost_utils.process_allgather(x, tiled=True)
        return x

    return jax.device_get(jax.tree.map(gather, tree))
