"""Step 1 of InstructGPT: supervised fine-tuning on demonstrations (and pretraining on text).

``run_sft(config, workdir)`` prepares the demonstrations (``pipeline.data``),
streams packed rows of them with grain, runs ``sft_step`` on the mesh with the
paper's optimizer for ``config.epochs`` epochs (or ``config.steps`` updates),
evaluates loss and perplexity on the validation split, and writes the
fine-tuned policy as a Hugging Face directory ``workdir/model`` (weights,
config, tokenizer), which the reward-model and PPO stages load as their ``init``.
With ``config.lora.rank > 0`` only the adapters train (on the frozen ``init``);
``workdir/model`` then holds them merged, and ``workdir/model/adapter`` the
adapters alone in PEFT's format.
With ``config.data.kind = 'pretrain'`` the records are texts ``{"text"}`` and
every token is in the loss: the same stage pretrains a base model.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from rlhf_jax.data.collate import demonstration_examples
from rlhf_jax.data.loaders import sft_stream, split_records
from rlhf_jax.data.tokenize import encode_text
from rlhf_jax.evaluation.batched import validation_loss
from rlhf_jax.models import CausalLM
from rlhf_jax.models.lora import combine
from rlhf_jax.pipeline import layout, stage
from rlhf_jax.pipeline.loop import train
from rlhf_jax.pipeline.state import create_train_state, initial_weights
from rlhf_jax.train.optim import make_optimizer
from rlhf_jax.train.sft import sft_step


def run_sft(config, workdir: str) -> dict:
    """Trains, saves ``workdir/model``, returns the final validation metrics."""
    config, partitioner, tokenizer = stage.start(config)
    with partitioner.activate():
        kind = config.data.kind
        sources = stage.prepare(kind, config, workdir, tokenizer)
        row_len, batch = config.data.max_len, config.batch_size

        if kind == "pretrain":
            example = lambda record: encode_text(tokenizer, record.text, row_len)
        else:
            example = lambda record: demonstration_examples(tokenizer, [record], row_len,
                                                            config.data.chat)[0]
        stream = functools.partial(sft_stream, sources["train"], example, batch_size=batch,
                                   row_len=row_len, seed=config.seed, kind=kind)
        steps = config.steps or config.epochs * sum(1 for _ in stream(epochs=1))
        model_config, pretrained = initial_weights(config, partitioner)
        model = CausalLM(model_config)
        state, abstract, frozen = create_train_state(
            model, make_optimizer(stage.optimizer_config(config, steps)), partitioner,
            jax.random.key(config.seed), np.zeros((1, 8), np.int32), pretrained)
        loss_of = validation_loss(
            model, [example(r) for r in split_records(sources["validation"], kind)],
            row_len, batch, partitioner)
        evaluate = lambda state: loss_of(combine(state.params, frozen))
        step = partitioner.jit(functools.partial(sft_step, model=model,
                                                 microbatches=config.microbatches),
                               donate_argnums=0)
        state, validation = train(
            lambda s, b, r: step(s, b, r, frozen), state, abstract, stream(),
            jax.random.key(config.seed + 1),
            config=stage.loop_config(config, steps, "tokens"), workdir=workdir,
            partitioner=partitioner, evaluate=evaluate,
            count_units=lambda b: int(np.sum(b["segment_ids"] > 0)))
        stage.export_policy(model_config, state.params, frozen, config.init,
                            os.path.join(workdir, layout.MODEL), tokenizer)
        return validation

