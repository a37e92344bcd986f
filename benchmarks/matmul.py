"""The machine's matmul ceiling, the yardstick for the model benchmarks' GFLOP/s.

    python -m benchmarks.matmul

Times ``einsum('mk,kn->mn')`` at a few transformer-like shapes in float32 and
in bfloat16 with float32 accumulation (``preferred_element_type``), and prints
the best GFLOP/s of each as one JSON object on the last line.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
from absl import app

SHAPES = [(2048, 576, 1536), (2048, 1536, 576), (2048, 2048, 2048), (4096, 4096, 4096)]


def gflops(dtype, m: int, k: int, n: int, iters: int = 10) -> float:
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    f = jax.jit(lambda x, y: jnp.einsum("mk,kn->mn", x, y, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(iters):
        out = f(a, b)
    out.block_until_ready()
    return 2 * m * k * n * iters / (time.perf_counter() - start) / 1e9


def main(_):
    result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    for name, dtype in (("float32", jnp.float32), ("bfloat16_f32acc", jnp.bfloat16)):
        per_shape = {"x".join(map(str, s)): gflops(dtype, *s) for s in SHAPES}
        for shape, value in per_shape.items():
            print(f"{name:16s} {shape:16s} {value:8.1f} GFLOP/s")
        result[f"{name}_peak_gflops"] = max(per_shape.values())
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
