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
frozen base without them.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.data.loaders import record_stream, split_records
from rlhf_jax.evaluation.batched import batched_rows, batched_sums
from rlhf_jax.files import write_atomic
from rlhf_jax.models import CausalLM, lora
from rlhf_jax.pipeline import layout, stage
from rlhf_jax.pipeline.loop import train
from rlhf_jax.pipeline.reward import encode_comparison, count_pairs
from rlhf_jax.pipeline.state import create_train_state, initial_weights
from rlhf_jax.train.dpo import dpo_loss_terms, dpo_step, preference_metrics, response_logprobs
from rlhf_jax.train.optim import make_optimizer

REFERENCE = "reference"  # workdir/reference/<split>.npy: log π_ref of every response (N, k_max)
ROW_FIELDS = ("tokens", "mask", "response_mask", "rank", "valid")


def run_dpo(config, workdir: str) -> dict:
    """Trains and saves the policy; returns its final validation metrics."""
    config, partitioner, tokenizer = stage.start(config)
    with partitioner.activate():
        sources = stage.prepare("comparison", config, workdir, tokenizer)
        encode_one = functools.partial(encode_comparison, tokenizer, config.data)
        rows = {split: _rows([encode_one(c) for c in split_records(sources[split], "comparison")])
                for split in ("train", "validation")}
        steps = config.steps or config.epochs * (len(sources["train"]) // config.batch_size)
        model_config, pretrained = initial_weights(config, partitioner)
        model = CausalLM(model_config)
        state, abstract, frozen = create_train_state(
            model, make_optimizer(stage.optimizer_config(config, steps)), partitioner,
            jax.random.key(config.seed), np.zeros((1, 8), np.int32), pretrained)
        reference = reference_logprobs(
            CausalLM(model_config.replace(lora=lora.LoraConfig())),
            lora.base(lora.combine(state.params, frozen)), rows, config.batch_size, partitioner,
            os.path.join(workdir, REFERENCE))
        validation = batched_sums(
            lambda params, b: dpo_loss_terms(model, config.dpo, params, b, None),
            dict(rows["validation"], ref_logprobs=reference["validation"]), config.batch_size,
            partitioner)

        def evaluate(state) -> dict:
            loss_sum, prompts, sums = validation(lora.combine(state.params, frozen))
            metrics = dict(loss=loss_sum / max(prompts, 1.0), **preference_metrics(sums))
            return {k: float(v) for k, v in metrics.items()}

        step = partitioner.jit(functools.partial(dpo_step, model=model, config=config.dpo,
                                                 microbatches=config.microbatches),
                               donate_argnums=0)
        stream = record_stream(sources["train"], "comparison", encode_one,
                               batch_size=config.batch_size, seed=config.seed,
                               columns=dict(ref_logprobs=reference["train"]))
        state = train(lambda s, b, r: step(s, b, r, frozen), state, abstract, stream,
                      jax.random.key(config.seed + 1),
                      config=stage.loop_config(config, steps, "comparisons"), workdir=workdir,
                      partitioner=partitioner, evaluate=evaluate, count_units=count_pairs)
        stage.export_policy(model_config, state.params, frozen, config.init,
                            os.path.join(workdir, layout.MODEL), tokenizer)
        return evaluate(state)


def _rows(encoded: list[dict]) -> dict:
    return {k: np.stack([e[k] for e in encoded]) for k in ROW_FIELDS}


def reference_logprobs(reference: CausalLM, params, rows: dict, batch_size: int, partitioner,
                       directory: str) -> dict:
    """``{split: (N, k_max) float32}``: ``log π_ref`` of each response of each split's rows,
    read from ``directory/<split>.npy`` if there, else computed (once, before training) and
    written there by process 0."""
    per_row = lambda p, b: response_logprobs(reference, p, b["tokens"], b["mask"],
                                             b["response_mask"])
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
