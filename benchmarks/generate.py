"""Sampling throughput: our ``generate`` against transformers' ``model.generate``, same weights.

    python -m benchmarks.generate --model=small --precision=float32
    python -m benchmarks.generate --model=smollm2-135m --precision=mixed

Batch 8, prompt 64, 128 new tokens sampled at temperature 1 (no top-k/top-p), KV
cache on both sides, every row forced to the full length (``min_new_tokens``)
so both sides generate the same number of tokens. ``--precision=float32``: both
sides in float32. ``--precision=mixed``: each side at its best mixed precision
on CPU: bf16 compute with float32 accumulation for us, ``torch.autocast``
bfloat16 for transformers. torch uses ``--threads`` threads. ``smollm2-135m``
loads the real GGUF weights; the other presets are random. Our weights are
exported with ``export_hf`` and loaded by transformers, so both run the same
model. The last line printed is one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs.models import get_config
from rlhf_jax.checkpoints import export_hf, load_pretrained, smollm2_path
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.sampling import SamplingConfig, generate

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.generate``, defined only when it runs as the main
    module, so that other benchmarks can import its functions."""
    flags.DEFINE_string("model", "tiny", "model preset; smollm2-135m loads the real GGUF")
    flags.DEFINE_enum("precision", "float32", ["float32", "mixed"], "see the module docstring")
    flags.DEFINE_integer("batch", 8, "prompts per call")
    flags.DEFINE_integer("prompt", 64, "prompt tokens")
    flags.DEFINE_integer("new", 128, "new tokens per prompt")
    flags.DEFINE_integer("iters", 3, "timed calls per side")
    flags.DEFINE_integer("threads", 2, "torch threads")
    flags.DEFINE_bool("peer", True, "also time transformers")


def our_model(name: str, dtype: str):
    if name == "smollm2-135m":
        return load_pretrained(smollm2_path(), dtype=dtype)
    config = ModelConfig.from_dict(get_config(f"{name},dtype={dtype}"))
    params = jax.jit(CausalLM(config).init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    return config, nn.meta.unbox(params["params"])


def time_calls(fn, iters: int) -> tuple[float, float]:
    """(first call incl. compilation, median of ``iters`` further calls), in seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def ours(config, params, ids, iters: int, new: int) -> dict:
    """Our ``generate``: seconds per call and new tokens/s over ``iters`` calls after the first."""
    sampling = SamplingConfig(max_new_tokens=new, min_new_tokens=new,
                              prompt_buckets=(ids.shape[1],))
    mask = np.ones_like(ids)
    keys = iter(jax.random.split(jax.random.key(0), iters + 1))

    def call():
        s = generate(config, params, ids, mask, next(keys), sampling)
        s.response.block_until_ready()
        assert int(s.response_mask.sum()) == ids.shape[0] * new

    first, step = time_calls(call, iters)
    return dict(seconds=step, new_tokens_per_s=ids.shape[0] * new / step,
                compile_s=first - step)


def transformers_side(config, params, ids, iters: int) -> dict:
    import torch
    import transformers

    torch.set_num_threads(FLAGS.threads)
    with tempfile.TemporaryDirectory() as out:
        export_hf(config, params, out)
        model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.tensor(ids)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if FLAGS.precision == "mixed"
                else contextlib.nullcontext())

    def call():
        with torch.no_grad(), autocast:
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=FLAGS.new,
                                 min_new_tokens=FLAGS.new, eos_token_id=None, pad_token_id=0,
                                 use_cache=True)
        assert out.shape[1] == ids.shape[1] + FLAGS.new

    first, step = time_calls(call, iters)
    return dict(seconds=step, new_tokens_per_s=ids.shape[0] * FLAGS.new / step,
                first_call_s=first, torch=torch.__version__, transformers=transformers.__version__)


def main(_):
    dtype = "bfloat16" if FLAGS.precision == "mixed" else "float32"
    config, params = our_model(FLAGS.model, dtype)
    ids = np.random.RandomState(0).randint(1, config.vocab_size, (FLAGS.batch, FLAGS.prompt))
    result = dict(model=FLAGS.model, precision=FLAGS.precision, batch=FLAGS.batch,
                  prompt=FLAGS.prompt, new_tokens=FLAGS.new,
                  ours=ours(config, params, ids, FLAGS.iters, FLAGS.new))
    if FLAGS.peer:
        result["transformers"] = transformers_side(config, params, ids, FLAGS.iters)
        result["speedup"] = result["ours"]["new_tokens_per_s"] / result["transformers"][
            "new_tokens_per_s"]
    for side in ("ours", "transformers"):
        if side in result:
            print(f"{FLAGS.model} {FLAGS.precision} {side}: "
                  f"{result[side]['new_tokens_per_s']:.1f} new tokens/s")
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
