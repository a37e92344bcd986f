"""Seconds per PPO iteration, split into generation, scoring and training, beside TRL.

    python -m benchmarks.ppo --models=tiny,small --dtypes=float32,bfloat16
    python -m benchmarks.ppo --peer_ppo_python=/work/venvs/trl_ppo/bin/python   # + TRL's PPO
    python -m benchmarks.ppo --models=small --dtypes=float32 --peers=ppo,tunix

One iteration: 16 prompts of exactly 64 random tokens, 64 new tokens sampled at temperature 1
with no stop token (every response is 64 tokens), scoring (policy, value, reference and reward
forward passes, KL-shaped rewards, GAE) and one PPO epoch over the batch in one minibatch.
Random weights of the preset (``configs/models.py``): the policy and the reference are the
same model, the reward model and the value function share its trunk with a new scalar head.
Our side runs as ``run_ppo`` does: the sampler, then scoring and the update in one program
(``scored_ppo_update``: one epoch of one minibatch, whose first update's forward pass is
scoring's), or with ``--nofuse_scoring`` ``Rollout`` and ``ppo_update`` apart; each call is
timed with ``block_until_ready``; the figure is the median over ``--iterations`` after ``--warmup``
iterations (compilation excluded, reported separately); with ``--rounds`` N each side runs N
times in turn, its figures are its median round's and ``speedup`` is the median of the ratios
within each round (``benchmarks/rounds.py``). TRL runs ``benchmarks/ppo_peer.py`` in
a subprocess on the same HF export of the weights, with ``--threads`` torch threads:

* RLOO (TRL 1.16's ``RLOOTrainer``): 2 generations per prompt, so 32 episodes per iteration;
  our side is timed on the same 32 episodes (each prompt twice) for this pair.
* PPO (``PPOTrainer`` of an older TRL in its own virtualenv, see ``ppo_peer.py``): 16 episodes.
* Tunix (Google's JAX library: its PPO learner with a separate critic and reward model, in
  its own virtualenv, ``benchmarks/tunix_peer.py --stage=ppo``): 16 episodes, float32 only.

``--old_logprobs`` (two programs only; one program takes them from its own forward pass):
``PPOConfig.old_logprobs``; ``auto`` takes the sampler's log-probs in float32 (equal to the
forward pass's within 1e-5, and what TRL's PPOTrainer does: its old log-probs come from
``generate``'s scores) and runs the exact forward pass in bfloat16.

``--value=reward`` (the default, the paper's) trains a separate value model; RLOO has none, so
``--value=shared`` (a value head on the policy trunk) times ours with RLOO's amount of work.

``float32``: both sides in float32. ``bfloat16``: each side's best mixed precision on CPU (bf16
compute with float32 parameters and accumulation for us, ``bf16=True`` autocast for TRL). The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import rounds, train_steps
from configs.models import get_config
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from rlhf_jax.sampling import SamplingConfig
from rlhf_jax.train.actor_critic import ActorCritic, shared_value_head
from rlhf_jax.train.optim import OptimizerConfig
from rlhf_jax.train.ppo import init_ppo_state, ppo_optimizer, ppo_update, scored_ppo_update
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import Rollout, reward_model_fn

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``python -m benchmarks.ppo``, defined only when it runs as the main
    module, so that other benchmarks can import its functions."""
    flags.DEFINE_list("models", ["tiny", "small"], "model presets in configs/models.py")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes (see the module docstring)")
    flags.DEFINE_integer("prompts", 16, "prompts per iteration")
    flags.DEFINE_integer("prompt_len", 64, "tokens per prompt")
    flags.DEFINE_integer("new_tokens", 64, "tokens per response")
    flags.DEFINE_integer("iterations", 3, "timed iterations per side")
    flags.DEFINE_integer("warmup", 1, "untimed iterations after compilation")
    flags.DEFINE_integer("rounds", 1, "times each side runs, in turn (benchmarks/rounds.py)")
    flags.DEFINE_integer("threads", 2, "torch threads")
    flags.DEFINE_list("peers", ["rloo", "ppo", "tunix"],
                      "beside ours: TRL's RLOOTrainer, TRL 1.12's PPOTrainer, Tunix's PPO learner")
    flags.DEFINE_string("tunix_python", "/work/venvs/tunix/bin/python",
                        "interpreter of the virtualenv with google-tunix (benchmarks/tunix_peer.py)")
    flags.DEFINE_enum("value", "reward", ["reward", "shared"],
                      "our value function: a separate model (the paper) or a head on the policy trunk")
    flags.DEFINE_enum("old_logprobs", "auto", ["auto", "forward", "sampler"],
                      "PPOConfig.old_logprobs; auto: the sampler's in float32 (equal to rounding), "
                      "a forward pass in bfloat16")
    flags.DEFINE_bool("fuse_scoring", True, "PPOConfig.fuse_scoring: scoring and the update in "
                      "one program (one forward pass of policy and value fewer)")
    flags.DEFINE_bool("skip_peers", False, "time our side only (no TRL, no Tunix)")
    flags.DEFINE_string("peer_ppo_python", "/work/venvs/trl_ppo/bin/python",
                        "interpreter of the virtualenv with the older TRL that has PPOTrainer")
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ppo_peer.py")


def models_of(config: ModelConfig):
    """``(config, policy, reward)``: random policy params, and a reward model on the same trunk
    with a new scalar head."""
    x = np.zeros((1, 8), np.int32)
    # Jitted, so XLA drops the forward pass ``init`` runs (its output is unused): eagerly, the
    # layer scan is compiled (on a GPU, autotuned) with it: slow at 1B with the layers unrolled.
    policy = nn.meta.unbox(jax.jit(CausalLM(config).init)(jax.random.key(0), x)["params"])
    reward = nn.meta.unbox(jax.jit(ScalarHeadModel(config).init)(jax.random.key(1), x)["params"])
    reward = dict(reward, trunk=policy["trunk"])
    return config, policy, reward


@dataclasses.dataclass(frozen=True)
class Iteration:
    """The work of one timed iteration: prompts × generations episodes of prompt_len +
    new_tokens tokens; ``value``: "reward" (a separate value model) or "shared" (a head on the
    policy trunk); ``old_logprobs``: ``PPOConfig.old_logprobs``."""

    prompts: int = 16
    prompt_len: int = 64
    new_tokens: int = 64
    generations: int = 1
    value: str = "reward"
    old_logprobs: str = "forward"
    fuse_scoring: bool = True


def time_ours(config, policy, reward, work: Iteration, iterations: int, warmup: int) -> dict:
    """Median seconds of our iteration over ``iterations`` after the first (compiling) one and
    ``warmup`` more, split into generation and scoring with training (``score_train_s``: one
    program, ``scored_ppo_update``), and with ``fuse_scoring=False`` scoring and training apart
    (``score_s``, ``train_s``, two programs)."""
    settings = PPOConfig(minibatches=1, epochs=1, old_logprobs=work.old_logprobs,
                         fuse_scoring=work.fuse_scoring)
    shared = work.value == "shared"
    actor_critic = ActorCritic(CausalLM(config), None if shared else ScalarHeadModel(config))
    sampling = SamplingConfig(max_new_tokens=work.new_tokens, pad_token=0,
                              prompt_buckets=(work.prompt_len,))
    rollout = Rollout(actor_critic, CausalLM(config), reward_model_fn(ScalarHeadModel(config)),
                      settings, sampling)
    optimizer = OptimizerConfig(1e-6, 10_000, final_fraction=1.0)
    # Jitted, so the state owns fresh buffers (the update donates them).
    state = jax.jit(functools.partial(init_ppo_state, tx=ppo_optimizer(optimizer, optimizer),
                                      config=settings))(
        dict(policy=policy, value=shared_value_head(config.d_model) if shared else reward))
    reference = jax.tree.map(jnp.copy, policy)
    update = jax.jit(functools.partial(ppo_update, models=actor_critic, config=settings),
                     donate_argnums=0)
    scored_update = jax.jit(functools.partial(
        scored_ppo_update, models=actor_critic, reference=rollout.reference,
        reward_fn=rollout.reward_fn, config=settings, stop_tokens=sampling.stop_tokens),
        donate_argnums=0)
    ids = np.random.RandomState(0).randint(0, 256, (work.prompts, work.prompt_len))
    ids = np.repeat(ids, work.generations, axis=0).astype(np.int32)
    mask = np.ones_like(ids)
    rows = []
    for i in range(1 + warmup + iterations):
        began = time.perf_counter()
        if settings.scores_in_update:
            samples, generate_s = rollout.sample(state.train.params, ids, mask, jax.random.key(i))
            state, _, _ = jax.block_until_ready(scored_update(
                state, reference, reward, samples, None, jax.random.key(1000 + i)))
            row = dict(generate_s=generate_s)
        else:
            experience, metrics = rollout(state.train.params, reference, reward, ids, mask,
                                          jax.random.key(i), state.kl_coef)
            trained = time.perf_counter()
            state, _ = update(state, experience, None, jax.random.key(1000 + i))
            jax.block_until_ready(state)
            row = dict(generate_s=metrics["generate_s"], score_s=metrics["score_s"],
                       train_s=time.perf_counter() - trained)
        row["iteration_s"] = time.perf_counter() - began
        row["score_train_s"] = row["iteration_s"] - row["generate_s"]
        rows.append(row)
    timed = rows[1 + warmup:]
    out = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    out["first_iteration_s"] = rows[0]["iteration_s"]  # compilation included
    out["episodes"] = len(ids)
    return out


def time_tunix(config: ModelConfig) -> dict:
    """Tunix's PPO learner on the same work (``benchmarks/tunix_peer.py --stage=ppo``), with
    TRL's keys for its figures."""
    r = train_steps.run_tunix(FLAGS.tunix_python, config, "ppo", prompts=FLAGS.prompts,
                              prompt_len=FLAGS.prompt_len, new_tokens=FLAGS.new_tokens,
                              steps=FLAGS.iterations, warmup=FLAGS.warmup, lr=1e-6)
    if "step_s" in r:
        r["seconds_per_iteration"] = r["step_s"]
    return r


def time_peer(trainer: str, directory: str, dtype: str) -> dict:
    python = sys.executable if trainer == "rloo" else FLAGS.peer_ppo_python
    if not os.path.exists(python):
        return dict(error=f"{python} not found (see benchmarks/ppo_peer.py for its setup)")
    command = [python, PEER, f"--trainer={trainer}", f"--policy={directory}", f"--dtype={dtype}",
               f"--iterations={FLAGS.iterations}", f"--warmup={FLAGS.warmup}",
               f"--threads={FLAGS.threads}", f"--prompts={FLAGS.prompts}",
               f"--prompt_len={FLAGS.prompt_len}", f"--new_tokens={FLAGS.new_tokens}",
               "--generations=2"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return dict(error=done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    results = []
    for preset in FLAGS.models:
        for dtype in FLAGS.dtypes:
            config, policy, reward = models_of(
                ModelConfig.from_dict(dict(get_config(preset), dtype=dtype)))
            row = dict(model=preset, dtype=dtype)
            with tempfile.TemporaryDirectory() as directory:
                export_hf(config.replace(dtype="float32"), policy, directory, byte_tokenizer())
                old_logprobs = FLAGS.old_logprobs
                if old_logprobs == "auto":
                    old_logprobs = "sampler" if dtype == "float32" else "forward"
                for peer in FLAGS.peers:
                    work = Iteration(FLAGS.prompts, FLAGS.prompt_len, FLAGS.new_tokens,
                                     2 if peer == "rloo" else 1, FLAGS.value, old_logprobs,
                                     FLAGS.fuse_scoring)
                    runners = {"ours": functools.partial(time_ours, config, policy, reward, work,
                                                         FLAGS.iterations, FLAGS.warmup)}
                    if peer == "tunix" and dtype == "float32" and not FLAGS.skip_peers:
                        runners["theirs"] = functools.partial(time_tunix, config)
                    elif peer != "tunix" and not FLAGS.skip_peers:
                        runners["theirs"] = functools.partial(time_peer, peer, directory, dtype)
                    runs = rounds.alternate(runners, FLAGS.rounds)
                    ours = rounds.median_round(runs["ours"], "iteration_s")
                    theirs = (rounds.median_round(runs["theirs"], "seconds_per_iteration")
                              if "theirs" in runs else {})
                    row[peer] = dict(ours=ours, theirs=theirs)
                    if "seconds_per_iteration" in theirs:
                        row[peer]["speedup"] = rounds.paired_ratio(
                            runs["ours"], runs["theirs"], "iteration_s", "seconds_per_iteration")
                    print(json.dumps(dict(model=preset, dtype=dtype, peer=peer, value=FLAGS.value,
                                          old_logprobs=old_logprobs,
                                          fuse_scoring=FLAGS.fuse_scoring, **row[peer])),
                          flush=True)
            results.append(row)
    print(json.dumps(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
