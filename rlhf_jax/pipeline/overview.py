"""A parameter tree at a glance: what the training loop prints before its first step.

The total count and size, then one line per top-level subtree (``trunk``,
``lm_head``; PPO's ``policy`` and ``value``) with its count, and under it one
line per array: its path inside the subtree, shape, dtype, and the mesh axes
that split each dimension (``·``: not split). Layers stacked by ``nn.scan``
are one array with the layer axis first, so a 30-layer model reads as briefly
as a 2-layer one::

    parameters: 139,584 (545.2 KiB) in 12 arrays
    lm_head                                                    32,768
      kernel                  64×512     float32  fsdp,·       32,768
    trunk                                                     106,816
      embed/embedding         512×64     float32  ·,fsdp       32,768
      layers/attn/k/kernel    2×64×2×16  float32  ·,fsdp,·,·    4,096
      …
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _axes(x: Any) -> str:
    """Mesh axes per dimension (``a+b``: split over both); ``replicated`` if none splits it."""
    spec = getattr(getattr(x, "sharding", None), "spec", None)
    if spec is None:
        return ""
    named = [("+".join(a) if isinstance(a, tuple) else a) or "·" for a in spec]
    named += ["·"] * (len(x.shape) - len(named))
    return ",".join(named) if any(a != "·" for a in named) else "replicated"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def parameter_overview(params: Any) -> str:
    """The overview of ``params`` (arrays or ``jax.ShapeDtypeStruct``s), as lines of text."""
    leaves = [(jax.tree_util.keystr(path, simple=True, separator="/"), x)
              for path, x in jax.tree_util.tree_flatten_with_path(params)[0]]
    count = lambda x: int(np.prod(x.shape))
    groups: dict[str, list] = {}
    for name, x in leaves:
        top, _, rest = name.partition("/")
        groups.setdefault(top, []).append((rest or top, x))
    rows = []
    for top, members in groups.items():
        rows.append([top, "", "", "", sum(count(x) for _, x in members)])
        rows += [["  " + rest, "×".join(map(str, x.shape)) or "scalar", str(np.dtype(x.dtype)),
                  _axes(x), count(x)] for rest, x in members]
    total = sum(count(x) for _, x in leaves)
    size = sum(count(x) * np.dtype(x.dtype).itemsize for _, x in leaves)
    widths = [max(len(r[i]) for r in rows) for i in range(4)] + [len(f"{total:,}")]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " +
             f"{r[4]:,}".rjust(widths[4]) for r in rows]
    return "\n".join([f"parameters: {total:,} ({_bytes(size)}) in {len(leaves)} arrays", *lines])
