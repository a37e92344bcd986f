"""Reward-model presets: ``--config=configs/rm.py:tiny`` or ``:smollm2``.

One epoch over K-wise comparisons (the paper's default), then the head's bias is
shifted so the demonstrations in ``normalize`` score 0 on average. tiny: a
random ``tiny`` model on generated toy comparisons (about a minute on 2 CPU
cores); smollm2: SmolLM2-135M-Instruct's trunk with a new scalar head, LoRA rank 8
on a frozen bf16 base. To start
from an SFT run, ``--config.init=SFT_WORKDIR/model``.
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg
from configs.sft import base, smollm2_path
from rlhf_jax.data.records import MAX_K


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny", records=2000)
    c = base("rm", "comparison")
    c.data.toy_records = args.records
    c.data.k_max = MAX_K  # responses per prompt are padded to this many
    c.data.max_len = 160
    # > 0: each comparison's prompt is computed once, its K responses after it (the same rewards
    # for P + K·R token passes instead of K·(P + R)); prompts get at most this many tokens
    # (cut from the left), responses max_len − max_prompt_len (cut from the right)
    c.data.max_prompt_len = 0
    c.normalize = dict(
        kind="demonstration",
        path="",  # demonstrations (the SFT data) that should score 0 on average
        toy_records=0,  # > 0: generated toy demonstrations
        on_error="raise",
        max_records=512,  # how many of them to score
    )
    c.normalize.toy_records = 256
    if args.name == "tiny":
        c.data.k_max = 4
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 10
        c.eval_every = 50
    elif args.name == "smollm2":
        c.init = smollm2_path()
        c.model.dtype = "bfloat16"
        c.model.param_dtype = "bfloat16"  # the frozen base; adapters and head stay float32
        c.lora.rank = 8
        c.optimizer.learning_rate = 1e-4  # full fine-tuning: 9e-6
        # 8 prompts × up to 9 responses in one step peaked at 17 GB in the pipeline; exact
        # accumulation over 4 microbatches holds 2 prompts' activations at a time
        c.microbatches = 4
        c.eval_every = 25
    else:
        raise ValueError(f"unknown RM preset {args.name!r}; choose tiny or smollm2")
    return c
