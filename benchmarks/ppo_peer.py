"""TRL side of the PPO iteration benchmark: seconds per RLOO / PPO iteration in TRL on CPU.

    python benchmarks/ppo_peer.py --trainer=rloo --policy=DIR --dtype=float32 \
        --iterations=3 --warmup=1 --threads=2 --prompts=16 --prompt_len=64 --new_tokens=64 --generations=2
    python benchmarks/ppo_peer.py --trainer=rloo --policy=DIR --lora_rank=8 --dtype=bfloat16 \
        --bf16_weights ...
    /work/venvs/trl_ppo/bin/python benchmarks/ppo_peer.py --trainer=ppo --policy=DIR ...

Imports only the standard library, numpy, torch, transformers, datasets and trl (and peft, with
``--lora_rank`` > 0), so that ``benchmarks/ppo.py`` can run it in another interpreter. The last line
printed on stdout is one JSON object (everything TRL prints goes to stderr):
{"trainer", "trl_version", "transformers_version", "torch_version", "peft_version" (null when peft is
 not installed), "dtype", "weights_dtype", "lora_rank", "lora_alpha" (null without LoRA),
 "trainable_parameters", "iterations", "seconds_per_iteration", "generate_s", "score_s", "train_s",
 "episodes_per_iteration", "peak_gb", "notes"}.

Models. ``DIR`` is a Hugging Face Llama directory. Policy:
``AutoModelForCausalLM.from_pretrained(DIR)`` in float32; reference policy: a second copy of it
(PPO: loaded here and passed as ``ref_model``; RLOO: RLOOTrainer loads it itself from ``DIR``
because ``beta`` > 0, in the policy's dtype; under LoRA there is no copy, see below); reward model
(and, for PPO, value model): ``AutoModelForSequenceClassification.from_pretrained(DIR, num_labels=1)``,
same trunk, its new ``score`` head drawn after ``torch.manual_seed(0)``. Weights are float32 (but
see ``--bf16_weights``); ``--dtype=bfloat16`` sets the trainer's ``bf16=True`` (torch autocast to
bfloat16 on CPU, float32 master weights and AdamW state) and also runs the whole ``trainer.train()``
under ``torch.autocast("cpu", torch.bfloat16)``, so that generation and scoring are autocast too
(RLOO does that already through accelerate's wrapped forwards; TRL's PPO does not, see below).

``--bf16_weights`` (only with ``--dtype=bfloat16``): every model above is loaded with
``from_pretrained(DIR, dtype=torch.bfloat16)`` (``dtype`` is transformers 5's name for
``torch_dtype``), because our side can run a bfloat16 base; the autocast above still applies. With
LoRA this is the usual setup: frozen bfloat16 base, adapters in float32 (PEFT's ``get_peft_model``
upcasts adapter weights by default, ``autocast_adapter_dtype=True``; RLOOTrainer turns that off only
under DeepSpeed ZeRO-3), float32 AdamW state for the adapters. Without LoRA it is pure bfloat16
training: bfloat16 parameters, gradients and AdamW state, no float32 master copy. Adam's step is
about ``lr`` = 1e-6 per element, far below half the bfloat16 spacing of most weights, so most of
that update rounds away; the compute per iteration is the same, which is what is timed. The notes
name the dtypes of the trainable and frozen parameters as found after the trainer is built.

--lora_rank=N > 0 (RLOO only): the policy gets PEFT adapters the way TRL documents it, by passing
``peft_config=LoraConfig(r=N, lora_alpha=--lora_alpha (default 16, scale alpha / r), lora_dropout=0,
target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
task_type="CAUSAL_LM")`` to ``RLOOTrainer``, which wraps the model with ``get_peft_model``
(``A`` kaiming-uniform, ``B`` zero, so the first policy equals the base; the LM head and embeddings
carry no adapter and are frozen). The reference is then the base model, not a copy. In the
installed trl 1.16.0, ``trl/trainer/rloo_trainer.py``: ``RLOOTrainer.__init__`` sets
``self.ref_model = None`` when ``is_peft_model(model)`` ("the adapter can be disabled to revert to the
initial model"); a frozen copy of the adapter named "ref" is made only when the caller passes a model
that is already a ``PeftModel``, not with ``peft_config``. ``RLOOTrainer._generate_and_score_completions``,
with ``beta`` != 0 and no ``ref_model``, computes the reference log-probs with ``self.model`` inside
``use_adapter(model, adapter_name=None)`` (``trl/trainer/utils.py``), which for ``None`` enters
``PeftModel.disable_adapter()``: the same module, adapters bypassed, no second set of weights.
This script checks that (no ``ref_model``, no "ref" adapter) and counts the ``disable_adapter``
entries, which must equal the number of iterations; the notes report the count. Generation, the
no-grad old-log-prob forward and the training forward all run with the adapters on (unmerged: each
targeted layer adds its two rank-N matmuls). The reward model remains a separate full model.

Tokens. TRL's pad id and stop ids are the directory's: its tokenizer's ``pad_token_id`` (its EOS if
it has no pad token, as RLOOTrainer itself does), its ``eos_token_id`` and any EOS ids in the
model's generation config. The byte tokenizer ``benchmarks/ppo.py`` exports has pad = EOS = 256
(``<|endoftext|>``); SmolLM2's has pad = EOS = 2 (``<|im_end|>``) and special ids 0 to 2 among the
first 256. Those pad / EOS ids are kept out of the prompts (next paragraph), kept out of the
completions (below) and set as ``pad_token_id`` of the policy and reward / value configs (the reward
is read at the last non-pad token, which is then always the last token).

Data. ``--prompts`` prompts per iteration, each exactly ``--prompt_len`` token ids drawn uniformly
from the 256 lowest ids that are not pad / EOS ids, with ``np.random.default_rng(0)`` (a fresh set
per iteration), so nothing is padded. For the byte tokenizer that is exactly [0, 256), the same ids
as before this rule existed; for SmolLM2 it is [0, 257) without 2. (RLOO attends to every prompt
token whatever its id, but TRL's PPO masks every pad id in a query, and the reward model reads the
last non-pad token.) Prompts and completions never go through text: the byte tokenizer cannot
round-trip random bytes (ids >= 128 alone are not UTF-8) nor ids >= 259 that the model can sample,
and a BPE tokenizer does not re-encode random id sequences to themselves, so decoding and
re-encoding would change lengths. ``--new_tokens`` tokens are sampled per completion at temperature
1 (no top-k / top-p) and no completion can stop early:
  * RLOO: ``generation_kwargs={"min_new_tokens": new_tokens}``, i.e. transformers' min-length
    processor masks RLOO's EOS ids (the tokenizer's EOS plus the generation config's; 256 for the
    byte tokenizer, 2 for SmolLM2, each also the pad id) at every step, so every completion has
    exactly ``new_tokens`` tokens; a completion holding a pad / EOS id would stop the run.
  * PPO: ``stop_token=None, stop_token_id=None`` (no stop token at all: TRL sets the policy's
    ``generation_config.eos_token_id=None``), and the pad id (256 for the byte tokenizer) is
    suppressed in sampling (``suppress_tokens=[pad]`` added to the generation config TRL passes to
    ``generate``), because
    TRL's PPO treats every pad id inside a response as padding (masks it, and the reward is read
    before it). Side effect: TRL takes the old log-probs from the processed generation scores, which
    are renormalised over the other ids, while the reference and training forwards use the full
    vocabulary, so at the first step the ratio is ~(1 - p(256)) per token (0.998 on the tiny model)
    and the KL ~0.12 nats per response instead of 0. No compute changes (no clipping is triggered).
    (Suppressing only the pad id assumes pad = EOS, true of both tokenizers above; with pad != EOS,
    a sampled EOS would just be another token, as there is no stop token.)

--trainer=rloo: trl's ``RLOOTrainer`` (the installed trl; 1.16.0 in the system Python).
``--generations`` completions per prompt, ``per_device_train_batch_size = prompts * generations``,
``gradient_accumulation_steps=1``, ``steps_per_generation=1``, ``num_iterations=1`` (one
optimisation epoch, one minibatch = the whole batch, one AdamW step per iteration), AdamW (the
Trainer default, ``adamw_torch_fused``) lr 1e-6 with Trainer's default linear decay, no weight
decay, no gradient checkpointing, no vLLM, KL coefficient ``beta`` at its default (0.05, so the
reference model runs). The prompt ids reach ``generate`` through an override of
``RLOOTrainer._tokenize_prompts`` (the dataset's ``prompt`` column holds only a key), and the reward
model is given to RLOO as a reward *function* that runs
``reward_model(input_ids=prompt+completion)`` under ``torch.inference_mode()`` (and bf16 autocast
when asked) on the token ids, instead of RLOO's nn.Module path that would decode to text and
re-tokenize.

--trainer=ppo: ``trl.experimental.ppo.PPOTrainer`` of trl 1.12.0, the newest release that still ships
PPO (the 1.13.0, 1.14.2 and 1.15.0 wheels, and the installed 1.16.0, have no ``ppo`` module; 1.12.0
installs beside torch 2.13.0 and runs with transformers 5.23.0). Its own virtual environment, made with

    python -m venv /work/venvs/trl_ppo && /work/venvs/trl_ppo/bin/pip install torch==2.13.0 \
        trl==1.12.0 transformers==5.23.0 accelerate==1.15.0 datasets==5.2.0 numpy

(the same transformers / accelerate / datasets versions as the system Python). Configuration:
batch = ``--prompts`` prompts x 1 completion (``per_device_train_batch_size=prompts``,
``gradient_accumulation_steps=1``), ``num_ppo_epochs=1``, ``num_mini_batches=1``,
``local_rollout_forward_batch_size=prompts`` (one generate call and one scoring pass for the whole
batch), ``response_length=new_tokens``, ``temperature=1``, lr 1e-6 (linear decay), ``kl_coef`` 0.05,
``vf_coef`` 0.1, clip ranges 0.2, gamma 1, lam 0.95 (TRL defaults), ``gradient_checkpointing=False``,
``num_sample_generations=0`` (no extra sampling for logs), no missing-EOS penalty, value model as
above, reference model the second policy copy. TRL's PPO builds its own ``Accelerator`` without
reading ``args.bf16`` (with transformers 5 nothing sets ``ACCELERATE_MIXED_PRECISION`` any more), so
this script sets ``ACCELERATE_MIXED_PRECISION`` (``bf16``, or ``no`` for float32) before building the
trainer (autocast on the policy+value training forward) and wraps ``train()`` in bf16 autocast
(generation, reference, reward and value forwards).

Timing. One iteration = generate + score + the optimisation epoch, measured between consecutive
``on_step_end`` callbacks (the first from ``on_train_begin``); ``--warmup`` iterations are dropped and
the median of the next ``--iterations`` is reported. ``generate_s``, ``score_s``, ``train_s`` are the
medians of the per-iteration buckets (so they need not add up exactly to ``seconds_per_iteration``):
  * RLOO: generate_s = ``RLOOTrainer._generate`` (prompt lookup, left-pad, ``model.generate``, EOS
    masking, ``batch_decode``, length metrics); score_s = the rest of ``_generate_and_score_completions``
    (policy log-probs of the sampled tokens (no grad), reference log-probs, reward model, KL-in-reward,
    leave-one-out advantages, metrics); train_s = everything else in the iteration (loss forward,
    backward, grad clipping at max_grad_norm=1, AdamW step, lr schedule, zero_grad, Trainer
    bookkeeping, dataloader).
  * PPO: generate_s = ``batch_generation`` (``generate`` with ``output_scores=True``; TRL takes the old
    log-probs from these scores instead of a separate policy forward); score_s = from the end of
    generation to the first training forward (log-softmax of the generation scores, reference
    forward, value forward, reward forward, KL rewards, GAE, advantage whitening); train_s = the
    rest (policy+value forward, backward, AdamW step, TRL's stats and metric gathering and logging,
    lr step, plus the ``gc.collect()`` / cache emptying TRL runs after every update and fetching the
    next batch of prompts).
With LoRA the reference forward (adapters disabled) stays in score_s. Each iteration, warmup
included, also prints one line on stderr (its seconds, generate and score buckets, peak RSS so far),
so that a run stopped early still shows what it measured.

Memory. ``peak_gb`` is this process's peak resident set size as Linux reports it,
``resource.getrusage(resource.RUSAGE_SELF).ru_maxrss`` (KiB on Linux) x 1024 / 1e9, i.e. GB of 10^9
bytes (not GiB), read after training: the high-water mark of the whole process (Python, torch,
loading the safetensors, every model copy, activations, gradients, optimizer state), the same counter
``/usr/bin/time -v`` prints as "Maximum resident set size" for it. It is host memory: these runs
are on CPU. The notes also give the same counter once the trainer is built, before any iteration,
which separates the models' share from what the iterations add.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)

import trl  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--trainer", choices=["rloo", "ppo"], required=True)
    p.add_argument("--policy", required=True, help="Hugging Face Llama directory")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    p.add_argument("--prompt_len", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--generations", type=int, default=2, help="completions per prompt (RLOO)")
    p.add_argument("--lora_rank", type=int, default=0,
                   help="LoRA rank of the policy's adapters (RLOO only); 0 = full fine-tuning")
    p.add_argument("--lora_alpha", type=float, default=16.0, help="LoRA alpha (scale alpha / rank)")
    p.add_argument("--bf16_weights", action="store_true",
                   help="load every model's weights in bfloat16 (needs --dtype=bfloat16)")
    return p.parse_args(argv)


class Clock:
    """Per-iteration time stamps, filled by the callback and by the wrapped trainer functions."""

    def __init__(self):
        self.last_end = None
        self.iter_total, self.iter_gen, self.iter_score = [], [], []
        self.reset()

    def reset(self):
        self.gen = 0.0
        self.score = 0.0
        self.gen_start = self.gen_end = self.train_start = None

    def close_iteration(self, now, gen, score):
        self.iter_total.append(now - self.last_end)
        self.iter_gen.append(gen)
        self.iter_score.append(score)
        print(f"iteration {len(self.iter_total)}: {now - self.last_end:.3f} s (generate {gen:.3f} s, "
              f"score {score:.3f} s), peak RSS so far {peak_gb():.2f} GB", file=sys.stderr, flush=True)
        self.last_end = now
        self.reset()


class IterationCallback(TrainerCallback):
    def __init__(self, clock, split):
        self.clock, self.split = clock, split

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.last_end = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        gen, score = self.split(now)
        self.clock.close_iteration(now, gen, score)


def prompt_vocabulary(avoid):
    """The 256 lowest token ids not in ``avoid`` (the pad and EOS ids): [0, 256) for the byte tokenizer."""
    ids = [i for i in range(256 + len(avoid)) if i not in avoid]
    return np.array(ids[:256])


def random_prompts(n, length, avoid):
    index = np.random.default_rng(0).integers(0, 256, size=(n, length))
    return prompt_vocabulary(avoid)[index].tolist()


def load_tokenizer(path):
    """The directory's tokenizer, left-padding; no pad token -> its EOS (what RLOOTrainer would do)."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise SystemExit(f"{path}: the tokenizer has no EOS token (pad {tokenizer.pad_token_id}, "
                         f"eos {tokenizer.eos_token_id})")
    return tokenizer


def stop_ids(tokenizer, model):
    """Pad, the tokenizer's EOS and every EOS id of the model's generation config."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return sorted({tokenizer.pad_token_id, tokenizer.eos_token_id, *eos})


def load_models(path, pad, value_model, weights_dtype):
    """Policy, reference copy (PPO only: RLOO loads its own from ``path``), reward (+ value) model."""
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype) if value_model else None
    heads = []
    for _ in range(2 if value_model else 1):
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=weights_dtype)
        m.config.pad_token_id = pad
        heads.append(m)
    for m in (policy, ref) if ref is not None else (policy,):
        m.config.pad_token_id = pad
        m.generation_config.pad_token_id = pad
    return policy, ref, heads


def weights_dtype(a):
    return torch.bfloat16 if a.bf16_weights else torch.float32


def peft_version():
    try:
        return importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return None


def peak_gb():
    """This process's peak resident set size as Linux reports it (ru_maxrss, KiB), in GB of 1e9 bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def common_args(a, out_dir):
    return dict(
        output_dir=out_dir,
        learning_rate=1e-6,
        gradient_checkpointing=False,
        bf16=a.dtype == "bfloat16",
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def run_rloo(a, out_dir):
    from trl import RLOOConfig, RLOOTrainer

    steps = a.warmup + a.iterations
    tokenizer = load_tokenizer(a.policy)
    policy, _, (reward_model,) = load_models(a.policy, tokenizer.pad_token_id, value_model=False,
                                             weights_dtype=weights_dtype(a))
    stops = stop_ids(tokenizer, policy)
    ids = random_prompts(steps * a.prompts, a.prompt_len, stops)
    keys = [f"p{i}" for i in range(len(ids))]
    prompt_ids = dict(zip(keys, ids))
    reward_model.eval()
    bf16 = a.dtype == "bfloat16"

    def reward_model_score(prompts, completions, completion_ids, **kwargs):
        seqs = torch.tensor([prompt_ids[p] + list(c) for p, c in zip(prompts, completion_ids)])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = reward_model(input_ids=seqs, attention_mask=torch.ones_like(seqs)).logits[:, 0]
        return scores.float().tolist()

    class TokenIdRLOOTrainer(RLOOTrainer):
        def _tokenize_prompts(self, prompts):
            return [prompt_ids[p] for p in prompts], None, {}

    config = RLOOConfig(
        **common_args(a, out_dir),
        max_steps=steps,
        per_device_train_batch_size=a.prompts * a.generations,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=a.generations,
        max_completion_length=a.new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"min_new_tokens": a.new_tokens},
        use_vllm=False,
        logging_strategy="no",
        log_completions=False,
    )
    peft_config = None
    if a.lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, lora_dropout=0.0,
                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    trainer = TokenIdRLOOTrainer(
        model=policy,
        reward_funcs=reward_model_score,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": keys}),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if sorted({*trainer.eos_token_ids, tokenizer.pad_token_id}) != stops:
        raise RuntimeError(f"RLOO stops on {trainer.eos_token_ids} (pad {tokenizer.pad_token_id}), "
                           f"prompts avoid {stops}")
    reference_calls = []
    if a.lora_rank:
        # RLOOTrainer keeps no reference model under PEFT: its reference log-probs are the policy's
        # forward inside PeftModel.disable_adapter(). Counted here to show it happens once per iteration.
        from accelerate.utils import is_peft_model

        peft_model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.ref_model is not None or not is_peft_model(peft_model) or "ref" in peft_model.peft_config:
            raise RuntimeError("RLOO under PEFT was expected to keep no reference model and no 'ref' adapter")
        original_disable = peft_model.disable_adapter

        @contextlib.contextmanager
        def counted_disable_adapter():
            reference_calls.append(time.perf_counter())
            with original_disable():
                yield

        peft_model.disable_adapter = counted_disable_adapter
    elif trainer.ref_model is None:
        raise RuntimeError("RLOO made no reference model")
    built_gb = peak_gb()
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    trainable_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in trainable})
    frozen_dtypes = sorted({str(p.dtype).replace("torch.", "")
                            for p in trainer.model.parameters() if not p.requires_grad})
    reference = ("reference = the policy with its adapters disabled (PeftModel.disable_adapter, "
                 "entered {calls} times), no second copy" if a.lora_rank else
                 f"reference = a second copy loaded by RLOOTrainer in {trainer.ref_model.dtype}")

    clock = Clock()
    lengths = []
    original_generate, original_gas = trainer._generate, trainer._generate_and_score_completions

    def timed_generate(prompts):
        t0 = time.perf_counter()
        out = original_generate(prompts)
        clock.gen += time.perf_counter() - t0
        lengths.extend(len(c) for c in out[1])
        if any(t in stops for c in out[1] for t in c):
            raise RuntimeError(f"a completion contains a stop or pad id {stops}")
        return out

    def timed_gas(inputs):
        t0 = time.perf_counter()
        out = original_gas(inputs)
        clock.score += time.perf_counter() - t0  # generate included; subtracted in split()
        return out

    trainer._generate = timed_generate
    trainer._generate_and_score_completions = timed_gas
    trainer.add_callback(IterationCallback(clock, lambda now: (clock.gen, clock.score - clock.gen)))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        trainer.train()
    notes = [
        f"RLOOTrainer, {a.prompts} prompts x {a.generations} completions, one AdamW step per iteration, "
        f"beta={config.beta} (reference model forward included), optimizer {config.optim}, "
        f"accelerator mixed_precision={trainer.accelerator.mixed_precision}",
        "prompt ids passed straight to generate (RLOOTrainer._tokenize_prompts overridden); reward model "
        "called as a reward function on token ids (no decode / re-tokenize)",
        f"no early stop: generation_kwargs min_new_tokens={a.new_tokens} masks EOS id(s) "
        f"{trainer.eos_token_ids} (pad {tokenizer.pad_token_id}); prompt ids drawn from the 256 lowest ids "
        f"not in {stops}; "
        f"completion lengths seen: {sorted(set(lengths))}",
        "RLOO computes the old policy log-probs with an extra no-grad forward (in score_s); TRL's fused "
        "lm-head computes log-probs in chunks without materialising full logits",
        (f"LoRA r={a.lora_rank} alpha={a.lora_alpha:g} dropout 0 on {','.join(LORA_TARGETS)} via "
         f"RLOOTrainer(peft_config=...)" if a.lora_rank else "full fine-tuning")
        + f"; trainable {sum(p.numel() for p in trainable)} parameters in {'/'.join(trainable_dtypes)}, "
        f"frozen in {'/'.join(frozen_dtypes) or '-'}; reward model in {reward_model.dtype}",
        reference.format(calls=len(reference_calls)),
        f"peak RSS {built_gb:.2f} GB once the trainer was built (models loaded, before any iteration)",
    ]
    if a.lora_rank and len(reference_calls) != steps:
        raise RuntimeError(f"{len(reference_calls)} adapter-disabled reference passes for {steps} iterations")
    extra = dict(trainable_parameters=sum(p.numel() for p in trainable))
    return clock, a.prompts * a.generations, notes, extra


def run_ppo(a, out_dir):
    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
        from trl.experimental.ppo import ppo_trainer as ppo_module
    except ImportError:
        try:
            from trl.trainer import ppo_trainer as ppo_module
            from trl.trainer.ppo_config import PPOConfig
            from trl.trainer.ppo_trainer import PPOTrainer
        except ImportError as e:
            raise SystemExit(
                f"trl {trl.__version__} has no PPOTrainer; run this with /work/venvs/trl_ppo/bin/python "
                "(see the module docstring)") from e

    bf16 = a.dtype == "bfloat16"
    steps = a.warmup + a.iterations
    tokenizer = load_tokenizer(a.policy)
    policy, ref, (reward_model, value_model) = load_models(a.policy, tokenizer.pad_token_id, value_model=True,
                                                           weights_dtype=weights_dtype(a))
    stops = stop_ids(tokenizer, policy)
    ids = random_prompts(steps * a.prompts, a.prompt_len, stops)
    config = PPOConfig(
        **common_args(a, out_dir),
        per_device_train_batch_size=a.prompts,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=1,
        total_episodes=steps * a.prompts,
        local_rollout_forward_batch_size=a.prompts,
        response_length=a.new_tokens,
        temperature=1.0,
        stop_token=None,
        stop_token_id=None,
        missing_eos_penalty=None,
        num_sample_generations=0,
        logging_steps=1,
    )
    dataset = Dataset.from_dict({"input_ids": ids})
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(a.prompts)),
    )

    built_gb = peak_gb()
    clock = Clock()
    lengths = []
    original_batch_generation, original_forward = ppo_module.batch_generation, ppo_module.forward

    def timed_batch_generation(model, queries, batch_size, pad_token_id, generation_config):
        generation_config = copy.deepcopy(generation_config)
        generation_config.suppress_tokens = [pad_token_id]  # a sampled pad id would count as padding
        clock.gen_start = time.perf_counter()
        out = original_batch_generation(model, queries, batch_size, pad_token_id, generation_config)
        clock.gen_end = time.perf_counter()
        responses = out[0][:, queries.shape[1]:]
        lengths.append(int(responses.shape[1]))
        if (responses == pad_token_id).any():
            raise RuntimeError("a response contains the pad id")
        return out

    def timed_forward(model, query_responses, pad_token_id):
        if model is trainer.model and clock.train_start is None:
            clock.train_start = time.perf_counter()
        return original_forward(model, query_responses, pad_token_id)

    ppo_module.batch_generation = timed_batch_generation
    ppo_module.forward = timed_forward

    def split(now):
        return clock.gen_end - clock.gen_start, clock.train_start - clock.gen_end

    trainer.add_callback(IterationCallback(clock, split))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        trainer.train()
    mp = trainer.accelerator.mixed_precision
    notes = [
        f"trl.experimental PPOTrainer, {a.prompts} prompts x 1 completion, 1 PPO epoch, 1 minibatch, "
        f"policy + value model trained jointly (one AdamW over both), kl_coef={config.kl_coef}, "
        f"accelerator mixed_precision={mp}, optimizer {config.optim}",
        "old log-probs come from generate(output_scores=True) scores, not a separate policy forward",
        f"no stop token (stop_token_id=None) and pad id {tokenizer.pad_token_id} suppressed in sampling; "
        f"prompt ids drawn from the 256 lowest ids not in {stops}; response lengths seen: "
        f"{sorted(set(lengths))}",
        "the gc.collect()/empty_cache TRL runs after every update is counted in train_s",
        f"weights in {policy.dtype} (policy, reference, reward and value models)",
        f"peak RSS {built_gb:.2f} GB once the trainer was built (models loaded, before any iteration)",
    ]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return clock, a.prompts, notes, dict(trainable_parameters=trainable)


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    # Where Accelerate (and TrainingArguments, before its bf16 flag) reads mixed precision from; TRL's PPO
    # builds its own Accelerator() from this alone. Set both ways so an inherited value cannot leak in.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if a.dtype == "bfloat16" else "no"
    if a.iterations < 1 or a.warmup < 0:
        raise SystemExit("--iterations must be >= 1 and --warmup >= 0")
    if a.trainer == "rloo" and a.generations < 2:
        raise SystemExit("RLOO needs --generations >= 2")
    if a.lora_rank < 0 or a.lora_alpha <= 0:
        raise SystemExit("--lora_rank must be >= 0 and --lora_alpha > 0")
    if a.lora_rank and a.trainer != "rloo":
        raise SystemExit("--lora_rank is implemented for --trainer=rloo only")
    if a.bf16_weights and a.dtype != "bfloat16":
        raise SystemExit("--bf16_weights needs --dtype=bfloat16")
    with tempfile.TemporaryDirectory() as out_dir, contextlib.redirect_stdout(sys.stderr):
        run = run_rloo if a.trainer == "rloo" else run_ppo
        clock, episodes, notes, extra = run(a, out_dir)
    expected = a.warmup + a.iterations
    if len(clock.iter_total) != expected:
        raise RuntimeError(f"timed {len(clock.iter_total)} iterations, expected {expected}")
    keep = slice(a.warmup, None)
    med = lambda xs: statistics.median(xs[keep])  # noqa: E731
    result = {
        "trainer": a.trainer,
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "peft_version": peft_version(),
        "dtype": a.dtype,
        "weights_dtype": "bfloat16" if a.bf16_weights else "float32",
        "lora_rank": a.lora_rank,
        "lora_alpha": a.lora_alpha if a.lora_rank else None,
        "trainable_parameters": extra["trainable_parameters"],
        "iterations": a.iterations,
        "seconds_per_iteration": med(clock.iter_total),
        "generate_s": med(clock.iter_gen),
        "score_s": med(clock.iter_score),
        "train_s": med([t - g - s for t, g, s in zip(clock.iter_total, clock.iter_gen, clock.iter_score)]),
        "episodes_per_iteration": episodes,
        "peak_gb": peak_gb(),
        "notes": "; ".join(notes + [
            f"threads={a.threads}, prompts={a.prompts}, prompt_len={a.prompt_len}, "
            f"new_tokens={a.new_tokens}, warmup={a.warmup}",
            "per-iteration seconds (all, warmup first): "
            + ", ".join(f"{t:.3f}" for t in clock.iter_total),
        ]),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
