"""Whole-config checks, run before any data is prepared or any model is loaded.

``validate_stage(config)`` checks one stage's config (``configs/sft.py``,
``configs/rm.py``, ``configs/ppo.py``), ``validate_pipeline(config)`` the whole
InstructGPT config (``configs/instructgpt.py``) with every stage section in it.
The first problem found raises ``ConfigError`` (or ``MissingFileError`` for a
path), naming the key, its value and what is allowed::

    config.ppo.sampling.top_p=1.5: must be in (0, 1]

Both take a ConfigDict or its typed settings (``pipeline.settings``, which checks
fields and types: ml_collections has already refused an unknown field or a
string for an int on the command line, ``--config.x=ture`` for a bool); this
module checks ranges, choices, the relations between fields (minibatches that
divide the batch, prompt plus response within the model's context, mesh sizes
that divide the devices) and that the named files exist.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional

import jax

from rlhf_jax import parallel
from rlhf_jax.checkpoints import read_model_config
from rlhf_jax.checkpoints.scalar_model import CONFIG_FILE
from rlhf_jax.data.records import MAX_K, MIN_K
from rlhf_jax.errors import ConfigError, MissingFileError
from rlhf_jax.models.config import DTYPES
from rlhf_jax.pipeline.inputs import IMPORTERS
from rlhf_jax.pipeline.layout import METHODS
from rlhf_jax.pipeline.settings import settings
from rlhf_jax.rl.advantages import GROUPED
from rlhf_jax.rl.preference import LOSSES
from rlhf_jax.train.optim import DECAY

STAGES = ("pretrain", "sft", "rm", "ppo", "dpo")
ON_ERROR = ("raise", "skip")
VALUE_INITS = ("reward", "policy", "shared")  # see pipeline/ppo.py:_value


class Section:
    """One config group and its dotted name, with the checks every group needs."""

    def __init__(self, config, name: str):
        self.config, self.name = config, name

    def __getitem__(self, key: str) -> "Section":
        return Section(getattr(self.config, key), f"{self.name}.{key}")

    def value(self, key: str) -> Any:
        return getattr(self.config, key)

    def need(self, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
        value = getattr(self.config, key)
        if not ok(value):
            raise ConfigError(f"{self.name}.{key}={value!r}: {allowed}")

    def positive(self, *keys: str) -> None:
        for key in keys:
            self.need(key, lambda v: v > 0, "must be positive")

    def non_negative(self, *keys: str) -> None:
        for key in keys:
            self.need(key, lambda v: v >= 0, "must be >= 0")

    def within(self, key: str, low: float, high: float, closed: str = "[]") -> None:
        above = (lambda v: v >= low) if closed[0] == "[" else (lambda v: v > low)
        below = (lambda v: v <= high) if closed[1] == "]" else (lambda v: v < high)
        self.need(key, lambda v: above(v) and below(v), f"must be in {closed[0]}{low}, {high}{closed[1]}")

    def choice(self, key: str, options) -> None:
        self.need(key, lambda v: v in options, f"must be one of {tuple(options)}")

    def path(self, key: str) -> None:
        """An optional path ("" = not given) that must exist when given."""
        value = getattr(self.config, key)
        if value and not os.path.exists(value):
            raise MissingFileError(f"{self.name}.{key}={value!r}: no such file or directory")


def validate_stage(config, name: str = "config", paths: bool = True,
                   context: Optional[int] = None) -> None:
    """Checks a stage config. ``paths=False`` skips the data and model paths (the pipeline
    fills them in later); ``context`` is the model's length limit when known (else read from
    ``config.init`` or ``config.model``)."""
    c = Section(settings(config), name)
    c.choice("stage", STAGES)
    context = context or _context(c, paths)
    _common(c, paths)
    if config.stage == "ppo":
        _ppo(c, paths, context)
        return
    c.positive("epochs")
    c.non_negative("steps")
    _records(c["data"], paths)
    c["data"].positive("max_len")
    c["data"].need("max_len", lambda v: v <= context,
                   f"must be at most the model's context of {context} tokens")
    _optimizer(c["optimizer"])
    c["optimizer"].non_negative("warmup_steps")
    if config.stage in ("rm", "dpo"):
        c["data"].within("k_max", MIN_K, MAX_K)
        c["data"].non_negative("max_prompt_len")
        max_len = c["data"].value("max_len")
        c["data"].need("max_prompt_len", lambda v: v < max_len,
                       f"must be less than data.max_len={max_len} (the responses get the rest)")
    if config.stage == "rm":
        _records(c["normalize"], paths)
        c["normalize"].positive("max_records")
    elif config.stage == "dpo":
        d = c["dpo"]
        d.positive("beta")
        d.choice("loss", LOSSES)
        d.within("label_smoothing", 0, 0.5, "[)")
    else:
        c["data"].choice("kind", ("pretrain",) if config.stage == "pretrain" else
                         ("demonstration", "pretrain"))


def validate_pipeline(config) -> None:
    """Checks the whole InstructGPT config, every stage section included."""
    config = settings(config)
    c = Section(config, "config")
    c.non_negative("seed", "ptx_coef")
    c.positive("rounds")
    world, data = c["world"], c["data"]
    world.positive("users", "demonstrations", "rm_prompts", "ppo_prompts", "eval_prompts",
                   "pretraining")
    data.choice("format", sorted(IMPORTERS))
    for key in ("comparisons", "demonstrations", "pretraining"):
        data.path(key)
    c["base"].path("init")
    if not config.world.enabled:
        data.need("comparisons", bool, "must name a comparisons file when world.enabled=False")
        c["base"].need("init", bool, "must name a pretrained model when world.enabled=False")
        c.need("rounds", lambda v: v == 1, "must be 1 without simulated labelers (world.enabled"
               "=False): later rounds need labelers for the new comparisons")
    if config.world.enabled:  # the comparisons are sampled and ranked in the world
        k = c["comparisons"]
        k.within("k_min", MIN_K, MAX_K)
        k.need("k_max", lambda v: config.comparisons.k_min <= v <= config.rm.data.k_max,
               f"must be in [comparisons.k_min, rm.data.k_max] = [{config.comparisons.k_min}, "
               f"{config.rm.data.k_max}]")
        k.non_negative("temperature")
        k.positive("max_new_tokens", "batch_size")
    e = c["evaluation"]
    e.non_negative("temperature", "fewshot", "shown_prompts")
    e.positive("max_new_tokens", "best_of_n", "batch_size")
    e.need("dtype", lambda v: v in DTYPES, f"must be one of {DTYPES}")
    if config.base.init:
        context = read_model_config(config.base.init).max_seq_len
    else:
        validate_stage(config.pretrain, "config.pretrain", paths=False)
        context = config.pretrain.model.max_seq_len
    for stage in ("sft", "rm", "ppo", "dpo"):
        validate_stage(getattr(config, stage), f"config.{stage}", paths=False, context=context)
    c.need("methods", lambda v: set(v) <= set(METHODS) and len(set(v)) == len(v),
           f"must be distinct names among {METHODS}")
    if set(config.methods) & set(GROUPED):
        k = config.samples_per_prompt
        c.need("samples_per_prompt", lambda v: v >= 2, "must be >= 2: rloo and grpo compare the "
               "samples of a prompt")
        c.need("samples_per_prompt", lambda v: config.ppo.batch_size % v == 0,
               f"must divide ppo.batch_size={config.ppo.batch_size} (a critic-free row samples "
               f"{k} responses of each of batch_size / {k} prompts)")


def _context(c: Section, paths: bool) -> int:
    init = c.value("init")
    if init and paths:
        c.path("init")
        return read_model_config(init).max_seq_len
    return c.value("model").max_seq_len


def _common(c: Section, paths: bool) -> None:
    c.non_negative("seed")
    if paths:
        c.path("init")
    _mesh(c["mesh"])
    c.positive("batch_size", "save_every", "keep_checkpoints", "log_every")
    c.non_negative("eval_every")
    c.need("profile_steps", lambda v: len(v) == 2 and all(isinstance(s, int) for s in v) and
           (tuple(v) == (0, 0) or 1 <= v[0] <= v[1]),
           "must be (first, last) steps with 1 <= first <= last, or (0, 0) for no trace "
           "(on the command line: --config.profile_steps=5,7)")
    processes = jax.process_count()
    c.need("batch_size", lambda v: v % processes == 0,
           f"must split evenly over the {processes} processes")
    if c.value("stage") != "ppo":  # PPO's microbatches split its minibatches (_ppo)
        local = c.value("batch_size") // processes
        c.positive("microbatches")
        c.need("microbatches", lambda v: local % v == 0,
               f"must divide each process's batch of {local} rows")


def _mesh(m: Section) -> None:
    for axis in ("data", "fsdp", "tensor"):
        m.need(axis, lambda v: v == -1 or v >= 1, "must be -1 (fill) or a positive integer")
    m.choice("rules", sorted(parallel.RULES))
    available = jax.device_count()
    m.need("devices", lambda v: 0 <= v <= available,
           f"must be in [0, {available}] (0: all {available} devices)")
    if jax.process_count() > 1:  # a mesh must hold devices of every process
        m.need("devices", lambda v: v == 0,
               f"must be 0: a run on {jax.process_count()} processes uses every device")
    for rule in m.value("axis_rules"):
        m.need("axis_rules", lambda v: len(rule) == 2 and isinstance(rule[0], str),
               "must be pairs (logical axis name, mesh axes)")
    count = m.value("devices") or available
    sizes = (m.value("data"), m.value("fsdp"), m.value("tensor"))
    try:
        parallel.mesh_shape(*sizes, num_devices=count)
    except ValueError:
        raise ConfigError(f"{m.name}: data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]} do not "
                          f"fit {count} devices: their product (with -1 filled) must equal "
                          f"{count}") from None


def _records(d: Section, paths: bool) -> None:
    """A data section read with ``pipeline.data.prepare``."""
    d.non_negative("toy_records")
    d.choice("on_error", ON_ERROR)
    if paths:
        d.path("path")
        d.need("path", lambda v: v or d.value("toy_records") > 0,
               f"is empty: give a JSON Lines file of {d.value('kind')} records, or set "
               f"{d.name}.toy_records")
    d.need("split_fractions", lambda v: len(v) == 3 and min(v) >= 0 and
           math.isclose(sum(v), 1.0) and v[0] > 0 and v[1] > 0,
           "must be three fractions (train, validation, test) >= 0 summing to 1, with "
           "train and validation > 0")
    d.positive("max_prompt_tokens", "max_per_user")


def _optimizer(o: Section) -> None:
    o.positive("learning_rate")
    o.non_negative("weight_decay", "clip_norm")
    o.choice("decay", DECAY)
    o.within("final_fraction", 0, 1)
    o.within("b1", 0, 1, "[)")
    o.within("b2", 0, 1, "[)")


def _ppo(c: Section, paths: bool, context: int) -> None:
    config = c.config
    c.choice("value_init", VALUE_INITS)
    c.positive("iterations")
    c.non_negative("warmup_iterations")
    reward = c["reward"]
    reward.need("token_count", lambda v: v >= -1, "must be -1 (use reward.path) or a token id")
    if paths:
        reward.path("path")
        reward.need("path", lambda v: not v or os.path.isfile(os.path.join(v, CONFIG_FILE)),
                    f"has no {CONFIG_FILE}: not a reward model directory as the RM stage saves "
                    "it (RM_WORKDIR/reward_model)")
        if config.reward.token_count < 0:
            reward.need("path", bool, "is empty: give the reward model directory "
                        "(RM_WORKDIR/reward_model) or a toy reward.token_count >= 0")
        if config.value_init == "reward" and config.ppo.critic:
            reward.need("path", bool, "is empty, but value_init='reward' copies the reward "
                        "model; use value_init='policy' with the toy reward")
    _records(c["data"], paths)
    c["data"].positive("max_prompt_len")
    s = c["sampling"]
    s.non_negative("temperature", "top_k", "min_new_tokens")
    s.within("top_p", 0, 1, "(]")
    s.positive("max_new_tokens")
    s.need("min_new_tokens", lambda v: v <= config.sampling.max_new_tokens,
           f"must be at most sampling.max_new_tokens={config.sampling.max_new_tokens}")
    length = config.data.max_prompt_len + config.sampling.max_new_tokens
    c["data"].need("max_prompt_len", lambda v: length <= context,
                   f"plus sampling.max_new_tokens={config.sampling.max_new_tokens} is {length} "
                   f"tokens, more than the model's context of {context}")
    p = c["ppo"]
    p.positive("clip_ratio", "value_clip", "epochs", "minibatches", "microbatches")
    p.non_negative("value_coef", "entropy_coef", "missing_stop_penalty", "ptx_coef")
    p.within("gamma", 0, 1)
    p.within("lam", 0, 1)
    p.within("ema_decay", 0, 1, "[)")
    # advantage, samples_per_prompt and loss_aggregation: PPOConfig's own checks (settings)
    local = config.batch_size * config.ppo.samples_per_prompt // jax.process_count()
    p.need("minibatches", lambda v: local % v == 0,
           f"must divide each process's batch of {local} episodes (batch_size × "
           "samples_per_prompt)")
    p.need("microbatches", lambda v: (local // config.ppo.minibatches) % v == 0,
           f"must divide each minibatch of {local // config.ppo.minibatches} episodes")
    k = c["kl"]
    k.non_negative("init_coef", "target")
    k.positive("horizon")
    c.need("eval_prompts", lambda v: v >= config.batch_size and v % config.batch_size == 0,
           f"must be a positive multiple of batch_size={config.batch_size} (whole batches: a "
           "rollout's metrics are batch means)")
    _optimizer(c["optimizer"])
    _optimizer(c["value_optimizer"])
    ptx = c["ptx"]
    ptx.positive("max_len", "per_episode")
    ptx.need("max_len", lambda v: v <= context,
             f"must be at most the model's context of {context} tokens")
    if config.ppo.ptx_coef > 0:
        _records(ptx, paths)
    elif paths:
        ptx.path("path")
