"""The training loop every stage shares: resume, step, log, evaluate, checkpoint, stop.

A checkpoint holds the train state (step, params, optimizer state) and, as JSON,
the data iterator's position; the step's randomness is ``fold_in(rng, step)``
from the config's seed. So a run stopped after any saved step and started again
with the same workdir continues exactly as if it had never stopped: same
batches, same updates, same metrics. It stops by itself after a step when asked
to (SIGTERM or Ctrl-C, ``pipeline.preemption``): that step is checkpointed and
written before ``Preempted`` is raised. Killed outright, it resumes from the
newest checkpoint that restores.

A step does not wait for the device: its metrics stay there until the next
fetch (``MetricsWindow``), every ``log_every`` steps and wherever the host must
know them: before each checkpoint (a state is saved only after its metrics were
checked finite), before each validation, at a stop asked for by a signal, at
the last step, and after the first step of a run (so its compilation is timed
alone). ``preemption.should_stop`` is still asked every step (host-only;
on several processes jax's sync point, which wants every step).
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
from rlhf_jax.pipeline.metrics import MetricsLog, MetricsWindow
from rlhf_jax.pipeline.overview import parameter_overview
from rlhf_jax.pipeline.profiling import StepProfile


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int  # optimizer updates in the whole run
    eval_every: int = 0  # 0: evaluate at the end only
    save_every: int = 100  # checkpoint period, in steps (and always at the end)
    keep: int = 2  # checkpoints kept
    throughput_unit: str = "tokens"  # what ``count_units(batch)`` counts, for the progress bar
    name: str = "training"  # the stage, as messages name it
    log_every: int = 1  # steps between metric fetches (and wherever the host needs them)
    profile_steps: tuple[int, int] = (0, 0)  # steps traced into workdir/profile; (0, 0): off


def train(step_fn: Callable, state: Any, abstract: Any, stream: Iterable, rng: jax.Array, *,
          config: LoopConfig, workdir: str, partitioner: Partitioner,
          evaluate: Optional[Callable[[Any], Mapping[str, float]]] = None,
          count_units: Callable[[dict], int] = lambda batch: 0) -> tuple[Any, Optional[dict]]:
    """Runs ``state, metrics = step_fn(state, batch, rng)`` until ``config.steps``.

    ``abstract`` is the state's abstract sharded tree (the restore target);
    ``stream`` a grain dataset of global host batches (the same on every
    process); ``evaluate(state)`` returns validation metrics. Metrics go to
    ``workdir/metrics.jsonl`` and TensorBoard, fetched every ``config.log_every``
    steps (see the module's docstring); a non-finite metric stops the run with
    ``NonFiniteError`` naming its step, after the checkpoints already started are
    safely on disk; a stop asked for by a signal
    raises ``preemption.Preempted`` once the current step is checkpointed. Returns
    the final state and, with ``evaluate``, its validation metrics (those logged at the last
    step; evaluated anew, not logged again, when the run had already ended).
    """
    checkpoints = TrainCheckpoints(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep,
                                   save_every=config.save_every)
    start, state, iterator = _resume(checkpoints, abstract, state, stream)
    if jax.process_index() == 0:
        print(parameter_overview(state.params))
    log = MetricsLog(workdir, resume_step=start)
    window = MetricsWindow(log, config.throughput_unit)
    profile = StepProfile(config.profile_steps, os.path.join(workdir, "profile"))
    bar = tqdm(total=config.steps, initial=start, desc=os.path.basename(workdir.rstrip("/")),
               disable=jax.process_index() != 0, dynamic_ncols=True)
    validation = None
    try:
        if evaluate is not None and start == 0:
            validation = _validate(log, 0, evaluate(state))
        for step in range(start + 1, config.steps + 1):
            began = time.perf_counter()
            host_batch = next(iterator)
            with profile.step(step):
                state, metrics = step_fn(state, partitioner.shard_batch(host_batch), rng)
            window.add(step, metrics, count_units(host_batch), began)
            bar.update(1)
            stop, last = preemption.should_stop(step), step == config.steps
            evaluating = evaluate is not None and (last or (config.eval_every > 0 and
                                                            step % config.eval_every == 0))
            saving = stop or last or checkpoints.due(step)
            if (saving or evaluating or step == start + 1 or step % config.log_every == 0
                    or profile.edges(step)):
                _show(bar, window.fetch(), config.throughput_unit)  # raises if not finite
            profile.after(step)
            if evaluating:
                validation = _validate(log, step, evaluate(state))
            if saving:
                checkpoints.save(step, state, extra=dict(data=iterator.get_state(), step=step),
                                 force=True)
            if stop and not last:
                checkpoints.wait()
                raise preemption.Preempted(preemption.requested() or signal.SIGTERM, step,
                                           config.name)
    finally:
        profile.close()
        bar.close()
        log.close()
        checkpoints.wait()
        checkpoints.close()
    if evaluate is not None and validation is None:  # resumed after the last step
        validation = dict(evaluate(state))
    return state, validation


def _resume(checkpoints: TrainCheckpoints, abstract: Any, state: Any, stream: Iterable):
    """``(start step, state, data iterator)``: from the newest checkpoint that restores, if any."""
    iterator = iter(stream)
    restored = checkpoints.restore_latest(abstract)
    if not restored:
        return 0, state, iterator
    start, state, extra = restored
    iterator.set_state(extra["data"])
    return start, state, iterator


def _validate(log: MetricsLog, step: int, metrics: Mapping[str, float]) -> dict:
    log.write(step, "validation", metrics)
    log.flush()
    return dict(metrics)


def _show(bar: tqdm, metrics: Mapping[str, float], unit: str) -> None:
    """The progress bar's loss and throughput: the latest fetched step's."""
    bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                    **{f"{unit}/s": f"{metrics[f'{unit}_per_s']:.0f}"})
