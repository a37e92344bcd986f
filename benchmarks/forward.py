"""Forward-pass throughput of CausalLM: tokens/s and achieved GFLOP/s.

    python -m benchmarks.forward --model=smollm2-135m --dtype=bfloat16 --batch=8 --seq=256

FLOPs per token follow ``ModelConfig.flops_per_token`` (2 per matmul parameter,
LM head included, plus 4·layers·seq·heads·head_dim for attention over the full
length). Weights are random: speed does not depend on their values. The last
line printed is one JSON object with every figure.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from configs.models import get_config
from rlhf_jax.models import CausalLM, ModelConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.forward``, defined only when it runs as the main
    module, so that other benchmarks can import its functions."""
    flags.DEFINE_string("model", "tiny", "model preset in configs/models.py")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype (params stay float32)")
    flags.DEFINE_integer("batch", 8, "sequences per forward pass")
    flags.DEFINE_integer("seq", 256, "tokens per sequence")
    flags.DEFINE_integer("iters", 10, "timed forward passes")
    flags.DEFINE_float("peak_tflops", 0.0, "device peak in TFLOP/s, to report MFU (0: not reported)")


def measure(config: ModelConfig, batch: int, seq: int, iters: int) -> dict:
    """Median seconds of ``iters`` forward passes of ``batch`` × ``seq`` tokens, as rates."""
    model = CausalLM(config)
    ids = jax.random.randint(jax.random.key(1), (batch, seq), 0, config.vocab_size)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids[:1, :8])["params"])
    # Reduce all logits on device: the measurement is the whole forward pass (every position's
    # LM head included, as the FLOP count assumes), not a host copy.
    forward = jax.jit(lambda p, x: jnp.sum(model.apply({"params": p}, x)))
    start = time.perf_counter()
    forward.lower(params, ids).compile()
    compile_s = time.perf_counter() - start
    forward(params, ids).block_until_ready()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        forward(params, ids).block_until_ready()
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    tokens = batch * seq
    flops = config.flops_per_token(seq) * tokens
    return dict(dtype=config.dtype, batch=batch, seq=seq, params=config.num_params(),
                median_s=step, tokens_per_s=tokens / step, gflops_per_s=flops / step / 1e9,
                compile_s=compile_s, device=jax.devices()[0].device_kind,
                backend=jax.default_backend(), host=platform.node(), jax=jax.__version__)


def main(_):
    config = ModelConfig.from_dict(get_config(f"{FLAGS.model},dtype={FLAGS.dtype}"))
    result = dict(model=FLAGS.model, **measure(config, FLAGS.batch, FLAGS.seq, FLAGS.iters))
    if FLAGS.peak_tflops:
        result["mfu"] = result["gflops_per_s"] / (FLAGS.peak_tflops * 1e3)
    print(f"{result['model']} {result['dtype']} batch {result['batch']}x{result['seq']}: "
          f"{result['tokens_per_s']:.0f} tokens/s, {result['gflops_per_s']:.1f} GFLOP/s, "
          f"compile {result['compile_s']:.1f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
