"""Direct preference optimization: the policy trained on the RM's comparisons, with no RM.

``run_dpo(config, workdir)`` (``configs/dpo.py``) prepares the comparisons,
computes every response's log-probability under the reference policy once
(``workdir/reference/<split>.npy``, kept with the prepared data: a resumed run
reads them), then streams prompts with all their ranked responses through
``dpo_step`` for ``config.epochs`` epochs, validates the preference loss,
implicit-reward accuracy and margin on the validation split, and writes the
policy as a Hugging Face directory ``workdir/model`` (as SFT does). The
reference is ``config.init`` as loaded (the SFT model); with
``config.lora.rank > 0`` only adapters train on it, so the reference is the
frozen base without them. With ``config.data.max_prompt_len`` > 0 each
comparison's prompt is computed once for its K responses (the reference's
log-probs too; ``train.dpo.response_logprobs``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.data.loaders import record_stream, split_records
from rlhf_jax.data.tokenize import decode_responses, encode_prompt, left_pad, stop_tokens
from rlhf_jax.evaluation.batched import batched_rows, batched_sums
from rlhf_jax.files import write_atomic
from rlhf_jax.models import CausalLM, lora
from rlhf_jax.pipeline import layout, stage
from rlhf_jax.pipeline.loop import train
from rlhf_jax.pipeline.reward import encode_comparison, count_pairs
from rlhf_jax.pipeline.state import create_train_state, initial_weights
from rlhf_jax.sampling import SamplingConfig
from rlhf_jax.train.actor_critic import ActorCritic
from rlhf_jax.train.dpo import dpo_loss_terms, dpo_step, preference_metrics, response_logprobs
from rlhf_jax.train.optim import make_optimizer
from rlhf_jax.train.ppo_config import PPOConfig
from rlhf_jax.train.rollout import Rollout

REFERENCE = "reference"  # workdir/reference/<split>.npy: log π_ref of every response (N, k_max)


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a validation samples and how it is judged: ``judge(prompts, responses) ->
    {'judge/<name>': mean}`` on ``prompts`` (whole batches of the stage's batch size)."""

    judge: Callable[[list[str], list[str]], dict]
    prompts: tuple[str, ...]
    max_prompt_len: int
    max_new_tokens: int
    temperature: float = 1.0


def run_dpo(config, workdir: str, probe: Optional[Probe] = None) -> dict:
    """Trains and saves the policy; returns its final validation metrics."""
    config, partitioner, tokenizer = stage.start(config)
    with partitioner.activate():
        sources = stage.prepare("comparison", config, workdir, tokenizer)
        encode_one = functools.partial(encode_comparison, tokenizer, config.data,
                                       prompt_len=config.data.max_prompt_len)
        rows = {split: _rows([encode_one(c) for c in split_records(sources[split], "comparison")])
                for split in ("train", "validation")}
        steps = config.steps or config.epochs * (len(sources["train"]) // config.batch_size)
        model_config, pretrained = initial_weights(config, partitioner)
        model = CausalLM(model_config)
        state, abstract, frozen = create_train_state(
            model, make_optimizer(stage.optimizer_config(config, steps)), partitioner,
            jax.random.key(config.seed), np.zeros((1, 8), np.int32), pretrained)
        reference_params = lora.base(lora.combine(state.params, frozen))  # before any step
        reference = reference_logprobs(
            CausalLM(model_config.replace(lora=lora.LoraConfig())), reference_params, rows,
            config.batch_size, partitioner, os.path.join(workdir, REFERENCE))
        validation = batched_sums(
            lambda params, b: dpo_loss_terms(model, config.dpo, params, b, None),
            dict(rows["validation"], ref_logprobs=reference["validation"]), config.batch_size,
            partitioner)

        sampled = None if probe is None else _probe(probe, config, model_config, tokenizer,
                                                    partitioner, reference_params)

        def evaluate(state) -> dict:
            params = lora.combine(state.params, frozen)
            loss_sum, prompts, sums = validation(params)
            metrics = dict(loss=loss_sum / max(prompts, 1.0), **preference_metrics(sums))
            metrics = {k: float(v) for k, v in metrics.items()}
            return metrics if sampled is None else dict(metrics, **sampled(params))

        step = partitioner.jit(functools.partial(dpo_step, model=model, config=config.dpo,
                                                 microbatches=config.microbatches),
                               donate_argnums=0)
        stream = record_stream(sources["train"], "comparison", encode_one,
                               batch_size=config.batch_size, seed=config.seed,
                               columns=dict(ref_logprobs=reference["train"]))
        state, validation = train(
            lambda s, b, r: step(s, b, r, frozen), state, abstract, stream,
            jax.random.key(config.seed + 1),
            config=stage.loop_config(config, steps, "comparisons"), workdir=workdir,
            partitioner=partitioner, evaluate=evaluate, count_units=count_pairs)
        stage.export_policy(model_config, state.params, frozen, config.init,
                            os.path.join(workdir, layout.MODEL), tokenizer)
        return validation


def _probe(probe: Probe, config, model_config, tokenizer, partitioner, reference):
    """``sampled(params)``: the probe's metrics of the policy ``params`` (fixed sampling keys).
    ``reference`` is kept: in full fine-tuning a copy of the initial weights."""
    if not model_config.lora.rank:  # full fine-tuning: the first step donates the weights
        reference = jax.tree.map(jnp.copy, reference)
    sampling = SamplingConfig.for_tokenizer(
        tokenizer, probe.max_new_tokens, stop_tokens=stop_tokens(tokenizer, config.data.chat),
        temperature=probe.temperature, prompt_buckets=(probe.max_prompt_len,))
    rollout = Rollout(ActorCritic(CausalLM(model_config), critic=False),
                      CausalLM(model_config.replace(lora=lora.LoraConfig())),
                      lambda _, samples: jnp.zeros(samples.response.shape[:1]),
                      PPOConfig(advantage="reinforce_pp"), sampling)
    batch = config.batch_size
    if len(probe.prompts) < batch:
        raise ValueError(f"a probe of {len(probe.prompts)} prompts, fewer than one batch of "
                         f"{batch}")
    encoded = [left_pad(encode_prompt(tokenizer, p, config.data.chat), probe.max_prompt_len,
                        tokenizer.pad_token_id or 0) for p in probe.prompts]
    batches = [partitioner.shard_batch(dict(ids=np.stack([e[0] for e in encoded[i:i + batch]]),
                                            mask=np.stack([e[1] for e in encoded[i:i + batch]])))
               for i in range(0, len(encoded) - batch + 1, batch)]

    def sampled(params) -> dict:
        sums: dict = {}
        for i, b in enumerate(batches):
            experience, m = rollout(dict(policy=params), reference, None, b["ids"], b["mask"],
                                    jax.random.fold_in(jax.random.key(config.seed + 2), i),
                                    jnp.float32(0.0))
            texts = decode_responses(tokenizer, *parallel.to_host(
                (experience.response, experience.response_mask)))
            m = dict(kl=float(m["kl"]), **probe.judge(
                list(probe.prompts[i * batch:(i + 1) * batch]), texts))
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v / len(batches)
        return dict(sums, implicit_reward=config.dpo.beta * sums["kl"])

    return sampled


def _rows(encoded: list[dict]) -> dict:
    return {k: np.stack([e[k] for e in encoded]) for k in encoded[0]}


def reference_logprobs(reference: CausalLM, params, rows: dict, batch_size: int, partitioner,
                       directory: str) -> dict:
    """``{split: (N, k_max) float32}``: ``log π_ref`` of each response of each split's rows,
    read from ``directory/<split>.npy`` if there, else computed (once, before training) and
    written there by process 0."""
    per_row = functools.partial(response_logprobs, reference)
    out = {}
    for split, split_rows in rows.items():
        path = os.path.join(directory, f"{split}.npy")
        if not os.path.exists(path):
            values = batched_rows(per_row, split_rows, batch_size, partitioner)(params)

            def write(values=values, path=path):
                os.makedirs(directory, exist_ok=True)
                with write_atomic(path, "wb") as f:
                    np.save(f, values.astype(np.float32))

            parallel.on_process_zero(f"reference log-probs of {split}", write)
        out[split] = np.load(path)
    return out
