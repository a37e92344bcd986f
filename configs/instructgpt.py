"""The whole InstructGPT pipeline: ``--config=configs/instructgpt.py:<preset>``.

Presets:
- ``tiny`` (default): the simulated world (``rlhf_jax.feedback``) and a ``tiny``
  model pretrained on its corpus; about 6 minutes on a 2-core CPU.
- ``micro``: the same at the smallest sizes that run every stage (the tests);
  ``<preset>,micro=1`` shrinks any world preset so (``smollm2,micro=1``).
- ``smollm2``: the simulated world's prompts with SmolLM2-135M-Instruct (its GGUF)
  as the base model instead of pretraining one, LoRA rank 8 on one frozen bf16
  base; about an hour on a 2-core CPU (docs/results/smollm2.md).
- ``hh_rlhf`` / ``summarize``: real preference files in the Anthropic HH-RLHF or
  OpenAI summarize-from-feedback layout (``data.comparisons``) and a Hugging Face
  checkpoint directory (``base.init``), on every device of the mesh; without
  simulated labelers, the evaluation judges by the reward model.

Each stage's section is the full config of that stage (``configs/sft.py``,
``configs/rm.py``, ``configs/ppo.py``), so every field can be overridden:
``--config.ppo.iterations=20 --config.rm.optimizer.learning_rate=1e-4``. The
pipeline fills in the paths between stages (data files, ``init``, the reward
model). ``ptx_coef`` is γ of the PPO-ptx run (the paper: 27.8); the plain PPO
run uses 0.
"""

from __future__ import annotations

import ml_collections

from configs import dpo as dpo_presets
from configs import ppo as ppo_presets
from configs.common import distributed, parse_arg
from configs.rm import get_config as rm_config
from configs.sft import base as stage_base, smollm2_path

PRESETS = ("tiny", "micro", "smollm2", "hh_rlhf", "summarize")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, name="tiny", lora=-1, micro=False)
    if args.name not in PRESETS:
        raise ValueError(f"unknown pipeline preset {args.name!r}; choose one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.distributed = distributed()  # several processes (hosts): see configs/common.py
    c.rounds = 1  # > 1: new comparisons from the last PPO-ptx policy, a new RM and new PPO runs
    c.ptx_coef = 27.8  # γ of the PPO-ptx run
    c.world = dict(
        enabled=True,  # False: real data from `data` below, judged by the reward model
        seed=0, users=100,
        demonstrations=1600, rm_prompts=800, ppo_prompts=800, eval_prompts=128, pretraining=6000,
    )
    c.data = dict(
        format="jsonl",  # comparisons file layout: jsonl (ours), hh_rlhf or summarize
        comparisons="",  # real comparisons (the RM data; their best responses are the SFT data)
        demonstrations="",  # optional real demonstrations (default: derived from comparisons)
        pretraining="",  # optional pretraining text {"text"} for PPO-ptx and the alignment tax
    )
    c.base = dict(init="")  # "" = pretrain `pretrain.model` on the world's corpus; else HF dir / .gguf
    c.pretrain = stage_base("pretrain", "pretrain")
    c.sft = stage_base("sft", "demonstration")
    c.rm = rm_config("tiny")
    c.ppo = ppo_presets.get_config("tiny")
    c.dpo = dpo_presets.get_config("tiny")
    # Figure 1's rows beyond the paper's, trained in the last round from the SFT model: dpo and
    # dpo_kwise (Plackett-Luce) on its comparisons with `dpo` above; rloo, grpo or reinforce_pp
    # on its RM and PPO prompts with `ppo` above (no ptx). () = the paper's rows only.
    c.methods = ("dpo", "dpo_kwise", "rloo")
    c.samples_per_prompt = 4  # rloo / grpo: samples per prompt, of ppo.batch_size / 4 prompts
    c.comparisons = dict(k_min=4, k_max=9, temperature=1.0, max_new_tokens=48, batch_size=64)
    # sharded: load the evaluated models onto the PPO stage's mesh (False: one device each)
    # dtype: the compute dtype of the sampled and scored models (comparisons, judge, evaluation)
    c.evaluation = dict(temperature=1.0, max_new_tokens=48, best_of_n=8, fewshot=2,
                        batch_size=64, shown_prompts=6, sharded=False, dtype="float32")
    for section in (c.pretrain, c.sft, c.rm, c.ppo, c.dpo):
        section.seed = c.seed
        del section.distributed  # the pipeline joins its processes once, by c.distributed
        section.mesh.devices = 1  # small models: one device; real presets use them all
    c.rm.data.k_max = c.dpo.data.k_max = 9
    # rows as long as the longest forum page (three threads), so few-shot prompts are in range
    c.pretrain.data.update(chat=False, max_len=256, split_fractions=(0.95, 0.05, 0.0))
    _tiny(c)
    if args.name == "smollm2":
        _smollm2(c)
    elif args.name in ("hh_rlhf", "summarize"):
        _real(c, args.name)
    if args.name == "micro" or args.micro:
        _micro(c)
    if args.lora >= 0:  # `:smollm2,lora=0`: full fine-tuning; `:tiny,lora=8`: adapters
        for section in (c.sft, c.rm, c.ppo, c.dpo):
            section.lora.rank = args.lora
    return c


def _tiny(c):
    # γ = 0.5 here: the losses are per-token means, and this SFT forgets much of the corpus
    # (held-out loss 0.5 -> 3.8 nats/byte), so the paper's 27.8 would drown the RL signal.
    c.ptx_coef = 0.5
    c.pretrain.batch_size, c.pretrain.epochs = 16, 2
    c.pretrain.optimizer.update(learning_rate=3e-3, warmup_steps=20)
    c.pretrain.eval_every, c.pretrain.save_every = 200, 200
    c.sft.batch_size, c.sft.epochs, c.sft.data.max_len = 16, 8, 128
    c.sft.optimizer.update(learning_rate=1e-3, warmup_steps=10)
    c.sft.eval_every, c.sft.save_every = 100, 100
    c.rm.batch_size, c.rm.epochs, c.rm.data.max_len = 8, 1, 96
    c.rm.optimizer.update(learning_rate=3e-4, warmup_steps=5)
    c.rm.eval_every = 25
    c.rm.normalize.max_records = 256
    # β = 0.5 keeps the policy near SFT: at β = 0.1 (2 epochs at 3e-4) both responses' log-probs
    # fell and the win rate stayed at SFT's (docs/pipeline.md)
    c.dpo.dpo.beta = 0.5
    c.dpo.batch_size, c.dpo.epochs, c.dpo.data.max_len = 8, 1, 96
    c.dpo.optimizer.update(learning_rate=1e-4, warmup_steps=5)
    c.dpo.eval_every = 50
    c.ppo.data.max_prompt_len = 64
    c.ppo.sampling.max_new_tokens = 48
    c.ppo.ptx.max_len = 64
    c.ppo.iterations, c.ppo.batch_size, c.ppo.eval_every, c.ppo.save_every = 80, 32, 10, 20
    c.ppo.kl.init_coef = 0.05
    c.ppo.eval_prompts = 64


def _micro(c):
    c.world.update(demonstrations=160, rm_prompts=48, ppo_prompts=200, eval_prompts=16,
                   pretraining=400)
    c.pretrain.epochs = c.sft.epochs = 1
    for section in (c.pretrain, c.sft, c.rm, c.dpo):
        section.optimizer.warmup_steps = 0
    c.rm.normalize.max_records = 32
    c.ppo.iterations, c.ppo.eval_every, c.ppo.save_every = 4, 2, 2
    c.ppo.eval_prompts, c.ppo.batch_size = 16, 8
    c.comparisons.max_new_tokens = c.evaluation.max_new_tokens = c.ppo.sampling.max_new_tokens = 24
    c.evaluation.best_of_n = 2
    c.evaluation.batch_size = c.comparisons.batch_size = 16


def _smollm2(c):
    """Sized for about an hour on 2 CPU cores at under 12 GB (docs/results/smollm2.md)."""
    c.base.init = smollm2_path()
    for section in (c.sft, c.rm, c.ppo, c.dpo):
        section.model.dtype = "bfloat16"
    c.evaluation.dtype = "bfloat16"  # sampling in bf16 is about twice as fast here
    # LoRA rank 8 in every stage: SFT adapters are merged into its exported model, on which the
    # RM's adapters and the PPO policy's share one frozen bf16 base (the reference, no copy).
    # Adapters take larger steps than whole weights (the full fine-tuning rates were 2e-5,
    # 9e-6 and 9.65e-6).
    for section in (c.sft, c.rm, c.ppo, c.dpo):
        section.lora.rank = 8
    c.rm.model.param_dtype = c.ppo.model.param_dtype = c.dpo.model.param_dtype = "bfloat16"
    c.world.update(demonstrations=400, rm_prompts=440, ppo_prompts=640, eval_prompts=128,
                   pretraining=2000)
    c.sft.epochs, c.sft.batch_size = 2, 8
    c.sft.optimizer.update(learning_rate=2e-4, warmup_steps=2)
    # The RM's validation split, by user: 123 of the 440 prompts, to measure accuracy on.
    c.rm.data.split_fractions = (0.65, 0.35, 0.0)
    c.rm.optimizer.update(learning_rate=2e-4, warmup_steps=4)
    c.dpo.data.split_fractions = c.rm.data.split_fractions
    c.dpo.epochs = 1
    c.dpo.optimizer.update(learning_rate=5e-5, warmup_steps=4)
    c.rm.microbatches = c.dpo.microbatches = 4  # configs/rm.py:smollm2: 8 prompts peaked at 17 GB
    # World answers are a few words: 32 new tokens hold every demonstration with room to ramble.
    c.comparisons.max_new_tokens = c.evaluation.max_new_tokens = 32
    c.ppo.sampling.max_new_tokens = 32
    c.ppo.data.max_prompt_len = 96
    c.ppo.iterations, c.ppo.batch_size, c.ppo.eval_prompts, c.ppo.eval_every = 40, 16, 32, 5
    c.ppo.optimizer.learning_rate = c.ppo.value_optimizer.learning_rate = 2e-4
    # 4 updates per iteration; exact accumulation over microbatches of 2 episodes (the memory)
    c.ppo.ppo.minibatches, c.ppo.ppo.microbatches = 4, 2
    c.evaluation.best_of_n = 4
    c.comparisons.batch_size = c.evaluation.batch_size = 32


def _real(c, name):
    c.world.enabled = False
    c.data.format = name
    c.base.init = ""  # required: the Hugging Face checkpoint directory to start from
    for section in (c.sft, c.rm, c.ppo, c.dpo):
        section.mesh.devices = 0  # every device
        section.mesh.update(data=-1, fsdp=1, tensor=1, rules="fsdp")
        section.model.dtype = "bfloat16"
    c.sft.data.max_len = c.rm.data.max_len = c.dpo.data.max_len = 512
    c.rm.data.k_max = c.dpo.data.k_max = 2
    c.ppo.data.max_prompt_len = 384
    c.ppo.sampling.max_new_tokens = 128
    c.ppo.ptx.max_len = 512
    c.sft.optimizer.learning_rate = 1e-5
    c.rm.optimizer.learning_rate = 9e-6
    c.dpo.optimizer.learning_rate = 5e-7  # full fine-tuning at DPO's usual rate
    c.ppo.optimizer.learning_rate = c.ppo.value_optimizer.learning_rate = 9.65e-6
    c.ppo.iterations, c.ppo.batch_size = 256, 64
    c.evaluation.best_of_n = 4
