"""The shared training loop with a fake step: metrics fetched in windows, still one line per step,
never a checkpoint of unchecked metrics; a profiler window; the parameter overview it prints."""

import glob
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from rlhf_jax import parallel
from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.pipeline import loop, metrics, preemption
from rlhf_jax.pipeline.metrics import NonFiniteError, read_metrics
from rlhf_jax.pipeline.overview import parameter_overview

BATCH = 8


def fake_step(bad_step: int):
    """Adds the batch's mean to ``w``; the loss is the new step number, NaN at ``bad_step``."""

    def step(state, batch, rng):
        number = state.step + 1
        loss = jnp.where(number == bad_step, jnp.nan, number.astype(jnp.float32))
        params = dict(w=state.params["w"] + jnp.mean(batch["x"]))
        return state.replace(step=number, params=params), dict(loss=loss, w=params["w"][0])

    return jax.jit(step, donate_argnums=0)


def run(workdir, steps=12, bad_step=0, evaluate=None, **fields):
    mesh = parallel.make_mesh(-1, 1, 1, jax.devices()[:1])
    partitioner = parallel.Partitioner(mesh, parallel.get_rules("fsdp"))
    state = jax.device_put(
        TrainState.create(apply_fn=None, params=dict(w=jnp.zeros(4)), tx=optax.sgd(0.1)),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)
    stream = (grain.MapDataset.range(10_000).map(lambda i: dict(x=np.float32([i])))
              .batch(BATCH).to_iter_dataset())
    config = loop.LoopConfig(steps=steps, throughput_unit="rows", keep=10, **fields)
    return loop.train(fake_step(bad_step), state, abstract, stream, jax.random.key(0),
                      config=config, workdir=str(workdir), partitioner=partitioner,
                      evaluate=evaluate, count_units=lambda b: len(b["x"]))


def saved_steps(workdir):
    return TrainCheckpoints(os.path.join(workdir, "checkpoints")).manager.all_steps()


@pytest.fixture
def fetches(monkeypatch):
    """The number of host transfers of train metrics."""
    count = []
    to_host = parallel.to_host
    monkeypatch.setattr(metrics.parallel, "to_host", lambda tree: count.append(1) or to_host(tree))
    return count


def test_metrics_are_fetched_per_window_and_written_per_step(tmp_path, fetches):
    state, validation = run(tmp_path, log_every=5, save_every=3)
    assert validation is None  # no evaluate
    rows = read_metrics(str(tmp_path), "train")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["loss"] for r in rows] == list(range(1, 13))
    assert int(state.step) == 12
    # The first step (compilation), every 5th, every checkpoint (3, 6, 9, 12): 1 3 5 6 9 10 12.
    assert len(fetches) == 7
    seconds = {r["step"]: r["step_seconds"] for r in rows}
    assert seconds[7] == seconds[8] == seconds[9] != seconds[6]
    assert rows[7]["rows_per_s"] == pytest.approx(BATCH / seconds[8])
    assert sorted(saved_steps(tmp_path)) == [1, 3, 6, 9, 12]


def test_a_non_finite_step_inside_a_window_is_named_and_no_later_state_is_saved(tmp_path):
    with pytest.raises(NonFiniteError, match=r"^step 7: train metric 'loss' is nan"):
        run(tmp_path, bad_step=7, log_every=5, save_every=3)
    assert [r["step"] for r in read_metrics(str(tmp_path), "train")] == [1, 2, 3, 4, 5, 6]
    assert sorted(saved_steps(tmp_path)) == [1, 3, 6]  # found at step 9, before its checkpoint


def test_a_stop_fetches_and_checkpoints_the_step_it_stops_at(tmp_path, monkeypatch):
    monkeypatch.setattr(preemption, "should_stop", lambda step: step == 4)
    with pytest.raises(preemption.Preempted, match="stopped at step 4 of training"):
        run(tmp_path, log_every=10, save_every=100)
    assert [r["step"] for r in read_metrics(str(tmp_path), "train")] == [1, 2, 3, 4]
    assert sorted(saved_steps(tmp_path)) == [1, 4]
    monkeypatch.undo()
    run(tmp_path, log_every=10, save_every=100)  # resumes at 5
    assert [r["loss"] for r in read_metrics(str(tmp_path), "train")] == list(range(1, 13))


def test_the_last_validation_is_returned_not_evaluated_again(tmp_path):
    """Validation at step 0, every ``eval_every`` steps and the last; ``train`` returns the last
    one's metrics; a run resumed after its end evaluates its state once and logs nothing."""
    evaluated = []

    def evaluate(state):
        evaluated.append(int(state.step))
        return dict(w=float(state.params["w"][0]))

    state, validation = run(tmp_path, evaluate=evaluate, eval_every=5)
    assert evaluated == [0, 5, 10, 12]
    assert validation == dict(w=float(state.params["w"][0])) and validation["w"] > 0
    rows = read_metrics(str(tmp_path), "validation")
    assert [r["step"] for r in rows] == [0, 5, 10, 12] and rows[-1]["w"] == validation["w"]
    _, again = run(tmp_path, evaluate=evaluate, eval_every=5)
    assert evaluated == [0, 5, 10, 12, 12] and again == validation
    assert read_metrics(str(tmp_path), "validation") == rows


def test_a_profile_window_writes_a_trace(tmp_path):
    run(tmp_path, steps=6, log_every=10, profile_steps=(2, 4))
    traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_parameter_overview_groups_by_subtree_with_shapes_dtypes_and_shardings():
    mesh = parallel.make_mesh(2, 2, 2)
    split = lambda *spec: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    params = dict(
        trunk=dict(layers=dict(kernel=jax.ShapeDtypeStruct((3, 8, 16), jnp.bfloat16,
                                                           sharding=split(None, "fsdp", "tensor"))),
                   norm=jax.ShapeDtypeStruct((8,), jnp.float32, sharding=split())),
        head=dict(bias=np.zeros((), np.float32),
                  kernel=jax.ShapeDtypeStruct((8, 1), jnp.float32,
                                              sharding=split(("data", "fsdp")))))
    assert parameter_overview(params).splitlines() == [
        "parameters: 401 (836 B) in 4 arrays",
        "head                                                9",
        "  bias           scalar  float32                    1",
        "  kernel         8×1     float32   data+fsdp,·      8",
        "trunk                                             392",
        "  layers/kernel  3×8×16  bfloat16  ·,fsdp,tensor  384",
        "  norm           8       float32   replicated       8",
    ]
