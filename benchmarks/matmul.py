"""The machine's matmul ceiling, the yardstick for the model benchmarks' GFLOP/s.

    python -m benchmarks.matmul
    python -m benchmarks.matmul --torch     # also torch's float32 and bf16-autocast matmuls

Times ``einsum('mk,kn->mn')`` at a few transformer-like shapes in float32 and
in bfloat16 with float32 accumulation (``preferred_element_type``). Also times
the decode-step case, 8 rows (``--decode_rows``) against 16 distinct 512×1408
weight matrices (too many to stay in cache), as weight bytes read per second: the
ceiling of memory-bound token-by-token generation; as ``x·W`` and as the sampler
multiplies on CPU, with the weight as left operand (``weights_left_matmul``).
``--torch`` times ``torch.matmul`` at the same shapes on ``--threads`` threads in
float32 and under ``torch.autocast`` bfloat16, the two precisions the transformers
and TRL sides of the other benchmarks run at, so that each side's best precision on
the machine is known.
Prints one JSON object on the last line.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from rlhf_jax.models.matmul import weights_left_matmul

SHAPES = [(2048, 576, 1536), (2048, 1536, 576), (2048, 2048, 2048), (4096, 4096, 4096)]
F32 = jnp.float32
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags of ``python -m benchmarks.matmul`` (defined there only: other benchmarks import
    this module for ``gflops``)."""
    flags.DEFINE_bool("torch", False, "also time torch.matmul (float32 and bf16 autocast)")
    flags.DEFINE_integer("threads", 2, "torch threads")
    flags.DEFINE_list("shapes", ["x".join(map(str, s)) for s in SHAPES], "m x k x n to time")
    flags.DEFINE_integer("iters", 10, "timed matmuls per shape")
    flags.DEFINE_list("decode_rows", ["8"], "rows of the decode-step case, x·W and weights left")


def gflops(dtype, m: int, k: int, n: int, iters: int = 10) -> float:
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    f = jax.jit(lambda x, y: jnp.einsum("mk,kn->mn", x, y, preferred_element_type=F32))
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(iters):
        out = f(a, b)
    out.block_until_ready()
    return 2 * m * k * n * iters / (time.perf_counter() - start) / 1e9


def gemv_gb_per_s(dtype, layers: int = 16, rows: int = 8, k: int = 512, n: int = 1408,
                  iters: int = 20, weights_left: bool = False) -> float:
    """Weight bytes read per second by ``rows`` × each of ``layers`` (k, n) weights: as
    ``x·W``, or with ``weights_left`` as the sampler's CPU decode steps multiply,
    ``weights_left_matmul`` on weights stored transposed (n, k)."""
    shape = (n, k) if weights_left else (k, n)
    weights = [jnp.full(shape, 0.01, dtype) for _ in range(layers)]
    x = jnp.ones((rows, k), dtype)
    if weights_left:
        f = jax.jit(lambda ws, x: [weights_left_matmul(x, w) for w in ws])
    else:
        f = jax.jit(lambda ws, x: [jnp.einsum("mk,kn->mn", x, w, preferred_element_type=F32)
                                   for w in ws])
    jax.block_until_ready(f(weights, x))
    start = time.perf_counter()
    for _ in range(iters):
        out = f(weights, x)
    jax.block_until_ready(out)
    return layers * k * n * jnp.dtype(dtype).itemsize * iters / (time.perf_counter() - start) / 1e9


def torch_gflops(autocast: bool, m: int, k: int, n: int) -> float:
    import torch

    a, b = torch.ones(m, k), torch.ones(k, n)
    iters = 1 if autocast else 10  # bf16 autocast can be ~100x slower on CPUs without bf16 units
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.matmul(a, b)
        start = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        return 2 * m * k * n * iters / (time.perf_counter() - start) / 1e9


def main(_):
    result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    shapes = [tuple(int(d) for d in s.split("x")) for s in FLAGS.shapes]
    for name, dtype in (("float32", jnp.float32), ("bfloat16_f32acc", jnp.bfloat16)):
        per_shape = {"x".join(map(str, s)): gflops(dtype, *s, iters=FLAGS.iters) for s in shapes}
        for shape, value in per_shape.items():
            print(f"{name:16s} {shape:16s} {value:8.1f} GFLOP/s")
        result[f"{name}_peak_gflops"] = max(per_shape.values())
        for rows in map(int, FLAGS.decode_rows):
            for form, left in (("gemv", False), ("weights_left", True)):
                key = f"{name}_decode_{form}_gb_per_s" + ("" if rows == 8 else f"_{rows}_rows")
                result[key] = gemv_gb_per_s(dtype, rows=rows, weights_left=left)
                print(f"{name:16s} {rows} rows x 16 weights, {form:12s} {result[key]:8.1f} GB/s")
    if FLAGS.torch:
        import torch

        torch.set_num_threads(FLAGS.threads)
        result["torch"] = torch.__version__
        for name, autocast in (("float32", False), ("autocast_bf16", True)):
            per_shape = {"x".join(map(str, s)): torch_gflops(autocast, *s) for s in shapes[:3]}
            for shape, value in per_shape.items():
                print(f"torch {name:13s} {shape:16s} {value:8.1f} GFLOP/s")
            result[f"torch_{name}_peak_gflops"] = max(per_shape.values())
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
