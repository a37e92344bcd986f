"""One command for an accelerator: forward pass, SFT and RM steps, sampling, a PPO iteration.

    python -m benchmarks.accelerator                     # llama3-1b in bf16 on the GPU or TPU
    python -m benchmarks.accelerator --peak_tflops=989   # a device the table below lacks
    python -m benchmarks.accelerator --model=tiny        # the same measurements on CPU, tiny
    python -m benchmarks.accelerator --parts=sft --parts=rm --profile_dir=/tmp/profile
                                                         # two parts, traced: where the time went

Runs on the first device (one GPU, or one chip of a TPU host), random weights of the preset,
compute in ``--dtype`` with float32 master weights and AdamW state:

* forward: ``CausalLM`` logits of ``--batch`` × ``--seq`` tokens (``benchmarks.forward``);
* SFT and RM steps: forward, backward, clipping and AdamW (``benchmarks.train_steps``): SFT
  rows of ``--seq`` tokens (loss after ``--prompt``), RM comparisons of two such sequences;
  each step waited for (``step_s``, ``mfu``), then as many dispatched back to back
  (``pipelined_step_s``, ``pipelined_mfu``: what a loop that logs every few steps sees);
* sampling: ``generate`` of ``--gen_new`` tokens after ``--gen_prompt`` for ``--gen_batch``
  prompts, every row forced to full length (``benchmarks.generate``);
* PPO: one iteration (sampling, scoring, one update in one minibatch) of ``--ppo_prompts``
  episodes with a separate value and reward model (``benchmarks.ppo``).

The layers run unrolled (``--scan_unroll=0``, the scan's loop unrolled across all of them): on
an H200 the while loop of ``scan_unroll=1`` spent 32 ms of a 167 ms SFT step at 1B zeroing,
filling and copying the stacked residuals the backward pass reads (``benchmarks/RESULTS.md``).

MFU = model FLOPs per second (``ModelConfig.flops_per_token``; a step counts 3 × forward) over
the device's dense bf16 peak: ``PEAK_BF16_TFLOPS`` by device kind, or ``--peak_tflops``. On a
GPU in bf16, ``--attention=auto`` selects cuDNN flash attention (``ModelConfig.attention``); if
it fails other than by running out of memory, the run goes on with XLA's attention and the JSON
line says why (``cudnn_error``).
The whole run is sized to finish in a few minutes on an H100-class GPU; ``--model=tiny`` runs it
on CPU (a test does, so that it keeps working). Each part prints one line as it lands (a run
cut short keeps what it measured); the last line printed is one JSON object. ``--profile_dir``
traces the timed SFT and RM steps with ``jax.profiler`` (a folder per step, compilation and
warmup left out) and prints each one's device time by kernel (``benchmarks/trace_summary.py``),
so the same call says where a step's time went. It asks XLA for
95% of the device's memory unless ``XLA_PYTHON_CLIENT_MEM_FRACTION`` is set (the PPO iteration
at 1B needed about 110 GiB with the layers in a scan loop; XLA's default is 75%).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Optional

# The PPO iteration holds a trained policy and value model (float32 master weights and AdamW
# state) beside the reference and reward models: at 1B it needs about 110 GB, more than XLA's
# default share (75%) of a 141 GB GPU. Set before jax starts its backend.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import forward, generate, ppo, trace_summary, train_steps  # noqa: E402
from configs.models import get_config  # noqa: E402
from rlhf_jax.models import ModelConfig  # noqa: E402

# Dense bf16 peaks in TFLOP/s, per chip, by a substring of ``jax.devices()[0].device_kind``;
# the more specific names first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
    ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5p", 459.0),
    ("TPU v5", 459.0), ("TPU v6 lite", 918.0), ("TPU v6e", 918.0),
)
PARTS = ("forward", "sft", "rm", "generate", "ppo")
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.accelerator`` (defined when it runs as main)."""
    flags.DEFINE_string("model", "llama3-1b", "model preset in configs/models.py")
    flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "compute dtype")
    flags.DEFINE_enum("remat_policy", "none", ["none", "dots", "full"], "activation remat")
    flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn"],
                      "auto: cudnn on a GPU in bf16, else xla")
    flags.DEFINE_bool("scan_layers", True, "the layers as one nn.scan (False: a Python loop)")
    flags.DEFINE_integer("scan_unroll", 0, "layers per iteration of the scan's loop (0: all of "
                         "them, no loop; 1: a while loop over the layers)")
    flags.DEFINE_integer("batch", 8, "SFT rows, RM comparisons, forward sequences")
    flags.DEFINE_integer("seq", 1024, "tokens per sequence")
    flags.DEFINE_integer("prompt", 256, "prompt tokens of an SFT row (no loss on them)")
    flags.DEFINE_integer("steps", 5, "timed steps (and forward passes)")
    flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
    flags.DEFINE_integer("gen_batch", 32, "prompts per sampling call")
    flags.DEFINE_integer("gen_prompt", 128, "prompt tokens")
    flags.DEFINE_integer("gen_new", 128, "new tokens per prompt")
    flags.DEFINE_integer("ppo_prompts", 32, "episodes per PPO iteration")
    flags.DEFINE_integer("ppo_prompt_len", 128, "prompt tokens of an episode")
    flags.DEFINE_integer("ppo_new", 128, "response tokens of an episode")
    flags.DEFINE_integer("ppo_iterations", 2, "timed PPO iterations")
    flags.DEFINE_float("peak_tflops", 0.0, "the device's dense bf16 peak (0: from the table)")
    flags.DEFINE_multi_enum("parts", list(PARTS), PARTS, "the measurements to run")
    flags.DEFINE_string("profile_dir", "", "if set, trace the timed SFT and RM steps "
                        "(jax.profiler, with a Perfetto JSON) into FOLDER/sft and FOLDER/rm and "
                        "print where the device's time went")


def device_peak(kind: str) -> Optional[float]:
    """The table's peak for a device kind, or None."""
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in kind), None)


def model_config() -> ModelConfig:
    attention = FLAGS.attention
    if attention == "auto":
        gpu_bf16 = jax.default_backend() == "gpu" and FLAGS.dtype == "bfloat16"
        attention = "cudnn" if gpu_bf16 else "xla"
    preset = get_config(f"{FLAGS.model},dtype={FLAGS.dtype},remat_policy={FLAGS.remat_policy}")
    return ModelConfig.from_dict(dict(preset, attention=attention, scan_layers=FLAGS.scan_layers,
                                      scan_unroll=FLAGS.scan_unroll))


class Parts(dict):
    """The measurements so far; each part is printed as one line when it lands, so a run that
    stops early (a time limit, a device out of memory) still leaves what it measured, with
    ``at_s``: the seconds since the measurements began (initialisation and compilation
    included), so a run's time can be told part by part."""

    def __init__(self):
        super().__init__()
        self.began = time.perf_counter()

    def __setitem__(self, part: str, result: dict) -> None:
        result = dict(result, at_s=time.perf_counter() - self.began)
        super().__setitem__(part, result)
        print(f"{part}: {json.dumps(result)}", flush=True)


def measure(config: ModelConfig, peak: Optional[float]) -> dict:
    """Every measurement of the module docstring, as one dict of dicts."""
    mfu = (lambda gflops: gflops / (peak * 1e3)) if peak else (lambda gflops: None)  # noqa: E731
    out = Parts()
    if "forward" in FLAGS.parts:
        fwd = forward.measure(config, FLAGS.batch, FLAGS.seq, FLAGS.steps)
        out["forward"] = dict(tokens_per_s=fwd["tokens_per_s"], gflops_per_s=fwd["gflops_per_s"],
                              mfu=mfu(fwd["gflops_per_s"]), compile_s=fwd["compile_s"])
    batches = train_steps.batches(FLAGS.batch, FLAGS.seq, FLAGS.prompt)
    for stage in [part for part in ("sft", "rm") if part in FLAGS.parts]:
        trace_dir = os.path.join(FLAGS.profile_dir, stage) if FLAGS.profile_dir else ""
        r = train_steps.ours(config, stage, batches[stage], FLAGS.steps, FLAGS.warmup, trace_dir,
                             pipelined=True)
        gflop = train_steps.step_gflop(config, stage, FLAGS.batch, FLAGS.seq)
        out[stage] = dict(step_s=r["step_s"], gflops_per_s=gflop / r["step_s"],
                          mfu=mfu(gflop / r["step_s"]),
                          tokens_per_s=FLAGS.batch * FLAGS.seq * (2 if stage == "rm" else 1)
                          / r["step_s"], pipelined_step_s=r["pipelined_step_s"],
                          pipelined_mfu=mfu(gflop / r["pipelined_step_s"]),
                          compile_s=r["compile_s"], first_loss=r["first_loss"],
                          last_loss=r["last_loss"])
        if trace_dir:
            print_device_time(stage, trace_dir)
    if "generate" in FLAGS.parts or "ppo" in FLAGS.parts:
        _, policy, reward = ppo.models_of(config)
    if "generate" in FLAGS.parts:
        ids = np.random.RandomState(0).randint(1, min(config.vocab_size, 256),
                                               (FLAGS.gen_batch, FLAGS.gen_prompt))
        out["generate"] = generate.ours(config, policy, ids, FLAGS.steps, FLAGS.gen_new)
    if "ppo" in FLAGS.parts:
        work = ppo.Iteration(FLAGS.ppo_prompts, FLAGS.ppo_prompt_len, FLAGS.ppo_new,
                             old_logprobs="sampler" if FLAGS.dtype == "float32" else "forward")
        out["ppo"] = dict(ppo.time_ours(config, policy, reward, work, FLAGS.ppo_iterations, 0),
                          old_logprobs=work.old_logprobs)
    return dict(out, wall_s=time.perf_counter() - out.began)


def print_device_time(stage: str, trace_dir: str) -> None:
    """The traced steps' device time by kernel (``benchmarks/trace_summary.py``)."""
    path = trace_summary.newest_trace(trace_dir)
    print(f"{stage}: device time by kernel over {FLAGS.steps} traced steps ({path}):")
    print(trace_summary.table(trace_summary.device_time(trace_summary.read_events(path)), 25))


def retry_with_xla(config: ModelConfig, error: Exception) -> bool:
    """Whether a failed run is measured again with XLA's attention: only a cuDNN run that did not
    run out of memory (XLA's attention needs more memory, not less)."""
    return config.attention == "cudnn" and "RESOURCE_EXHAUSTED" not in str(error)


def measure_or_retry(config: ModelConfig, peak: Optional[float]) -> tuple[dict, ModelConfig]:
    """``measure``, again with XLA's attention if a cuDNN run fails (``retry_with_xla``); the
    result and the config it was measured with."""
    try:
        return measure(config, peak), config
    except Exception as e:  # noqa: BLE001 — cuDNN attention fails on an unsupported device
        if not retry_with_xla(config, e):
            raise
        print(f"cuDNN attention failed ({type(e).__name__}: {str(e)[:300]}); measuring with xla")
        config = config.replace(attention="xla")
        error = f"{type(e).__name__}: {str(e)[:2000]}"
        return dict(measure(config, peak), cudnn_error=error), config


def summary(result: dict) -> list[str]:
    """The human-readable lines of the parts that ran."""
    lines = []
    for part in [p for p in ("forward", "sft", "rm") if p in result]:
        r = result[part]
        share = f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else ""
        if r.get("pipelined_mfu") is not None:
            share += f" ({r['pipelined_mfu']:.1%} pipelined)"
        lines.append(f"{FLAGS.model} {FLAGS.dtype} {part:8s} {r['tokens_per_s']:10.0f} tokens/s "
                     f"{r['gflops_per_s'] / 1e3:8.2f} TFLOP/s{share}")
    if "generate" in result:
        lines.append(f"{FLAGS.model} {FLAGS.dtype} generate {result['generate']['new_tokens_per_s']:.0f}"
                     " new tokens/s")
    if "ppo" in result:
        r = result["ppo"]
        lines.append(f"{FLAGS.model} {FLAGS.dtype} PPO iteration {r['iteration_s']:.3f} s (gen "
                     f"{r['generate_s']:.3f} / score and train {r['score_train_s']:.3f})")
    return lines


def main(_):
    device = jax.devices()[0]
    peak = FLAGS.peak_tflops or device_peak(device.device_kind)
    result, config = measure_or_retry(model_config(), peak)
    print("\n".join(summary(result)))
    print(json.dumps(dict(
        result, model=FLAGS.model, dtype=FLAGS.dtype, attention=config.attention,
        remat_policy=FLAGS.remat_policy, scan_layers=config.scan_layers,
        scan_unroll=config.scan_unroll, batch=FLAGS.batch, seq=FLAGS.seq,
        params=config.num_params(), peak_bf16_tflops=peak, device=device.device_kind,
        backend=jax.default_backend(), devices=jax.device_count(), host=platform.node(),
        jax=jax.__version__)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
