"""Train-step throughput: our jitted SFT and reward steps against TRL's SFT and Reward trainers.

    python -m benchmarks.train_steps --models=tiny,small --dtypes=float32,bfloat16 --steps=10

Same model shapes (the preset exported to a ``transformers.LlamaConfig`` by ``config_to_hf``),
random weights, one batch of 8 × 256 tokens repeated every step, AdamW (constant lr 1e-4,
β 0.9/0.95, no weight decay), global-norm clipping at 1.0, no gradient checkpointing, no
dropout; torch on ``--threads`` threads, XLA on all cores of this (2-core) machine. One step
is forward, backward, clipping and the update:

* SFT: 8 rows of 256 tokens, each one example (64 prompt + 192 response tokens, loss on
  the response). tokens/s counts all 8 × 256 tokens.
* RM: 8 comparisons, each a prompt with a chosen and a rejected response of 256 tokens in all
  (our K = 2 batch, TRL's chosen/rejected pair): 16 sequences scored, one pairwise
  −log σ(r_w − r_l) loss per comparison. comparisons/s = 8 / step time.

``float32``: both sides in float32. ``bfloat16``: each side's best mixed precision on CPU,
bf16 compute with float32 accumulation and float32 master weights for us, ``bf16=True``
(``torch.autocast`` bfloat16) for TRL. Our step time is the median after compilation
(``block_until_ready``); TRL's is the median of ``on_step_begin`` → ``on_step_end`` (data
loading and logging fall outside), both after ``--warmup`` steps. GFLOP/s counts the same
model FLOPs on both sides: 3 × forward (backward ≈ 2 × forward), forward per token from
``ModelConfig.flops_per_token`` (the reward model swaps the LM head for its scalar head),
and is compared with the bf16 matmul peak of ``benchmarks.matmul`` (``--peak_gflops``, or
measured here when 0). The last line printed is one JSON object with every figure.

TRL's SFT step does some work beyond that: its chunked LM head also computes the entropy and
top-1 accuracy over the vocabulary (for its logs) and recomputes the logits in the backward.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.training.train_state import TrainState

from benchmarks import matmul
from configs.models import get_config
from rlhf_jax.checkpoints.llama import config_to_hf
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.reward import reward_step
from rlhf_jax.train.sft import sft_step

flags.DEFINE_list("models", ["tiny", "small"], "model presets in configs/models.py")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes (see the module docstring)")
flags.DEFINE_integer("batch", 8, "SFT rows / RM comparisons per step")
flags.DEFINE_integer("seq", 256, "tokens per sequence")
flags.DEFINE_integer("prompt", 64, "prompt tokens of an SFT row (no loss on them)")
flags.DEFINE_integer("steps", 10, "timed steps per side")
flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
flags.DEFINE_integer("threads", 2, "torch threads")
flags.DEFINE_float("peak_gflops", 0.0, "bf16 matmul peak from benchmarks.matmul (0: measure it)")
flags.DEFINE_bool("skip_trl", False, "time our steps only")
FLAGS = flags.FLAGS
LR = 1e-4


def batches() -> dict:
    """Random token ids below 256, so the byte tokenizer's pad id (256) never occurs."""
    rng, b, t = np.random.RandomState(0), FLAGS.batch, FLAGS.seq
    sft = dict(tokens=rng.randint(0, 256, (b, t)), segment_ids=np.ones((b, t)),
               loss_mask=np.broadcast_to(np.arange(t) >= FLAGS.prompt, (b, t)))
    rm = dict(tokens=rng.randint(0, 256, (b, 2, t)), mask=np.ones((b, 2, t)),
              rank=np.tile([0, 1], (b, 1)), valid=np.ones((b, 2)))
    return dict(sft={k: v.astype(np.int32) for k, v in sft.items()},
                rm=dict({k: v.astype(np.int32) for k, v in rm.items()}, valid=rm["valid"] > 0))


def step_gflop(config: ModelConfig, stage: str) -> float:
    forward = config.flops_per_token(FLAGS.seq)
    if stage == "rm":  # the scalar head (d_model → 1) instead of the LM head
        forward -= 2.0 * config.d_model * (config.vocab_size - 1)
    sequences = FLAGS.batch * (2 if stage == "rm" else 1)
    return 3 * forward * sequences * FLAGS.seq / 1e9


def ours(config: ModelConfig, stage: str, batch: dict, steps: int, warmup: int) -> dict:
    """Our jitted step's median seconds over ``steps`` after ``warmup`` (and compilation)."""
    model = CausalLM(config) if stage == "sft" else ScalarHeadModel(config)
    example = batch["tokens"][:1] if stage == "sft" else batch["tokens"][:1, 0]
    tx = make_optimizer(OptimizerConfig(learning_rate=LR, total_steps=10_000,
                                        final_fraction=1.0))  # constant, as TRL's below
    state = jax.jit(lambda r: nn.meta.unbox(TrainState.create(
        apply_fn=model.apply, params=model.init(r, example)["params"], tx=tx)))(jax.random.key(0))
    step = jax.jit(functools.partial(sft_step if stage == "sft" else reward_step, model=model),
                   donate_argnums=0)
    batch = jax.device_put(batch)
    keys = jax.random.split(jax.random.key(1), warmup + steps)
    start = time.perf_counter()
    compiled = step.lower(state, batch, keys[0]).compile()
    compile_s, times, losses = time.perf_counter() - start, [], []
    for key in keys:
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(state, batch, key))
        times.append(time.perf_counter() - start)
        losses.append(float(metrics["loss"]))
    return dict(step_s=statistics.median(times[warmup:]), compile_s=compile_s,
                first_loss=losses[0], last_loss=losses[-1])


def trl_side(config: ModelConfig, stage: str, batch: dict, bf16: bool) -> dict:
    import datasets
    import huggingface_hub
    import torch
    import transformers
    import trl

    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True  # TRL's trainers ping the Hub
    torch.set_num_threads(FLAGS.threads)

    class Timer(transformers.TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_step_begin(self, *args, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, *args, **kwargs):
            self.end.append(time.perf_counter())

    n = FLAGS.warmup + FLAGS.steps  # the batch repeated: one epoch of n steps
    tokens = np.concatenate([batch["tokens"]] * n).tolist()
    hf = transformers.LlamaConfig(**config_to_hf(config), num_labels=1)
    if stage == "sft":
        labels = np.where(np.concatenate([batch["loss_mask"]] * n) > 0, tokens, -100)
        data = dict(input_ids=tokens, labels=labels.tolist())
        trainer_cls, config_cls = trl.SFTTrainer, trl.SFTConfig
        model = transformers.LlamaForCausalLM(hf)
    else:
        data = dict(chosen_ids=[x[0] for x in tokens], rejected_ids=[x[1] for x in tokens])
        trainer_cls, config_cls = trl.RewardTrainer, trl.RewardConfig
        model = transformers.LlamaForSequenceClassification(hf)
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        args = config_cls(
            output_dir=out, per_device_train_batch_size=FLAGS.batch, max_steps=n,
            max_length=FLAGS.seq, learning_rate=LR, adam_beta1=0.9, adam_beta2=0.95,
            weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="constant", bf16=bf16,
            use_cpu=True, gradient_checkpointing=False, report_to=[], save_strategy="no",
            eval_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
        trainer = trainer_cls(model=model, args=args, processing_class=byte_tokenizer(),
                              train_dataset=datasets.Dataset.from_dict(data), callbacks=[timer])
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        trainer.train()
    times = [end - begin for begin, end in zip(timer.begin, timer.end)]
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return dict(step_s=statistics.median(times[FLAGS.warmup:]), first_step_s=times[0],
                first_loss=losses[0], last_loss=losses[-1], torch_threads=torch.get_num_threads())


def report(r: dict, config: ModelConfig, peak: float) -> None:
    """Adds throughput figures to a side's result ``r`` and prints its table line."""
    sft = r["stage"] == "sft"
    unit = "tokens/s" if sft else "comparisons/s"
    rate = FLAGS.batch * (FLAGS.seq if sft else 1) / r["step_s"]
    r.update({"tokens_per_s" if sft else "comparisons_per_s": rate, "params": config.num_params(),
              "gflops_per_s": step_gflop(config, r["stage"]) / r["step_s"]})
    r["share_of_bf16_peak"] = r["gflops_per_s"] / peak
    assert np.isfinite([r["first_loss"], r["last_loss"]]).all(), r
    print(f"{r['model']:6s} {r['dtype']:8s} {r['stage']:3s} {r['side']:4s} {rate:9.1f} {unit:13s} "
          f"{r['gflops_per_s']:6.1f} GFLOP/s ({r['share_of_bf16_peak']:4.0%} of {peak:.0f}), "
          f"step {1e3 * r['step_s']:7.1f} ms, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")


def main(_):
    peak = FLAGS.peak_gflops or max(matmul.gflops(jnp.bfloat16, *s) for s in matmul.SHAPES)
    rows, ratios = [], {}
    for name in FLAGS.models:
        for dtype in FLAGS.dtypes:
            config = ModelConfig.from_dict(get_config(f"{name},dtype={dtype}"))
            for stage, batch in batches().items():
                sides = {"ours": ours(config, stage, batch, FLAGS.steps, FLAGS.warmup)}
                if not FLAGS.skip_trl:
                    sides["trl"] = trl_side(config, stage, batch, dtype == "bfloat16")
                for side, r in sides.items():
                    r.update(model=name, dtype=dtype, stage=stage, side=side)
                    report(r, config, peak)
                    rows.append(r)
                if "trl" in sides:
                    key = f"{name}/{dtype}/{stage}"
                    ratios[key] = sides["trl"]["step_s"] / sides["ours"]["step_s"]
                    print(f"{name:6s} {dtype:8s} {stage:3s} ours/TRL {ratios[key]:.2f}x")
    versions = dict(jax=jax.__version__)
    if not FLAGS.skip_trl:
        import torch
        import transformers
        import trl
        versions.update(torch=torch.__version__, transformers=transformers.__version__,
                        trl=trl.__version__)
    print(json.dumps(dict(batch=FLAGS.batch, seq=FLAGS.seq, prompt=FLAGS.prompt, steps=FLAGS.steps,
                          warmup=FLAGS.warmup, threads=FLAGS.threads, bf16_peak_gflops=peak,
                          device=jax.devices()[0].device_kind, rows=rows, ours_over_trl=ratios,
                          **versions)))


if __name__ == "__main__":
    app.run(main)
