"""Typed settings: a stage's (or the pipeline's) config as frozen dataclasses, made once.

Configs are ml_collections presets (``configs/``), overridable from the command
line; the library below the entry points takes these frozen, typed records
instead (flax lm1b's ``TransformerConfig`` pattern). ``settings(config)`` builds
the record a config describes (by its ``stage`` field, or the pipeline's), and
checks as it goes: every field present, no unknown field, and each value of its
field's type. Bools are strict (``1`` or ``"true"`` is no bool), an int is never
a bool, a float field takes an int. A mistake is a ``ConfigError`` naming the
key, the value and the type wanted. Ranges and relations between fields are
``validate``'s. Field meanings are documented beside their defaults in
``configs/``.

``with_fields(record, **{"data.path": p})`` is a copy with fields replaced, dotted
keys reaching into groups (how the pipeline fills in the paths between stages).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Optional, Union

from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig
from rlhf_jax.models.lora import LoraConfig
from rlhf_jax.train.dpo import DPOConfig
from rlhf_jax.train.ppo_config import PPOConfig


@dataclasses.dataclass(frozen=True)
class Mesh:
    data: int
    fsdp: int
    tensor: int
    devices: int
    rules: str
    axis_rules: tuple = ()


@dataclasses.dataclass(frozen=True)
class Distributed:
    coordinator: str = ""
    num_processes: int = 0
    process_id: int = -1


@dataclasses.dataclass(frozen=True)
class Records:
    """A data section read by ``pipeline.data.prepare``; each kind uses some of the fields."""

    kind: str
    path: str
    toy_records: int
    on_error: str
    chat: bool = True
    max_len: int = 0  # SFT: packed row length; RM: prompt + response; ptx: row length
    max_prompt_len: int = 0  # PPO prompts: left-padded to this; RM, DPO: > 0 computes a prompt once
    max_prompt_tokens: int = 1024
    max_per_user: int = 200
    split_fractions: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 0
    k_max: int = 9  # comparisons
    per_episode: int = 0  # ptx: pretraining rows per episode
    max_records: int = 0  # normalize: how many demonstrations to score


@dataclasses.dataclass(frozen=True)
class Optimizer:
    learning_rate: float
    final_fraction: float
    b1: float
    b2: float
    weight_decay: float
    clip_norm: float
    decay: str
    warmup_steps: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """What every stage's config holds: the model, mesh, data, optimizer and loop."""

    stage: str
    seed: int
    init: str
    model: ModelConfig  # architecture of a random init; dtypes, dropout and remat always apply
    lora: LoraConfig  # adapters on a frozen base; rank 0: full fine-tuning
    mesh: Mesh
    data: Records
    batch_size: int
    optimizer: Optimizer
    eval_every: int
    save_every: int
    keep_checkpoints: int
    log_every: int
    profile_steps: tuple
    distributed: Distributed = Distributed()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage(Run):
    """An SFT, pretraining or reward-model stage (``configs/sft.py``, ``configs/rm.py``)."""

    microbatches: int
    epochs: int
    steps: int
    normalize: Optional[Records] = None  # the RM's demonstrations to score 0 on average


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preference(Stage):
    """A direct-preference stage (``configs/dpo.py``): the policy from ranked comparisons."""

    dpo: DPOConfig


@dataclasses.dataclass(frozen=True)
class Reward:
    path: str
    token_count: int


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    min_new_tokens: int


@dataclasses.dataclass(frozen=True)
class KL:
    init_coef: float
    target: float
    horizon: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPO(Run):
    """A PPO or PPO-ptx stage (``configs/ppo.py``); its ``lora`` is the policy's adapters on the
    frozen SFT model (also the reference)."""

    reward: Reward
    value_init: str
    ptx: Records
    sampling: Sampling
    iterations: int
    ppo: PPOConfig  # its kl is the KL group's (``pipeline.ppo.ppo_config``)
    kl: KL
    warmup_iterations: int
    value_optimizer: Optimizer
    eval_prompts: int


@dataclasses.dataclass(frozen=True)
class World:
    enabled: bool
    seed: int
    users: int
    demonstrations: int
    rm_prompts: int
    ppo_prompts: int
    eval_prompts: int
    pretraining: int


@dataclasses.dataclass(frozen=True)
class RealData:
    format: str
    comparisons: str
    demonstrations: str
    pretraining: str


@dataclasses.dataclass(frozen=True)
class Base:
    init: str


@dataclasses.dataclass(frozen=True)
class Comparisons:
    k_min: int
    k_max: int
    temperature: float
    max_new_tokens: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class Evaluation:
    temperature: float
    max_new_tokens: int
    best_of_n: int
    fewshot: int
    batch_size: int
    shown_prompts: int
    sharded: bool
    dtype: str


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The whole InstructGPT pipeline (``configs/instructgpt.py``)."""

    seed: int
    rounds: int
    ptx_coef: float
    world: World
    data: RealData
    base: Base
    pretrain: Stage
    sft: Stage
    rm: Stage
    ppo: PPO
    dpo: Preference
    methods: tuple  # Figure 1's rows beyond the paper's (pipeline.layout.METHODS)
    samples_per_prompt: int  # of the rloo and grpo rows
    comparisons: Comparisons
    evaluation: Evaluation
    distributed: Distributed = Distributed()


STAGE_RECORDS = {"ppo": PPO, "dpo": Preference}  # the other stages are a plain ``Stage``


def settings(config) -> Union[Stage, PPO, Pipeline]:
    """The typed record of a config (a ConfigDict or a mapping); a record is returned as it is."""
    if dataclasses.is_dataclass(config):
        return config
    kind = Pipeline if "stage" not in config else STAGE_RECORDS.get(config["stage"], Stage)
    return typed(kind, config, "config")


def typed(kind, value, name: str):
    """``value`` as an instance of the annotation ``kind``, checked; ``name`` is its key."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:  # Optional[X]
        return None if value is None else typed(next(a for a in args if a is not type(None)),
                                                value, name)
    if dataclasses.is_dataclass(kind):
        return _record(kind, value, name)
    if kind is bool:
        _need(isinstance(value, bool), name, value, "True or False")
    elif kind is int:
        _need(isinstance(value, int) and not isinstance(value, bool), name, value, "an integer")
    elif kind is float:
        _need(isinstance(value, (int, float)) and not isinstance(value, bool), name, value,
              "a number")
        return float(value)
    elif kind is str:
        _need(isinstance(value, str), name, value, "a string")
    elif kind is tuple:
        _need(isinstance(value, (tuple, list)), name, value, "a tuple")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _record(kind, value, name: str):
    _need(hasattr(value, "keys"), name, value, "a group of fields")
    given = dict(value.items())
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown field; {name} has {sorted(fields)}")
    missing = [f for f, spec in fields.items() if f not in given and
               spec.default is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{name}.{missing[0]}: missing")
    values = {f: typed(hints[f], v, f"{name}.{f}") for f, v in given.items()}
    try:
        return kind(**values)
    except ValueError as e:  # a library record's own checks (ModelConfig, PPOConfig)
        raise ConfigError(f"{name}: {e}") from None


def _need(ok: bool, name: str, value, wanted: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: must be {wanted}")


def with_fields(record, **fields):
    """A copy of ``record`` with fields replaced; ``"a.b"`` keys reach into group ``a``."""
    groups: dict[str, dict] = {}
    own = {}
    for key, value in fields.items():
        head, _, rest = key.partition(".")
        if rest:
            groups.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    own.update({g: with_fields(getattr(record, g), **inner) for g, inner in groups.items()})
    return dataclasses.replace(record, **own)
