"""PPO and PPO-ptx presets: ``--config=configs/ppo.py:tiny`` or ``:smollm2``.

Give the SFT and reward-model stages' outputs:
``--config.init=SFT_WORKDIR/model --config.reward.path=RM_WORKDIR/reward_model``.
``--config.ppo.ptx_coef=0`` is plain PPO, > 0 PPO-ptx (the paper: 27.8). tiny:
the ``tiny`` model on toy prompts and pretraining text (a few minutes on 2 CPU
cores); smollm2: SmolLM2-135M-Instruct, bf16 compute, LoRA rank 8 on a bf16 base. The paper's settings are
the ``PPOConfig`` defaults (1 epoch of 8 minibatches, value LR 9e-6, EMA
0.992, β = 0.02, 8 pretraining rows per episode).
"""

from __future__ import annotations

import ml_collections

from configs import models
from configs.common import distributed, lora, parse_arg
from configs.sft import smollm2_path


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny", records=1200)
    c = ml_collections.ConfigDict()
    c.stage = "ppo"
    c.seed = 0  # parameters (random init), shuffling and sampling all derive from it
    c.init = ""  # the SFT policy (HF directory or .gguf), also the reference; "" = random `model`
    c.model = models.get_config("tiny")  # architecture for random init; dtypes/dropout always apply
    c.model.dropout_rate = 0.0
    # the policy's adapters on the frozen SFT model, which is also the reference (no copy); a
    # reward model trained with LoRA on the same `init` shares that base too (configs/common.py)
    c.lora = lora()
    c.reward = dict(
        path="",  # reward model directory (RM_WORKDIR/reward_model)
        token_count=-1,  # >= 0: a toy reward, the count of this token id in the response
    )
    c.value_init = "reward"  # value function: "reward" (copy of the RM), "policy" (policy trunk,
    # zero head) or "shared" (a head on the policy's own trunk, trained with it)
    c.mesh = dict(data=-1, fsdp=1, tensor=1, devices=0, rules="fsdp", axis_rules=())  # as in sft.py
    c.distributed = distributed()  # several processes (hosts): see configs/common.py
    c.data = dict(
        kind="prompt",
        path="",  # JSON Lines prompt records
        toy_records=0,  # > 0: generate this many toy prompts instead
        on_error="raise",
        chat=True,  # prompts rendered with the tokenizer's chat template
        max_prompt_len=64,  # prompts are left-padded (or cut from the left) to this many tokens
        max_prompt_tokens=1024,
        max_per_user=200,
        split_fractions=(0.8, 0.1, 0.1),
        split_seed=0,
    )
    c.ptx = dict(
        kind="pretrain",
        path="",  # JSON Lines pretraining text {"text"}: PPO-ptx's data, and the alignment-tax check
        toy_records=0,
        on_error="raise",
        max_len=64,  # tokens per packed pretraining row
        per_episode=8,  # pretraining rows per episode (the paper's mix)
        split_fractions=(0.9, 0.1, 0.0),
        split_seed=0,
    )
    c.sampling = dict(max_new_tokens=64, temperature=1.0, top_k=0, top_p=1.0, min_new_tokens=0)
    c.batch_size = 64  # prompts per iteration, global (× ppo.samples_per_prompt episodes)
    c.iterations = 100
    c.ppo = dict(clip_ratio=0.2, value_clip=0.2, value_coef=1.0, entropy_coef=0.0, gamma=1.0,
                 lam=0.95, whiten_advantages=True, whiten_scores=False, missing_stop_penalty=0.0,
                 ptx_coef=0.0, epochs=1, minibatches=8, microbatches=1, ema_decay=0.992,
                 # gae (a value function) or critic-free: rloo | grpo | reinforce_pp; rloo and
                 # grpo sample samples_per_prompt >= 2 responses per prompt (docs/ppo.md)
                 advantage="gae", samples_per_prompt=1,
                 loss_aggregation="token",  # or "sequence": each response's mean counts once
                 # "sampler": log π_old from the sampler, no policy forward pass at scoring
                 old_logprobs="forward",
                 # one minibatch of one microbatch: scoring and the update in one program that
                 # shares the policy and value forward pass (scored_ppo_update); false: two
                 fuse_scoring=True)
    c.kl = dict(init_coef=0.02, target=0.0, horizon=10000)  # target > 0: adaptive β
    c.warmup_iterations = 10  # linear LR warmup, then constant
    c.optimizer = dict(learning_rate=9.65e-6, final_fraction=1.0, b1=0.9, b2=0.95,
                       weight_decay=0.0, clip_norm=1.0, decay="kernels")  # the policy's AdamW
    c.value_optimizer = dict(learning_rate=9e-6, final_fraction=1.0, b1=0.9, b2=0.95,
                             weight_decay=0.0, clip_norm=1.0, decay="kernels")
    c.eval_prompts = 64  # validation prompts sampled at each evaluation
    c.eval_every = 10
    c.save_every = 10
    c.keep_checkpoints = 2
    c.log_every = 1  # iterations between metric fetches (as in configs/sft.py; each is long)
    c.profile_steps = (0, 0)  # iterations a..b traced to workdir/profile; (0, 0) = off
    c.data.toy_records = args.records
    if args.name == "tiny":
        c.ptx.toy_records = 2000
        c.ptx.per_episode = 2
        c.sampling.max_new_tokens = 48
        c.kl.init_coef = 0.1
        c.batch_size = 16
        c.iterations = 40
        c.ppo.minibatches = 2
        c.warmup_iterations = 2
        c.optimizer.learning_rate = 1e-4
        c.value_optimizer.learning_rate = 1e-4
        c.eval_prompts = 32
    elif args.name == "smollm2":
        c.init = smollm2_path()
        c.model.dtype = "bfloat16"
        c.model.param_dtype = "bfloat16"  # the frozen base; adapters and heads stay float32
        c.lora.rank = 8
        # adapters take larger steps than whole weights; 1e-4 barely moved the policy in the
        # pipeline's smollm2 run (docs/results/smollm2.md)
        c.optimizer.learning_rate = 2e-4
        c.value_optimizer.learning_rate = 2e-4
        c.data.max_prompt_len = 128
        c.ptx.toy_records = 2000
        c.ptx.max_len = 128
        c.batch_size = 16
        c.iterations = 20
        c.ppo.minibatches = 2
        c.ppo.microbatches = 4  # exact accumulation; the activations of 2 episodes at a time
        c.eval_prompts = 16
        c.eval_every = 5
        c.save_every = 5
    else:
        raise ValueError(f"unknown PPO preset {args.name!r}; choose tiny or smollm2")
    return c
