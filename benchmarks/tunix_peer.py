"""Tunix side of the train-step and PPO benchmarks: seconds per step of Google's Tunix on CPU.

    /work/venvs/tunix/bin/python benchmarks/tunix_peer.py --stage=sft --model_json='{...}' \
        --batch=8 --seq=256 --prompt=64 --steps=10 --warmup=2 --dtype=float32
    ... --stage=dpo ...   (same flags: --batch pairs, chosen and rejected of --seq tokens each)
    ... --stage=ppo --prompts=16 --prompt_len=64 --new_tokens=64 --iterations=3 --warmup=1

Imports only the standard library, numpy, jax, flax, optax and tunix, so that it runs in the
Tunix virtualenv, made with

    python3.11 -m venv /work/venvs/tunix && /work/venvs/tunix/bin/pip install \
        google-tunix==0.1.7 jax==0.10.2 jaxlib==0.10.2 numpy

(with flax 0.12.8, optax 0.2.8, qwix 0.1.8: the jax / flax / optax of our venv). The last line on
stdout is one JSON object: {"stage", "tunix_version", "jax_version", "step_s", "min_step_s",
"first_step_s", "loop_step_s" (sft / dpo), "train_step_s" and "min_train_step_s" (dpo), "times_s"
(every step / iteration, the first included), "first_loss", "last_loss", "notes"}, plus for ppo
"generate_s", "score_s", "train_s", "sync_s", "weight_sync", "episodes_per_iteration",
"first_value_loss", "last_value_loss" (the per-iteration buckets also go to stderr).

Model. ``--model_json`` holds our ``ModelConfig`` fields, mapped onto
``tunix.models.llama3.model.ModelConfig`` (embed_dim = d_model, hidden_dim = mlp_dim,
weight_tying = tie_embeddings, no remat) and ``Llama3(config, rngs=nnx.Rngs(seed))``: pre-norm
RMSNorm, GQA attention with RoPE, SwiGLU MLP, no biases, float32 parameters and compute (Tunix's
Llama3 has no compute-dtype option: only ``--dtype=float32``). Tunix initialises the MLP kernels
to zero, which would keep the MLP's gradients at zero for ever, so every parameter of rank >= 2 is
redrawn as N(0, 0.02^2) (RMSNorm scales stay 1). Tunix's ``apply_rope`` ignores
``config.rope_theta`` and always uses base 1e6 (ours 10000): other angles, same compute. No mesh
for sft / dpo (one CPU device; Tunix's ``shard`` is a no-op on CPU); XLA uses every core.

Optimizer: ``optax.chain(clip_by_global_norm(1.0), adamw(--lr, b1=0.9, b2=0.95,
weight_decay=0))``, constant lr 1e-4 by default (Tunix's configs have no clipping option, so it is
chained into the optax optimizer the trainers take; our PPO benchmark uses ``--lr=1e-6``, same
compute). Data: ids from ``np.random.RandomState(0).randint(0, 256, ...)``, one batch built once
as device arrays and fed every step (no pipeline); pad id 256 never occurs, so nothing is padded.

--stage=sft: ``tunix.sft.peft_trainer.PeftTrainer`` (no LoRA params: full fine-tuning,
``nnx.Optimizer(wrt=nnx.Param)``), Tunix's default loss (full logits, ``log_softmax`` x one-hot,
divided by the loss-token count) and ``tunix/cli/peft_main.py``'s ``gen_model_input_fn``
(positions and a [B, L, L] causal mask from the pad mask, inside the jitted step) with pad id 256
instead of its hard-coded 0 (0 occurs in the ids). ``TrainingInput``: --batch rows of --seq
tokens, ``input_mask`` 1 from position --prompt on: loss on the last 192 tokens of each row.

--stage=dpo: ``tunix.sft.dpo.dpo_trainer.DPOTrainer`` ("dpo", beta 0.1, no label smoothing), the
reference a second ``Llama3`` with the same weights, never updated. ``TrainingInput``: prompt ids
[B, prompt], chosen / rejected ids [B, seq - prompt], masks all 1. A step, as in
``DPOTrainer.train``: ``_prepare_inputs`` (eager concatenation of chosen and rejected into one
[2B, seq] batch, masks, positions, and the reference forward, Tunix's jitted ``compute_logps``),
then the jitted train step (policy forward on [2B, seq], summed response log-probs, loss,
backward, update). Tunix computes the reference log-probs at every step; ours are computed once
per dataset before training (``rlhf_jax/train/dpo.py``), so at equal work compare our step with
``train_step_s``: the jitted step alone on an example prepared once, --steps times after the
steps above. ``step_s`` is what a Tunix user's step costs.

Timing (sft, dpo). The jitted step is the one ``PeftTrainer.train`` runs,
``jit_train_and_eval_step(cache_nnx_graph=True)`` (``nnx.jit(_train_step,
donate_argnames=("optimizer",))`` in ``nnx.cached_partial`` with model and optimizer), compiled
once. One step = ``_prepare_inputs`` + ``shard_input`` (no-op without a mesh) + the jitted step,
then ``block_until_ready`` on the loss (the update is in the same XLA program; Tunix's throttler
waits on the same array). first_step_s = step 1 (tracing and compilation included); step_s = the
median of the --steps steps after --warmup (step 1 included), min_step_s their minimum (least
disturbed by other load on a shared machine). loop_step_s: then ``trainer.train()`` itself over
--steps more copies of the batch, wall time / steps (Tunix's loop: 2 steps in flight, metrics
buffering with a host read of the previous loss, logging).

--stage=ppo: ``tunix.rl.ppo.ppo_learner.PPOLearner`` on an ``RLCluster``, "vanilla" rollout
engine (Tunix's ``Sampler``), every role on one 1x1 ("fsdp", "tp") CPU mesh. Actor: the policy;
reference: a second ``Llama3`` with its weights; critic and reward model: ``ScalarHead`` below
(Tunix's Llama3 embedder, decoder layers and final norm, no LM head, and a d_model -> 1 head;
different weights each), the reward model passed as ``reward=`` (no reward function).
``PPOConfig`` defaults (GAE gamma 1, lambda 0.95, clip 0.2, value clip 0.2, KL in the reward with
beta 0.04, ``low_var_kl``, no entropy bonus), ``num_iterations=1``, ``mini_batch_size`` = batch:
one epoch, one minibatch. Prompts: --prompts rows of --prompt_len ids, the same every iteration,
given as text through ``IdTokenizer`` (decimal ids, exact round trip, no BOS). Rollout:
``RolloutConfig(max_tokens_to_generate=new_tokens, temperature=1, top_p=1, top_k=None,
max_prompt_length=prompt_len, kv_cache_size=prompt_len + new_tokens)``: a prefill, then a
``lax.while_loop`` of one-token steps over the KV cache, categorical sampling over the whole
vocabulary (seed 0 in every call, Tunix's default). No stop token: EOS = pad = vocab_size, an id
the model cannot sample, so every response has --new_tokens tokens and none is masked.

Timing (ppo). ``learner.train()`` over 1 + --warmup + --iterations iterations; an iteration =
``_run_global_step`` (rollout and scoring in Tunix's data thread, then actor and critic training)
+ ``sync_weights`` (never called here: on one mesh the sampler holds the actor's own variables,
``weight_sync`` false). Buckets from wrappers on the instances: generate_s = ``RLCluster.generate``
(tokenising, prefill, decode loop, device_get, decoding to text); score_s = the rest of
``_generate_and_compute_advantage`` (reference, old-policy, critic and reward forwards, KL-shaped
rewards, GAE, whitening, host-side metrics); train_s = ``update_actor`` + ``update_critic`` (each
ends waiting on its loss). step_s and the buckets are medians over the last --iterations;
first_step_s = iteration 1 (compilation included); losses: the actor's and critic's as Tunix logs.

Work that differs from ours, by Tunix's design (kept: it is what a Tunix user runs):
  * dpo: the reference forward at every step (``train_step_s`` leaves it out).
  * ppo: actor and critic are updated by two jitted steps with two optimizers (ours: one joint
    update); the reference, old-policy, critic and reward forwards are four jitted calls (ours:
    one scoring program); the prefill computes logits at every prompt position and each decode
    step attends over all prompt_len + new_tokens cache slots (masked); prompts are encoded from
    text and completions decoded to text; scoring computes numpy masked-array metrics every
    iteration. KL coefficient: Tunix's default 0.04 (ours: our controller's), same compute.
  * all: the jitted step donates the optimizer state, not the parameters
    (``donate_argnames=("optimizer",)``), so the new parameters go to fresh buffers.
Quirk with no effect on compute: ``PPOLearner`` builds the per-token reward with
``jnp.zeros_like(completion_ids)`` (int32), so the reward model's score is cast to an integer.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.models.llama3 import model as llama3
from tunix.sft import peft_trainer, sharding_utils
from tunix.sft import utils as sft_utils
from tunix.sft.dpo import dpo_trainer

PAD = 256  # never drawn (ids are < 256)


def tunix_config(shape: dict) -> llama3.ModelConfig:
    return llama3.ModelConfig(
        num_layers=shape["n_layers"], vocab_size=shape["vocab_size"], embed_dim=shape["d_model"],
        hidden_dim=shape["mlp_dim"], num_heads=shape["n_heads"], head_dim=shape["head_dim"],
        num_kv_heads=shape["n_kv_heads"], rope_theta=shape["rope_base"],
        norm_eps=shape["norm_eps"], weight_tying=bool(shape["tie_embeddings"]))


def randomize(model: nnx.Module, seed: int) -> nnx.Module:
    """Redraws every rank >= 2 parameter as N(0, 0.02^2) (Tunix zero-initialises the MLP)."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x if x.ndim < 2 else 0.02 * jax.random.normal(k, x.shape, x.dtype)
              for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def policy(shape: dict, seed: int) -> llama3.Llama3:
    return randomize(llama3.Llama3(tunix_config(shape), rngs=nnx.Rngs(seed)), seed)


class ScalarHead(nnx.Module):
    """Tunix's Llama3 trunk (no LM head) with a d_model -> 1 head: PPO's critic / reward model."""

    def __init__(self, shape: dict, seed: int):
        config = dataclasses.replace(tunix_config(shape), weight_tying=True)
        self.config = config
        self.trunk = llama3.Llama3(config, rngs=nnx.Rngs(seed))
        self.head = nnx.Linear(config.embed_dim, 1, use_bias=False, rngs=nnx.Rngs(seed + 1))
        randomize(self, seed)

    def __call__(self, input_tokens, positions, cache, attention_mask, **unused):
        x = self.trunk.embedder.encode(input_tokens)
        for layer in self.trunk.layers:
            _, x = layer(x, positions, None, attention_mask)
        return self.head(self.trunk.final_norm(x)), None


def optimizer(lr: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.0))


def sft_trainer(a, shape):
    trainer = peft_trainer.PeftTrainer(policy(shape, 0), optimizer(a.lr),
                                       peft_trainer.TrainingConfig(eval_every_n_steps=10**9))

    def gen_model_input_fn(x):  # tunix/cli/peft_main.py's, pad id 256 instead of 0
        pad_mask = x.input_tokens != PAD
        return dict(input_tokens=x.input_tokens, input_mask=x.input_mask,
                    positions=sft_utils.build_positions_from_mask(pad_mask),
                    attention_mask=sft_utils.make_causal_attn_mask(pad_mask))

    trainer.with_gen_model_input_fn(gen_model_input_fn)
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 256, (a.batch, a.seq)).astype(np.int32)
    loss_mask = np.broadcast_to(np.arange(a.seq) >= a.prompt, tokens.shape).astype(np.int32)
    batch = peft_trainer.TrainingInput(input_tokens=jnp.asarray(tokens),
                                       input_mask=jnp.asarray(loss_mask))
    return trainer, batch


def dpo_trainer_(a, shape):
    config = dpo_trainer.DPOTrainingConfig(eval_every_n_steps=10**9, algorithm="dpo", beta=0.1)
    trainer = dpo_trainer.DPOTrainer(policy(shape, 0), policy(shape, 0), optimizer(a.lr), config)
    rng, response = np.random.RandomState(0), a.seq - a.prompt
    ids = lambda n: jnp.asarray(rng.randint(0, 256, (a.batch, n)).astype(np.int32))
    ones = lambda n: jnp.ones((a.batch, n), jnp.int32)
    batch = dpo_trainer.TrainingInput(
        prompt_ids=ids(a.prompt), prompt_mask=ones(a.prompt), chosen_ids=ids(response),
        chosen_mask=ones(response), rejected_ids=ids(response), rejected_mask=ones(response))
    return trainer, batch


def time_trainer(a, trainer, batch) -> dict:
    """The per-step work of ``PeftTrainer.train``, timed step by step, then ``train()`` itself."""
    step, _ = trainer.jit_train_and_eval_step(skip_jit=False, cache_nnx_graph=True)
    times, losses, out = [], [], {}
    for _ in range(a.warmup + a.steps):
        start = time.perf_counter()
        example = trainer._prepare_inputs(batch)  # pylint: disable=protected-access
        example = sharding_utils.shard_input(example, trainer.config.data_sharding_axis)
        loss, _, _ = step(example)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
        losses.append(loss)
    if a.stage == "dpo":  # the jitted step alone, reference log-probs prepared once (as ours)
        example, train = trainer._prepare_inputs(batch), []  # pylint: disable=protected-access
        for _ in range(a.steps):
            start = time.perf_counter()
            step(example)[0].block_until_ready()
            train.append(time.perf_counter() - start)
        out = dict(train_step_s=statistics.median(train), min_train_step_s=min(train))
    start = time.perf_counter()
    trainer.train([batch] * a.steps)  # Tunix's loop (reuses the compiled step); closes itself
    loop = (time.perf_counter() - start) / a.steps
    return dict(step_s=statistics.median(times[a.warmup:]), min_step_s=min(times[a.warmup:]),
                first_step_s=times[0], loop_step_s=loop, **out,
                times_s=[round(t, 4) for t in times],
                first_loss=float(losses[0]), last_loss=float(losses[-1]))


class IdTokenizer:
    """Text = decimal token ids joined by spaces, so that Tunix's text prompts round-trip."""

    def __init__(self, special: int):
        self.special = special

    def encode(self, text, **unused):
        return [int(t) for t in text.split()]

    def decode(self, ids, **unused):
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self):
        return None

    def eos_id(self):
        return self.special

    def pad_id(self):
        return self.special


def time_ppo(a, shape) -> dict:
    from tunix.rl import rl_cluster as rlc
    from tunix.rl.ppo import ppo_learner
    from tunix.rl.rollout import base_rollout

    n = 1 + a.warmup + a.steps
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))  # Auto axes
    rollout = base_rollout.RolloutConfig(
        max_tokens_to_generate=a.new_tokens, temperature=1.0, top_p=1.0, top_k=None,
        max_prompt_length=a.prompt_len, kv_cache_size=a.prompt_len + a.new_tokens)
    training = rlc.RLTrainingConfig(
        actor_optimizer=optimizer(a.lr), critic_optimizer=optimizer(a.lr),
        eval_every_n_steps=10**9, max_steps=n, mini_batch_size=a.prompts)
    cluster = rlc.RLCluster(
        actor=policy(shape, 0), reference=policy(shape, 0), critic=ScalarHead(shape, 1),
        reward=ScalarHead(shape, 3), tokenizer=IdTokenizer(shape["vocab_size"]),
        cluster_config=rlc.ClusterConfig(role_to_mesh={r: mesh for r in rlc.Role},
                                         rollout_engine="vanilla", offload_to_cpu=False,
                                         training_config=training, rollout_config=rollout))
    learner = ppo_learner.PPOLearner(cluster, ppo_learner.PPOConfig(num_iterations=1))

    buckets = {k: [0.0] * n for k in ("generate", "advantage", "actor", "critic", "sync", "step")}
    index = [0]

    def timed(obj, name, bucket):  # seconds per iteration; sync_weights follows its step
        inner = getattr(obj, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                i = index[0] - 1 if bucket == "sync" else index[0]
                buckets[bucket][i] += time.perf_counter() - start
                index[0] += bucket == "step"
        setattr(obj, name, wrapper)

    for obj, name, bucket in [
            (cluster, "generate", "generate"), (cluster, "update_actor", "actor"),
            (cluster, "update_critic", "critic"), (cluster, "sync_weights", "sync"),
            (learner, "_generate_and_compute_advantage", "advantage"),
            (learner, "_run_global_step", "step")]:
        timed(obj, name, bucket)
    ids = np.random.RandomState(0).randint(0, 256, (a.prompts, a.prompt_len))
    prompts = [IdTokenizer(0).decode(row) for row in ids]
    learner.train([{"prompts": np.array(prompts)}] * n)  # as a grain / numpy batch
    assert index[0] == n, (index[0], n)
    print("tunix_peer buckets (s per iteration):", json.dumps(buckets), file=sys.stderr)
    it = [s + y for s, y in zip(buckets["step"], buckets["sync"])]
    last = slice(n - a.steps, n)
    med = lambda xs: statistics.median(xs[last])
    history = lambda role: cluster._rl_metrics_logger.get_metric_history(role, "loss", "train")
    actor, critic = history("actor"), history("critic")
    return dict(step_s=med(it), min_step_s=min(it[last]), first_step_s=it[0],
                generate_s=med(buckets["generate"]),
                score_s=med([v - g for v, g in zip(buckets["advantage"], buckets["generate"])]),
                train_s=med([x + c for x, c in zip(buckets["actor"], buckets["critic"])]),
                sync_s=med(buckets["sync"]), weight_sync=learner.should_sync_weights,
                times_s=[round(t, 4) for t in it], episodes_per_iteration=a.prompts,
                first_loss=float(actor[0]), last_loss=float(actor[-1]),
                first_value_loss=float(critic[0]), last_value_loss=float(critic[-1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["sft", "dpo", "ppo"], required=True)
    p.add_argument("--model_json", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps (ppo: iterations)")
    p.add_argument("--iterations", type=int, default=None, help="ppo: alias of --steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32"])
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt_len", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    a = p.parse_args()
    if a.iterations is not None:
        a.steps = a.iterations
    shape = json.loads(a.model_json)
    if a.stage == "ppo":
        out = time_ppo(a, shape)
        what = (f"{a.prompts} prompts x {a.prompt_len} tokens, {a.new_tokens} new tokens; "
                "PPOLearner.train iteration (rollout + scoring + actor and critic steps)")
    else:
        out = time_trainer(a, *(sft_trainer if a.stage == "sft" else dpo_trainer_)(a, shape))
        what = (f"{a.batch} {'rows' if a.stage == 'sft' else 'pairs'} x {a.seq} tokens, "
                f"prompt {a.prompt}; step = _prepare_inputs + jitted PeftTrainer train step"
                + ("; train_step_s = jitted step alone, reference log-probs prepared once"
                   if a.stage == "dpo" else ""))
    notes = (f"{what}; steps={a.steps} warmup={a.warmup}; float32; lr={a.lr}; "
             f"devices={jax.devices()}; weights N(0, 0.02^2) (Tunix zero-inits the MLP); "
             "Tunix apply_rope ignores rope_theta (uses 1e6)")
    print(json.dumps(dict(stage=a.stage, tunix_version=importlib.metadata.version("google-tunix"),
                          jax_version=jax.__version__, **out, notes=notes)), flush=True)


if __name__ == "__main__":
    main()
