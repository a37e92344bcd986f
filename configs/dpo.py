"""Direct-preference presets: ``--config=configs/dpo.py:tiny`` or ``:smollm2``.

The policy learns from the reward model's data (K ranked responses per prompt)
with no reward model and no sampling: ``dpo.loss`` is ``dpo`` (every ranked pair
of a prompt, Rafailov et al. 2023), ``ipo``, ``cdpo`` (conservative, with
``label_smoothing``) or ``plackett_luce`` (the whole ranking at once). Start from
an SFT run with ``--config.init=SFT_WORKDIR/model``: it is also the reference
policy. tiny: a random ``tiny`` model on generated toy comparisons unless
``init`` is given; smollm2: SmolLM2-135M-Instruct, LoRA rank 8 on a frozen bf16
base (the reference is the base without adapters).
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg
from configs.sft import base, smollm2_path
from rlhf_jax.data.records import MAX_K


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny", records=2000)
    c = base("dpo", "comparison")
    c.data.toy_records = args.records
    c.data.k_max = MAX_K  # responses per prompt are padded to this many
    c.data.max_len = 160
    # > 0: each comparison's prompt is computed once, its K responses after it (the same
    # log-probs for P + K·R token passes instead of K·(P + R), the reference's too); prompts
    # get at most this many tokens (cut from the left), responses max_len − max_prompt_len
    c.data.max_prompt_len = 0
    c.dpo = dict(
        beta=0.1,  # β: implicit reward β·log(π/π_ref); larger keeps π closer to the reference
        loss="dpo",  # dpo | ipo | cdpo | plackett_luce (rl/preference.py)
        label_smoothing=0.0,  # cdpo: the assumed rate of flipped labels, in [0, 0.5)
    )
    if args.name == "tiny":
        c.data.k_max = 4
        c.optimizer.learning_rate = 1e-4
        c.optimizer.warmup_steps = 10
        c.eval_every = 50
    elif args.name == "smollm2":
        c.init = smollm2_path()
        c.model.dtype = "bfloat16"
        c.model.param_dtype = "bfloat16"  # the frozen base; adapters stay float32
        c.lora.rank = 8
        c.optimizer.learning_rate = 5e-5
        c.microbatches = 4  # as the RM: 8 prompts × up to 9 responses, 2 prompts at a time
        c.eval_every = 25
    else:
        raise ValueError(f"unknown DPO preset {args.name!r}; choose tiny or smollm2")
    return c
