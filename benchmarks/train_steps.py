"""Train-step throughput: our jitted SFT, RM and DPO steps beside TRL's and Tunix's.

    python -m benchmarks.train_steps --models=tiny,small --dtypes=float32 --steps=10
    python -m benchmarks.train_steps --peers=tunix --stages=sft,dpo    # Tunix only

Same model shapes (the preset exported to a ``transformers.LlamaConfig`` by ``config_to_hf``
for TRL, its fields given to Tunix's ``Llama3``), random weights, one batch of 8 × 256 tokens
repeated every step, AdamW (constant lr 1e-4, β 0.9/0.95, no weight decay), global-norm
clipping at 1.0, no gradient checkpointing, no dropout; torch on ``--threads`` threads, XLA on
all cores of this (2-core) machine. One step is forward, backward, clipping and the update:

* SFT: 8 rows of 256 tokens, each one example (64 prompt + 192 response tokens, loss on
  the response). tokens/s counts all 8 × 256 tokens.
* RM: 8 comparisons, each a prompt with a chosen and a rejected response of 256 tokens in all
  (our K = 2 batch, TRL's chosen/rejected pair): 16 sequences scored, one pairwise
  −log σ(r_w − r_l) loss per comparison. comparisons/s = 8 / step time.
* DPO: the same 8 pairs through the policy (β 0.1, loss on the 192 response tokens), the
  reference log-probs computed once beforehand, as ``run_dpo`` does (Tunix's DPO trainer
  computes them at every step; its figure here is its jitted train step alone, the
  reference pass's time is reported beside it, see ``benchmarks/tunix_peer.py``).

The two responses of a comparison share its first ``--prompt`` tokens; with ``--prompt_once``
(the default) our RM and DPO steps compute them once per comparison, as the stages do with
``data.max_prompt_len`` > 0, and the peers run whole rows (the same maths, less work).
``--responses`` K > 2 gives each comparison K ranked responses (InstructGPT's K = 4…9; the
K-wise loss, our steps alone: the peers take pairs).

Peers: TRL's ``SFTTrainer`` / ``RewardTrainer`` (``pip install -e ".[bench]"``) and Tunix's
``PeftTrainer`` / ``DPOTrainer``, run by ``benchmarks/tunix_peer.py`` in its own virtualenv
(``--tunix_python``; float32 only: Tunix's Llama computes in its parameters' dtype).
``float32``: every side in float32. ``bfloat16``: each side's best mixed precision on CPU,
bf16 compute with float32 accumulation and float32 master weights for us, ``bf16=True``
(``torch.autocast`` bfloat16) for TRL. Our step time is the median after compilation
(``block_until_ready``); TRL's is the median of ``on_step_begin`` → ``on_step_end`` (data
loading and logging fall outside), Tunix's the median of its jitted step, all after
``--warmup`` steps. With ``--rounds`` N, every side runs N times in turn and each figure is
its median round's; a ratio is the median of the ratios within each round
(``benchmarks/rounds.py``: on a shared VM the neighbours' load moves a run by tens of percent).
GFLOP/s counts the same model FLOPs on every side: 3 × forward (backward ≈ 2 × forward),
forward per token from ``ModelConfig.flops_per_token`` (the reward model swaps the LM head for
its scalar head, and needs its last layer at the last token only: ``step_gflop``), compared
with the matmul peak of the step's dtype from ``benchmarks.matmul`` (``--peak_gflops``, or
measured here when 0). The last line printed is one JSON object with every figure
(``step_s_rounds``: each round's); ``ours_over_peer`` holds the ratios (peer's step time over
ours: above 1, we are faster).

TRL's SFT step does some work beyond that: its chunked LM head also computes the entropy and
top-1 accuracy over the vocabulary (for its logs) and recomputes the logits in the backward.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.training.train_state import TrainState

from benchmarks import matmul, rounds
from configs.models import get_config
from rlhf_jax.checkpoints.llama import config_to_hf
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.train.dpo import DPOConfig, dpo_step, response_logprobs
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.reward import reward_step
from rlhf_jax.train.sft import sft_step

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.train_steps``, defined only when it runs as the main
    module, so that other benchmarks can import its functions."""
    flags.DEFINE_list("models", ["tiny", "small"], "model presets in configs/models.py")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes (see the module docstring)")
    flags.DEFINE_integer("batch", 8, "SFT rows / RM comparisons per step")
    flags.DEFINE_integer("seq", 256, "tokens per sequence")
    flags.DEFINE_integer("prompt", 64, "prompt tokens of an SFT row (no loss on them)")
    flags.DEFINE_integer("responses", 2, "responses per comparison of the RM and DPO steps (K; "
                         "the peers take pairs: with K > 2 those steps run ours alone)")
    flags.DEFINE_integer("steps", 10, "timed steps per side")
    flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
    flags.DEFINE_integer("rounds", 1, "times each side runs, in turn (benchmarks/rounds.py)")
    flags.DEFINE_integer("threads", 2, "torch threads")
    flags.DEFINE_float("peak_gflops", 0.0,
                       "matmul peak of the dtypes (0: measure each with benchmarks.matmul)")
    flags.DEFINE_list("stages", ["sft", "rm", "dpo"], "steps to time")
    flags.DEFINE_list("peers", ["trl", "tunix"], "peers to run beside ours (TRL: SFT and RM; "
                      "Tunix: SFT and DPO, float32)")
    flags.DEFINE_string("tunix_python", "/work/venvs/tunix/bin/python",
                        "interpreter of the virtualenv with google-tunix (benchmarks/tunix_peer.py)")
    flags.DEFINE_bool("skip_peers", False, "time our steps only (no TRL, no Tunix)")
    flags.DEFINE_bool("prompt_once", True, "our RM and DPO steps compute each comparison's prompt "
                      "once (the prompt-once layout); false: whole prompt + response rows, as "
                      "TRL and Tunix")
LR = 1e-4
TUNIX_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tunix_peer.py")
TUNIX_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                "mlp_dim", "rope_base", "norm_eps", "tie_embeddings")
STEPS = dict(sft=sft_step, rm=reward_step, dpo=functools.partial(dpo_step, config=DPOConfig()))


def batches(b: int, t: int, prompt: int, k: int = 2) -> dict:
    """SFT rows and RM comparisons of ``t`` tokens (SFT loss after ``prompt``; the ``k``
    responses of a comparison, ranked in order, share its first ``prompt`` tokens); random token
    ids below 256, so the byte tokenizer's pad id (256) never occurs."""
    rng = np.random.RandomState(0)
    sft = dict(tokens=rng.randint(0, 256, (b, t)), segment_ids=np.ones((b, t)),
               loss_mask=np.broadcast_to(np.arange(t) >= prompt, (b, t)))
    shared = np.repeat(rng.randint(0, 256, (b, 1, prompt)), k, axis=1)
    rm = dict(tokens=np.concatenate([shared, rng.randint(0, 256, (b, k, t - prompt))], axis=2),
              mask=np.ones((b, k, t)), rank=np.tile(np.arange(k), (b, 1)), valid=np.ones((b, k)))
    rm = dict({name: v.astype(np.int32) for name, v in rm.items()}, valid=rm["valid"] > 0)
    response = np.broadcast_to(np.arange(t) >= prompt, (b, k, t)).astype(np.int32)
    return dict(sft={name: v.astype(np.int32) for name, v in sft.items()}, rm=rm,
                dpo=dict(rm, response_mask=response, ref_logprobs=np.zeros((b, k), np.float32)))


def after_prompt(rows: dict, prompt: int) -> dict:
    """The comparisons of ``batches`` in the prompt-once layout (``comparison_batch`` with a
    ``prompt_len``): the shared ``prompt`` tokens once, the responses alone after them."""
    responses = {k: rows[k][:, :, prompt:] for k in ("tokens", "mask", "response_mask")
                 if k in rows}
    return dict(rows, prompt=rows["tokens"][:, 0, :prompt],
                prompt_mask=rows["mask"][:, 0, :prompt], **responses)


def step_gflop(config: ModelConfig, stage: str, batch: int, seq: int, prompt: int = 0,
               k: int = 2) -> float:
    """Model GFLOP of one step: 3 × forward (backward ≈ 2 × forward). A reward needs the scalar
    head (d_model → 1) instead of the LM head, and of its last layer only the keys and values
    at every position: queries, attention, output projection and MLP at the last token alone.
    ``prompt`` > 0 (RM, DPO): the comparison's prompt of that many tokens computed once (the
    last layer's queries and the head at its last token alone), then each response's
    ``seq − prompt`` tokens attending to it (``after_prompt`` in ``models/transformer.py``);
    ``k`` responses per comparison."""
    if stage == "sft":
        return 3 * config.flops_per_token(seq) * seq * batch / 1e9
    d, h = config.d_model, config.head_dim

    def forward(tokens: int, context: int, head: bool) -> float:
        """``tokens`` tokens attending over ``context``, the LM head on each or (reward) the
        last layer's queries at the last token alone."""
        total = config.flops_per_token(context) * tokens
        if not head:
            last_layer_queries = 2.0 * (2 * d * h * config.n_heads
                                        + d * config.mlp_dim * (3 if config.gated_mlp else 2)
                                        + 2 * context * config.n_heads * h)
            total -= tokens * 2.0 * d * (config.vocab_size - 1) + (tokens - 1) * last_layer_queries
        return total

    rm = stage == "rm"
    if prompt:
        return 3 * batch * (forward(prompt, prompt, False)
                            + k * forward(seq - prompt, seq, not rm)) / 1e9
    return 3 * batch * k * forward(seq, seq, not rm) / 1e9


def trace(folder: str):
    """``jax.profiler.trace`` into ``folder`` with a Perfetto JSON, without Python's calls (whose
    events made a traced GPU step's trace tens of megabytes and its conversion a minute)."""
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    return jax.profiler.trace(folder, create_perfetto_trace=True, profiler_options=options)


def ours(config: ModelConfig, stage: str, batch: dict, steps: int, warmup: int,
         trace_dir: str = "", pipelined: bool = False) -> dict:
    """Our jitted step's median seconds over ``steps`` after ``warmup`` (and compilation).

    Each timed step waits for its result and reads its loss, as a loop that logs every step. With
    ``pipelined``, ``steps`` more are dispatched back to back and waited for once
    (``pipelined_step_s``, their mean), as a loop that fetches metrics every few steps: the host
    prepares step n + 1 while the device runs step n. With ``trace_dir``, ``jax.profiler`` traces
    the timed steps alone into that folder: on a GPU, compilation autotunes each matmul fusion by
    running its candidates, which would swamp them."""
    model = ScalarHeadModel(config) if stage == "rm" else CausalLM(config)
    example = batch["tokens"][:1] if stage == "sft" else batch["tokens"][:1, 0]
    tx = make_optimizer(OptimizerConfig(learning_rate=LR, total_steps=10_000,
                                        final_fraction=1.0))  # constant, as TRL's below
    state = jax.jit(lambda r: nn.meta.unbox(TrainState.create(
        apply_fn=model.apply, params=model.init(r, example)["params"], tx=tx)))(jax.random.key(0))
    step = jax.jit(functools.partial(STEPS[stage], model=model), donate_argnums=0)
    batch = jax.device_put(batch)
    if stage == "dpo":  # the reference log-probs, once, as run_dpo computes them before training
        batch["ref_logprobs"] = jax.jit(functools.partial(response_logprobs, model))(
            state.params, batch)
    keys = jax.random.split(jax.random.key(1), warmup + steps)
    start = time.perf_counter()
    compiled = step.lower(state, batch, keys[0]).compile()
    compile_s, times, losses = time.perf_counter() - start, [], []

    def run(some_keys):
        nonlocal state
        for key in some_keys:
            start = time.perf_counter()
            state, metrics = jax.block_until_ready(compiled(state, batch, key))
            times.append(time.perf_counter() - start)
            losses.append(float(metrics["loss"]))

    run(keys[:warmup])
    with trace(trace_dir) if trace_dir else contextlib.nullcontext():
        run(keys[warmup:])
    result = dict(step_s=statistics.median(times[warmup:]), compile_s=compile_s,
                  first_loss=losses[0], last_loss=losses[-1])
    if pipelined:
        start = time.perf_counter()
        for key in keys[warmup:]:
            state, metrics = compiled(state, batch, key)
        result["last_loss"] = float(metrics["loss"])  # waits for the last step, so for all
        result["pipelined_step_s"] = (time.perf_counter() - start) / steps
    return result


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
    """Adds throughput figures to a side's result ``r`` and prints its table line; ``peak``:
    the matmul peak of the step's dtype."""
    sft = r["stage"] == "sft"
    unit = "tokens/s" if sft else "comparisons/s"
    rate = FLAGS.batch * (FLAGS.seq if sft else 1) / r["step_s"]
    r.update({"tokens_per_s" if sft else "comparisons_per_s": rate, "params": config.num_params(),
              "gflops_per_s": step_gflop(config, r["stage"], FLAGS.batch, FLAGS.seq,
                                         prompt_once(r["stage"], r["side"]),
                                         FLAGS.responses) / r["step_s"]})
    r["share_of_peak"] = r["gflops_per_s"] / peak
    assert np.isfinite([r["first_loss"], r["last_loss"]]).all(), r
    print(f"{r['model']:6s} {r['dtype']:8s} {r['stage']:3s} {r['side']:5s} {rate:9.1f} {unit:13s} "
          f"{r['gflops_per_s']:6.1f} GFLOP/s ({r['share_of_peak']:4.0%} of {peak:.0f}), "
          f"step {1e3 * r['step_s']:7.1f} ms, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")


def prompt_once(stage: str, side: str) -> int:
    """The prompt length of the prompt-once layout where that side runs it (our RM and DPO
    steps with ``--prompt_once``), else 0."""
    return FLAGS.prompt if stage != "sft" and side == "ours" and FLAGS.prompt_once else 0


PEER_STAGES = dict(trl=("sft", "rm"), tunix=("sft", "dpo"))  # what each peer's runner times


def run_tunix(python: str, config: ModelConfig, stage: str, **shape) -> dict:
    """``benchmarks/tunix_peer.py --stage=STAGE`` in the interpreter ``python`` (Tunix's
    virtualenv) on ``config``'s shape; its JSON line, or ``{'error': …}``."""
    if not os.path.exists(python):
        return dict(error=f"{python} not found (see benchmarks/tunix_peer.py for its setup)")
    model = json.dumps({k: getattr(config, k) for k in TUNIX_FIELDS})
    command = [python, TUNIX_PEER, f"--stage={stage}", f"--model_json={model}",
               f"--dtype={config.dtype}", *(f"--{k}={v}" for k, v in shape.items())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return dict(error=done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def tunix_side(config: ModelConfig, stage: str) -> dict:
    """Tunix's step on the same shapes as ours."""
    r = run_tunix(FLAGS.tunix_python, config, stage, batch=FLAGS.batch, seq=FLAGS.seq,
                  prompt=FLAGS.prompt, steps=FLAGS.steps, warmup=FLAGS.warmup)
    if stage == "dpo" and "error" not in r:  # Tunix recomputes the reference log-probs at every step; we do not
        r["step_with_reference_s"], r["step_s"] = r["step_s"], r["train_step_s"]
    return r


def main(_):
    peaks = {dtype: FLAGS.peak_gflops or max(matmul.gflops(jnp.dtype(dtype), *s)
                                             for s in matmul.SHAPES) for dtype in FLAGS.dtypes}
    peers = [] if FLAGS.skip_peers else FLAGS.peers
    rows, ratios = [], {}
    for name in FLAGS.models:
        for dtype in FLAGS.dtypes:
            config = ModelConfig.from_dict(get_config(f"{name},dtype={dtype}"))
            for stage, batch in batches(FLAGS.batch, FLAGS.seq, FLAGS.prompt,
                                        FLAGS.responses).items():
                if stage not in FLAGS.stages:
                    continue
                pairs = stage == "sft" or FLAGS.responses == 2  # what the peers' runners take
                mine = after_prompt(batch, FLAGS.prompt) if prompt_once(stage, "ours") else batch
                runners = {"ours": functools.partial(ours, config, stage, mine, FLAGS.steps,
                                                     FLAGS.warmup)}
                if "trl" in peers and stage in PEER_STAGES["trl"] and pairs:
                    runners["trl"] = functools.partial(trl_side, config, stage, batch,
                                                       dtype == "bfloat16")
                if ("tunix" in peers and stage in PEER_STAGES["tunix"] and dtype == "float32"
                        and pairs):
                    runners["tunix"] = functools.partial(tunix_side, config, stage)
                runs = rounds.alternate(runners, FLAGS.rounds)
                sides = {side: rounds.median_round(r, "step_s") for side, r in runs.items()}
                for side, r in sides.items():
                    r.update(model=name, dtype=dtype, stage=stage, side=side)
                    if "error" in r:
                        print(f"{name} {dtype} {stage} {side}: {r['error']}")
                        continue
                    report(r, config, peaks[dtype])
                    rows.append(r)
                for peer in (p for p in sides if p != "ours" and "error" not in sides[p]):
                    key = f"{name}/{dtype}/{stage}/{peer}"
                    ratios[key] = rounds.paired_ratio(runs["ours"], runs[peer], "step_s", "step_s")
                    print(f"{name:6s} {dtype:8s} {stage:3s} ours/{peer} {ratios[key]:.2f}x")
    versions = dict(jax=jax.__version__)
    if "trl" in peers:
        import torch
        import transformers
        import trl
        versions.update(torch=torch.__version__, transformers=transformers.__version__,
                        trl=trl.__version__)
    print(json.dumps(dict(batch=FLAGS.batch, seq=FLAGS.seq, prompt=FLAGS.prompt,
                          responses=FLAGS.responses,
                          prompt_once=FLAGS.prompt_once, steps=FLAGS.steps,
                          warmup=FLAGS.warmup, rounds=FLAGS.rounds, threads=FLAGS.threads,
                          peak_gflops=peaks,
                          device=jax.devices()[0].device_kind, rows=rows, ours_over_peer=ratios,
                          **versions)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
