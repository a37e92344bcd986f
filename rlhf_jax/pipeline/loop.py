"""The training loop every stage shares: resume, step, log, evaluate, checkpoint, stop.

A checkpoint holds the train state (step, params, optimizer state) and, as JSON,
the data iterator's position; the step's randomness is ``fold_in(rng, step)``
from the config's seed. So a run stopped after any saved step and started again
with the same workdir continues exactly as if it had never stopped: same
batches, same updates, same metrics. It stops by itself after a step when asked
to (SIGTERM or Ctrl-C, ``pipeline.preemption``): that step is checkpointed and
written before ``Preempted`` is raised. Killed outright, it resumes from the
newest checkpoint that restores.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable, Iterable, Mapping, Optional

import jax
from tqdm import tqdm

from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.parallel import Partitioner
from rlhf_jax.pipeline import preemption
from rlhf_jax.pipeline.metrics import MetricsLog, to_floats


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int  # optimizer updates in the whole run
    eval_every: int = 0  # 0: evaluate at the end only
    save_every: int = 100  # checkpoint period, in steps (and always at the end)
    keep: int = 2  # checkpoints kept
    throughput_unit: str = "tokens"  # what ``count_units(batch)`` counts, for the progress bar
    name: str = "training"  # the stage, as messages name it


def train(step_fn: Callable, state: Any, abstract: Any, stream: Iterable, rng: jax.Array, *,
          config: LoopConfig, workdir: str, partitioner: Partitioner,
          evaluate: Optional[Callable[[Any], Mapping[str, float]]] = None,
          count_units: Callable[[dict], int] = lambda batch: 0) -> Any:
    """Runs ``state, metrics = step_fn(state, batch, rng)`` until ``config.steps``.

    ``abstract`` is the state's abstract sharded tree (the restore target);
    ``stream`` a grain dataset of global host batches (the same on every
    process); ``evaluate(state)`` returns validation metrics. Metrics go to
    ``workdir/metrics.jsonl`` and TensorBoard;
    a non-finite metric stops the run with ``NonFiniteError``, after the
    checkpoints already started are safely on disk; a stop asked for by a signal
    raises ``preemption.Preempted`` once the current step is checkpointed. Returns
    the final state.
    """
    checkpoints = TrainCheckpoints(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep,
                                   save_every=config.save_every)
    iterator = iter(stream)
    start = 0
    restored = checkpoints.restore_latest(abstract)
    if restored:
        start, state, extra = restored
        iterator.set_state(extra["data"])
    log = MetricsLog(workdir, resume_step=start)
    bar = tqdm(total=config.steps, initial=start, desc=os.path.basename(workdir.rstrip("/")),
               disable=jax.process_index() != 0, dynamic_ncols=True)
    try:
        if evaluate is not None and start == 0:
            log.write(0, "validation", evaluate(state))
        for step in range(start + 1, config.steps + 1):
            host_batch = next(iterator)
            began = time.perf_counter()
            state, metrics = step_fn(state, partitioner.shard_batch(host_batch), rng)
            metrics = to_floats(metrics)  # waits for the step
            seconds = time.perf_counter() - began
            units = count_units(host_batch)  # the global batch, on every process
            metrics.update(step_seconds=seconds, **{f"{config.throughput_unit}_per_s": units / seconds})
            log.write(step, "train", metrics)
            if evaluate is not None and (step == config.steps or
                                         (config.eval_every and step % config.eval_every == 0)):
                log.write(step, "validation", evaluate(state))
            stop = preemption.should_stop(step)
            checkpoints.save(step, state, extra=dict(data=iterator.get_state(), step=step),
                             force=step == config.steps or stop)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                            **{f"{config.throughput_unit}/s": f"{units / seconds:.0f}"})
            if stop and step < config.steps:
                checkpoints.wait()
                raise preemption.Preempted(preemption.requested() or signal.SIGTERM, step,
                                           config.name)
    finally:
        bar.close()
        log.close()
        checkpoints.wait()
        checkpoints.close()
    return state
