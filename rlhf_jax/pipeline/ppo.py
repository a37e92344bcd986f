"""Step 3 of InstructGPT: PPO (and PPO-ptx) of the SFT policy against the frozen reward model.

``run_ppo(config, workdir)`` loads four models onto one mesh: the policy and
the reference (both from ``config.init``, the SFT model), the reward model
(``config.reward.path``, as ``run_reward`` saved it; or the toy reward
``config.reward.token_count``) and the value function (``config.value_init``:
a copy of the reward model, as in the paper, a scalar model on the policy's
trunk, or a head sharing the policy trunk). With ``config.lora.rank > 0`` one
frozen base serves them all: the reference is the SFT model as loaded (never
copied), the policy is it plus trained adapters, and a reward model trained
with LoRA on the same ``init`` (and a value function copied from it) runs on the
same arrays with adapters and a head of its own. Each iteration takes a batch of
prompts (and, for PPO-ptx, pretraining rows), runs ``Rollout`` and
``ppo_update``, and logs rollout, update and timing metrics. The checkpoint
holds the whole ``PPOState`` (the trainable params of policy and value, both
optimizers, EMA, KL coefficient; not the frozen base) with the data position; the randomness of iteration i is
``fold_in(key(seed), i)``, so a resumed run repeats an uninterrupted one. At
the end the policy and its EMA are exported as Hugging Face directories
``workdir/policy`` and ``workdir/policy_ema`` (adapters merged, and beside them,
alone, in PEFT's format).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import flax.linen as nn
import grain.experimental
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.checkpoints.scalar_model import (load_scalar_model, read_scalar_info,
                                               save_scalar_model)
from rlhf_jax.data.loaders import record_stream, sft_stream, split_records
from rlhf_jax.data.tokenize import (decode_responses, encode_prompt, encode_text, left_pad,
                                    stop_tokens)
from rlhf_jax.errors import UserError
from rlhf_jax.evaluation.batched import validation_loss
from rlhf_jax.models import CausalLM, ScalarHeadModel, lora
from rlhf_jax.parallel import Partitioner
from rlhf_jax.pipeline import layout, stage
from rlhf_jax.pipeline.loop import train
from rlhf_jax.pipeline.state import initial_weights
from rlhf_jax.rl.kl import KLController
from rlhf_jax.sampling import SamplingConfig
from rlhf_jax.train.actor_critic import ActorCritic, shared_value_head
from rlhf_jax.train.optim import OptimizerConfig
from rlhf_jax.train.ppo import (PPOState, init_ppo_state, ppo_optimizer, ppo_update,
                                scored_ppo_update)
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import Rollout, reward_model_fn, token_count_fn

Judge = Callable[[list[str], list[str]], dict[str, float]]


def ppo_config(config) -> PPOConfig:
    """The ``ppo`` group with the ``kl`` group's controller (target 0: a fixed β)."""
    kl = config.kl
    return dataclasses.replace(config.ppo, kl=KLController(kl.init_coef, kl.target or None,
                                                           kl.horizon))


def run_ppo(config, workdir: str, judge: Optional[Judge] = None) -> dict:
    """Runs ``config.iterations`` PPO iterations; returns the final validation metrics.

    ``judge(prompts, responses) -> {'judge/<name>': mean}``, if given, also
    rates the validation samples (for example gold scores of simulated
    labelers); its means are logged with the validation metrics."""
    config, partitioner, tokenizer = stage.start(config)
    settings = ppo_config(config)
    with partitioner.activate():
        prompts = stage.prepare("prompt", config, workdir, tokenizer)
        pretrain = (stage.prepare("pretrain", config, workdir, tokenizer, "ptx")
                    if config.ptx.path or config.ptx.toy_records else None)

        policy_config, base = _policy(config, partitioner)
        models, value, reward_fn, reward_params = _models(config, policy_config, base,
                                                          partitioner)
        reference = lora.base(base)  # the SFT policy as loaded: never trained, never copied
        policy_given, policy_frozen = lora.split(base, policy_config.lora)
        frozen = {k: v for k, v in (("policy", policy_frozen), ("value", value.frozen))
                  if v is not None}
        updates = config.iterations * settings.epochs * settings.minibatches
        tx = ppo_optimizer(_optimizer(config.optimizer, config, updates),
                           _optimizer(config.value_optimizer, config, updates))
        given = dict(policy=policy_given, **({"value": value.given} if models.critic else {}))
        state, abstract = _ppo_state(models, given, value.zero_head, tx, settings, partitioner,
                                     jax.random.key(config.seed))
        full = lambda params: lora.combine(params, frozen)

        rollout = Rollout(models, CausalLM(policy_config.replace(lora=lora.LoraConfig())),
                          reward_fn, settings, _sampling(config, tokenizer))
        update = partitioner.jit(functools.partial(ppo_update, models=models, config=settings),
                                 donate_argnums=0)
        scored_update = partitioner.jit(functools.partial(
            scored_ppo_update, models=models, reference=rollout.reference, reward_fn=reward_fn,
            config=settings, stop_tokens=rollout.sampling.stop_tokens), donate_argnums=0)
        use_ptx = settings.ptx_coef > 0

        def iteration(state, batch, rng):
            rng = jax.random.fold_in(rng, state.iteration)
            ptx = batch["ptx"] if use_ptx else None
            if settings.scores_in_update:  # one program scores and updates: score_train_s
                samples, generate_s = rollout.sample(full(state.train.params),
                                                     batch["prompt_ids"], batch["prompt_mask"],
                                                     jax.random.fold_in(rng, 0))
                began = time.perf_counter()
                state, _, metrics = scored_update(state, reference, reward_params, samples, ptx,
                                                  jax.random.fold_in(rng, 1), frozen)
                jax.block_until_ready(state)
                return state, dict(metrics, generate_s=generate_s,
                                   score_train_s=time.perf_counter() - began)
            experience, metrics = rollout(full(state.train.params), reference, reward_params,
                                          batch["prompt_ids"], batch["prompt_mask"],
                                          jax.random.fold_in(rng, 0), state.kl_coef)
            began = time.perf_counter()
            state, update_metrics = update(state, experience, ptx, jax.random.fold_in(rng, 1),
                                           frozen)
            jax.block_until_ready(state)
            metrics.update(update_metrics, train_s=time.perf_counter() - began)
            return state, metrics

        stream = _stream(config, tokenizer, prompts, pretrain if use_ptx else None)
        evaluate = _evaluator(config, rollout, reference, reward_params, prompts, pretrain,
                              tokenizer, partitioner, judge, full)
        state, validation = train(
            iteration, state, abstract, stream, jax.random.key(config.seed),
            config=stage.loop_config(config, config.iterations, "episodes"),
            workdir=workdir, partitioner=partitioner, evaluate=evaluate,
            count_units=lambda b: len(b["prompt_ids"]))
        _export(config, models, state, frozen, value.base_path, tokenizer, workdir)
        return validation


def _sampling(config, tokenizer) -> SamplingConfig:
    s = config.sampling
    return SamplingConfig.for_tokenizer(
        tokenizer, s.max_new_tokens, stop_tokens=stop_tokens(tokenizer, config.data.chat),
        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
        min_new_tokens=s.min_new_tokens, prompt_buckets=(config.data.max_prompt_len,))


def _stream(config, tokenizer, prompts: dict, pretrain: Optional[dict]):
    """Batches of ``batch_size`` prompts, each repeated ``ppo.samples_per_prompt`` times in a row
    (prompt-major); with ``pretrain``, each with ``ptx``: ``per_episode`` packed pretraining
    rows per prompt."""
    encode = functools.partial(_encode_prompt, tokenizer, config.data)
    stream = record_stream(prompts["train"], "prompt", encode, batch_size=config.batch_size,
                           seed=config.seed)
    k = config.ppo.samples_per_prompt
    if k > 1:
        stream = stream.map(lambda b: {name: np.repeat(v, k, axis=0) for name, v in b.items()})
    if pretrain is None:
        return stream
    ptx = sft_stream(pretrain["train"], functools.partial(_encode_text, tokenizer,
                                                          config.ptx.max_len),
                     batch_size=config.batch_size * config.ptx.per_episode,
                     row_len=config.ptx.max_len, seed=config.seed, kind="pretrain")
    return grain.experimental.ZipIterDataset([stream, ptx]).map(
        lambda pair: dict(pair[0], ptx=pair[1]))


def _export(config, models: ActorCritic, state: PPOState, frozen: dict, value_base: str,
            tokenizer, workdir: str) -> None:
    """The policy and its EMA as Hugging Face directories (adapters merged, and alone in PEFT's
    format), and the value model."""
    policy_config, params = models.policy.config, state.train.params
    for name, policy in ((layout.POLICY, params["policy"]), (layout.POLICY_EMA, state.ema)):
        stage.export_policy(policy_config, policy, frozen.get("policy"), config.init,
                            os.path.join(workdir, name), tokenizer)
    if models.value is not None:
        save_scalar_model(os.path.join(workdir, layout.VALUE_MODEL), models.value.config,
                          params["value"], dict(value_init=config.value_init), tokenizer,
                          frozen=frozen.get("value"), base=value_base)


def _optimizer(section, config, updates: int) -> OptimizerConfig:
    warmup = config.warmup_iterations * config.ppo.epochs * config.ppo.minibatches
    return OptimizerConfig(total_steps=max(updates, warmup + 1),
                           **dataclasses.asdict(dataclasses.replace(section, warmup_steps=warmup)))


def _ppo_state(models: ActorCritic, given: dict, zero_value_head: bool, tx,
               settings: PPOConfig, partitioner: Partitioner,
               rng: jax.Array) -> tuple[PPOState, PPOState]:
    """``(state, abstract)``: the PPO state of the trainable params, created directly in the
    shardings the rules give it (policy, value, both optimizers' moments and the EMA alike),
    read from the logical names of an abstract initialisation of the same models. Its
    trainable params are the leaves of ``given`` where it has them (copies: they will train),
    else the initialisation's (fresh adapters, with a zero value head if asked)."""
    example = np.zeros((1, 8), np.int32)

    def trainable(r):  # the trainable tree, with each leaf's logical axis names
        policy = lora.split(models.policy.init(r, example)["params"], models.policy.config.lora)
        if not models.critic:
            return dict(policy=policy[0])
        value = (lora.split(models.value.init(r, example)["params"], models.value.config.lora)[0]
                 if models.value is not None else shared_value_head(models.policy.config.d_model))
        return dict(policy=policy[0], value=value)

    def create(r, given):
        params = lora.combine(given, nn.meta.unbox(trainable(r)))
        if zero_value_head:
            params["value"]["head"] = jax.tree.map(jnp.zeros_like, params["value"]["head"])
        return init_ppo_state(params, tx, settings)

    abstract, shardings = partitioner.abstract(
        lambda r: init_ppo_state(trainable(r), tx, settings), rng)
    return partitioner.jit(create, out_shardings=shardings)(rng, given), abstract


def _policy(config, partitioner: Partitioner):
    """``(config, params)`` of the SFT policy (``config.init``; with ``init=''``, random weights
    of ``config.model``): the base, without adapters."""
    policy_config, params = initial_weights(config, partitioner)
    if params is None:
        base_config = policy_config.replace(lora=lora.LoraConfig())
        params, _ = partitioner.init(lambda r: CausalLM(base_config).init(
            r, np.zeros((1, 8), np.int32))["params"], jax.random.key(config.seed))
    return policy_config, params


@dataclasses.dataclass(frozen=True)
class Value:
    """How the value function starts: ``given`` trainable leaves (the rest initialised), the
    ``frozen`` params it runs on (None: it trains whole), whether its head starts at zero,
    and the checkpoint its frozen base comes from ("" if none, or random)."""

    given: dict
    frozen: Optional[dict] = None
    zero_head: bool = False
    base_path: str = ""


def _models(config, policy_config, base, partitioner: Partitioner):
    """``(ActorCritic, Value, reward_fn, reward params)``, as ``config.value_init`` (one of
    ``validate.VALUE_INITS``, checked at the start) and ``config.reward`` say; a critic-free
    ``config.ppo.advantage`` builds no value function (``value_init`` is then unused).

    A reward model trained with LoRA on this run's ``init`` runs on the policy's base arrays
    (``base``); so does a value function copied from it, or started from the policy with
    adapters. Otherwise each is a model of its own."""
    policy = CausalLM(policy_config)
    rm = _reward_model(config, base, partitioner)
    if config.reward.token_count >= 0:
        reward_fn, reward_params = token_count_fn(config.reward.token_count), None
    else:
        reward_fn, reward_params = reward_model_fn(ScalarHeadModel(rm[0])), rm[1]
    if not config.ppo.critic:  # RLOO, GRPO, REINFORCE++: no value function at all
        return ActorCritic(policy, None, critic=False), Value({}), reward_fn, reward_params
    if config.value_init == "shared":
        return ActorCritic(policy, None), Value({}), reward_fn, reward_params
    if config.value_init == "reward":
        value_config, params, info = rm
        given, frozen = lora.split(params, value_config.lora)
        return (ActorCritic(policy, ScalarHeadModel(value_config)),
                Value(given, frozen, base_path=info.get("base", "")), reward_fn, reward_params)
    # "policy": the policy's trunk (its adapters fresh) under a zero head
    given, frozen = lora.split({"trunk": base["trunk"]}, policy_config.lora)
    return (ActorCritic(policy, ScalarHeadModel(policy_config)),
            Value(given, frozen, zero_head=True, base_path=config.init if frozen else ""),
            reward_fn, reward_params)


def _reward_model(config, base, partitioner: Partitioner):
    """``(ModelConfig, params, info)`` of ``config.reward.path`` (None without one), on ``base``
    when it was trained with LoRA on this run's ``init``."""
    if not config.reward.path:
        return None
    _, info = read_scalar_info(config.reward.path)
    shared = bool(config.init) and info.get("base") == os.path.abspath(config.init)
    return load_scalar_model(config.reward.path, partitioner.mesh, partitioner.rules,
                             base=base if shared else None)


def _encode_prompt(tokenizer, data_config, record) -> dict:
    ids = encode_prompt(tokenizer, record.prompt, data_config.chat)
    prompt_ids, prompt_mask = left_pad(ids, data_config.max_prompt_len, tokenizer.pad_token_id or 0)
    return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask)


def _encode_text(tokenizer, max_len, record):
    return encode_text(tokenizer, record.text, max_len)


def _evaluator(config, rollout: Rollout, reference, reward_params, prompts, pretrain, tokenizer,
               partitioner: Partitioner, judge: Optional[Judge], full: Callable):
    """``evaluate(state)``: on the first ``config.eval_prompts`` validation prompts (whole
    batches), the rollout metrics of the policy (sampled with a fixed key) and the mean score of
    its EMA; with pretraining text, ``pretrain_loss`` of the policy on its validation split;
    with a ``judge``, its ratings of the policy's samples. ``full(trainable)``: the whole
    params, frozen base included."""
    batch = config.batch_size
    rollout = rollout.one_sample_per_prompt()  # the validation prompts are sampled once each
    records = split_records(prompts["validation"], "prompt")[:config.eval_prompts]
    if len(records) < batch:
        raise UserError(f"{len(records)} validation prompts, fewer than one batch (batch_size="
                        f"{config.batch_size}): add prompts to data.path or raise "
                        "data.split_fractions[1]")
    encoded = [_encode_prompt(tokenizer, config.data, r) for r in records]
    batches = [partitioner.shard_batch({k: np.stack([e[k] for e in encoded[i:i + batch]])
                                        for k in encoded[0]})
               for i in range(0, len(encoded) - batch + 1, batch)]
    pretrain_loss = None
    if pretrain is not None:
        texts = split_records(pretrain["validation"], "pretrain")
        pretrain_loss = validation_loss(
            CausalLM(rollout.policy_config),
            [encode_text(tokenizer, r.text, config.ptx.max_len) for r in texts],
            config.ptx.max_len, batch, partitioner)
    rng = jax.random.key(config.seed + 2)

    def evaluate(state) -> dict:
        sums: dict = {}
        counts: dict = {}  # rows with non-finite values, and rows in all (episodes)
        policy = full(state.train.params)
        # Before the first update the EMA is a copy of the policy: its rollout would repeat the
        # policy's (same params, same key), so its metrics are the policy's.
        ema_is_policy = int(state.iteration) == 0
        models = [("", policy)]
        if not ema_is_policy:
            models.append(("ema/", full(dict(state.train.params, policy=state.ema))))
        for i, b in enumerate(batches):
            for prefix, params in models:
                experience, m = rollout(params, reference, reward_params, b["prompt_ids"],
                                        b["prompt_mask"], jax.random.fold_in(rng, i),
                                        state.kl_coef)
                if judge is not None and not prefix:
                    m.update(judge([r.prompt for r in records[i * batch:(i + 1) * batch]],
                                   decode_responses(tokenizer, *parallel.to_host(
                                       (experience.response, experience.response_mask)))))
                keys = (*(k for k in ("score", "kl", "kl_exact_per_token", "entropy",
                                      "response_length") if k in m),
                        *(k for k in m if k.startswith("judge/")))
                for k in keys if not prefix else ("score", "kl"):
                    sums[prefix + k] = sums.get(prefix + k, 0.0) + float(m[k]) / len(batches)
                for k in (k for k in m if k.startswith("nonfinite/") or k == "episodes"):
                    counts[k] = counts.get(k, 0.0) + float(m[k])
        if ema_is_policy:
            sums.update({"ema/" + k: sums[k] for k in ("score", "kl")})
        if any(v for k, v in counts.items() if k != "episodes"):  # check_finite names them
            sums.update(counts)
        if pretrain_loss is not None:
            sums["pretrain_loss"] = pretrain_loss(policy["policy"])["loss"]
        return sums

    return evaluate
