"""What every stage does first, and what it reads from its config.

``start`` checks the whole config and makes the partitioner and the tokenizer;
``prepare`` readies a data section and prints what it kept; the others turn one
config group (``configs/sft.py``, ``configs/rm.py``, ``configs/ppo.py``) into
the object the library takes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from rlhf_jax import parallel
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.peft import export_peft, refusal
from rlhf_jax.errors import ConfigError
from rlhf_jax.feedback import toy
from rlhf_jax.files import write_jsonl
from rlhf_jax.models import ModelConfig
from rlhf_jax.models.lora import LoraConfig, combine, merge
from rlhf_jax.parallel import Partitioner
from rlhf_jax.pipeline import data, layout
from rlhf_jax.pipeline.loop import LoopConfig
from rlhf_jax.pipeline.settings import Records, settings
from rlhf_jax.pipeline.state import load_tokenizer_for
from rlhf_jax.pipeline.validate import validate_stage
from rlhf_jax.train.optim import OptimizerConfig


def optimizer_config(config, steps: int) -> OptimizerConfig:
    """The optimizer of a run of ``steps`` updates (from ``config.steps`` or the epochs)."""
    if steps <= config.optimizer.warmup_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={config.optimizer.warmup_steps}: must be "
                          f"fewer than the run's {steps} steps")
    return OptimizerConfig(total_steps=steps, **dataclasses.asdict(config.optimizer))


def loop_config(config, steps: int, unit: str) -> LoopConfig:
    return LoopConfig(steps=steps, eval_every=config.eval_every, save_every=config.save_every,
                      keep=config.keep_checkpoints, throughput_unit=unit, name=config.stage,
                      log_every=config.log_every, profile_steps=tuple(config.profile_steps))


def data_config(config, workdir: str, section: str = "data") -> Records:
    """``config[section]``, with ``path`` pointing at generated toy records when ``toy_records``
    is set (written once to ``workdir/toy/``, by process 0)."""
    section_config = getattr(config, section)
    if section_config.toy_records:
        kind = section_config.kind
        path = os.path.join(workdir, "toy", f"{kind}s.jsonl")

        def write():
            if not os.path.exists(path):
                write_jsonl(toy.GENERATORS[kind](section_config.toy_records, seed=config.seed),
                            path)

        parallel.on_process_zero(f"toy {section} records", write)
        section_config = dataclasses.replace(section_config, path=path)
    return section_config


def start(config) -> tuple[Any, Partitioner, Any]:
    """What every stage does first: its config as typed settings, checked whole (before any data
    or model is touched), then its partitioner and its tokenizer."""
    config = settings(config)
    validate_stage(config)
    return config, Partitioner.from_config(config.mesh), load_tokenizer_for(config)


def export_policy(model_config: ModelConfig, trainable, frozen, base_path: str, directory: str,
                  tokenizer) -> None:
    """A policy as a Hugging Face ``directory``, its adapters (if any) merged; with adapters,
    also the adapters alone in PEFT's format in ``directory + layout.ADAPTER_SUFFIX``, for the
    base ``base_path``, unless PEFT cannot hold them (a note says why)."""
    params = merge(combine(trainable, frozen), model_config.lora)
    export_hf(model_config.replace(lora=LoraConfig()), params, directory, tokenizer)
    if not model_config.lora.rank:
        return
    why = refusal(model_config)
    if why:
        if jax.process_index() == 0:
            print(f"[export] {directory}: adapters merged only, none in PEFT's format ({why})")
        return
    export_peft(model_config, trainable, directory + layout.ADAPTER_SUFFIX,
                os.path.abspath(base_path) if base_path else "")


def prepare(kind: str, config, workdir: str, tokenizer, section: str = "data") -> dict:
    """``{split: data source}`` of ``config[section]``'s records (``pipeline.data.prepare``);
    prints what the preparation kept and removed (also in ``workdir/data``)."""
    sources, report = data.prepare(kind, data_config(config, workdir, section), workdir, tokenizer)
    if jax.process_index() == 0:
        name = config.stage if section == "data" else f"{config.stage}/{section}"
        kept = {k: v for k, v in report.items() if k != "skipped_lines"}
        print(f"[{name}] data: {json.dumps(kept)}")
        for line in report.get("skipped_lines", []):
            print(f"[{name}] skipped: {line}")
    return sources
