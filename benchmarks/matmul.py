"""The machine's matmul ceiling, the yardstick for the model benchmarks' GFLOP/s.

    python -m benchmarks.matmul

Times ``einsum('mk,kn->mn')`` at a few transformer-like shapes in float32 and
in bfloat16 with float32 accumulation (``preferred_element_type``). Also times
the decode-step case, 8 rows against 16 distinct 512×1408 weight matrices (too
many to stay in cache), as weight bytes read per second: the ceiling of
memory-bound token-by-token generation. Prints one JSON object on the last line.
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


def gemv_gb_per_s(dtype, layers: int = 16, rows: int = 8, k: int = 512, n: int = 1408,
                  iters: int = 20) -> float:
    weights = [jnp.full((k, n), 0.01, dtype) for _ in range(layers)]
    x = jnp.ones((rows, k), dtype)
    f = jax.jit(lambda ws, x: [jnp.einsum("mk,kn->mn", x, w, preferred_element_type=jnp.float32)
                               for w in ws])
    jax.block_until_ready(f(weights, x))
    start = time.perf_counter()
    for _ in range(iters):
        out = f(weights, x)
    jax.block_until_ready(out)
    return layers * k * n * jnp.dtype(dtype).itemsize * iters / (time.perf_counter() - start) / 1e9


def main(_):
    result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    for name, dtype in (("float32", jnp.float32), ("bfloat16_f32acc", jnp.bfloat16)):
        per_shape = {"x".join(map(str, s)): gflops(dtype, *s) for s in SHAPES}
        for shape, value in per_shape.items():
            print(f"{name:16s} {shape:16s} {value:8.1f} GFLOP/s")
        result[f"{name}_peak_gflops"] = max(per_shape.values())
        result[f"{name}_decode_gemv_gb_per_s"] = gemv_gb_per_s(dtype)
        print(f"{name:16s} 8 rows x 16 weights {result[f'{name}_decode_gemv_gb_per_s']:8.1f} GB/s")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
