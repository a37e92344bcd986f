"""The device mesh: three named axes ``data``, ``fsdp`` and ``tensor``."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh

from rlhf_jax.parallel import axes as ax


def mesh_shape(data: int = -1, fsdp: int = 1, tensor: int = 1,
               num_devices: Optional[int] = None) -> tuple[int, int, int]:
    """Resolves one size of -1 so that ``data·fsdp·tensor`` equals the device count."""
    n = jax.device_count() if num_devices is None else num_devices
    sizes = {ax.DATA: data, ax.FSDP: fsdp, ax.TENSOR: tensor}
    fill = [name for name, s in sizes.items() if s == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh {sizes}: at most one axis may be -1 (fill), got {fill}")
    bad = [name for name, s in sizes.items() if s != -1 and (not isinstance(s, int) or s < 1)]
    if bad:
        raise ValueError(f"mesh {sizes}: sizes must be positive integers or -1, not {bad}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if fill:
        if n % known:
            raise ValueError(f"mesh {sizes}: {n} devices are not divisible by {known}")
        sizes[fill[0]] = n // known
    if math.prod(sizes.values()) != n:
        raise ValueError(f"mesh {sizes} has {math.prod(sizes.values())} slots for {n} devices")
    return sizes[ax.DATA], sizes[ax.FSDP], sizes[ax.TENSOR]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A topology-aware mesh over all devices (every process's, on multi-host)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(data, fsdp, tensor, num_devices=len(devices))
    return jax.make_mesh(shape, ax.MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)

