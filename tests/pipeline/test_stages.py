"""The SFT, reward-model and DPO stages end to end on the tiny presets: learning, resumption,
layouts, safety."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import dpo, rm, sft
from experiments.train import run
from rlhf_jax.checkpoints import load_pretrained
from rlhf_jax.checkpoints.scalar_model import load_scalar_model
from rlhf_jax.checkpoints.train_state import TrainCheckpoints
from rlhf_jax.models import CausalLM, ScalarHeadModel
from rlhf_jax.pipeline.metrics import NonFiniteError, read_metrics
from tests.metrics_log import straight_and_interrupted, timeless_metrics


def tiny(stage, records, **fields):
    config = dict(sft=sft, rm=rm, dpo=dpo)[stage].get_config(f"tiny,records={records}")
    config.eval_every = 0
    config.data.max_len = 160
    config.optimizer.warmup_steps = 2
    config.mesh.devices = 1  # sharded steps are tested in tests/train; one device compiles faster
    for key, value in fields.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    return config


def test_tiny_sft_lowers_validation_loss_and_exports_a_loadable_model(tmp_path):
    result = run(tiny("sft", 400, steps=40), str(tmp_path))
    val = read_metrics(str(tmp_path), "validation")
    assert [r["step"] for r in val] == [0, 40]
    assert val[1]["loss"] < 0.5 * val[0]["loss"], val
    assert result["loss"] == pytest.approx(val[1]["loss"])
    config, params = load_pretrained(str(tmp_path / "model"))
    assert config.n_layers == 2 and set(params) == {"trunk", "lm_head"}
    report = json.load(open(tmp_path / "data" / "demonstration_report.json"))
    assert report["read"] == 400 and report["train_records"] > report["validation_records"] > 0


def test_tiny_reward_model_beats_chance_and_is_normalized(tmp_path):
    result = run(tiny("rm", 600, steps=60), str(tmp_path))
    val = read_metrics(str(tmp_path), "validation")
    assert val[-1]["accuracy"] > 0.8 and val[-1]["accuracy"] > val[0]["accuracy"] + 0.1, val
    labelers = {k for k in val[-1] if k.startswith("accuracy/")}
    assert labelers == {"accuracy/l0", "accuracy/l1", "accuracy/l2", "accuracy/l3"}
    # The noisiest labeler (l3) disagrees with the learned preference most often.
    assert min(labelers, key=lambda k: val[-1][k]) == "accuracy/l3"
    assert abs(result["demonstration_mean_after"]) < 1e-4
    assert abs(result["demonstration_offset"]) > 1e-2
    config, params, info = load_scalar_model(str(tmp_path / "reward_model"))
    assert info["demonstration_offset"] == pytest.approx(result["demonstration_offset"])
    assert params["head"]["bias"].shape == ()


def traced(monkeypatch, cls, method: str) -> list:
    """A list that gets an entry each time ``cls.method`` is traced (or run)."""
    calls, original = [], getattr(cls, method)

    def spy(module, *args, **kwargs):
        calls.append(method)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(cls, method, spy)
    return calls


def in_both_layouts(tmp_path, monkeypatch, stage: str, cls, method: str, read) -> list:
    """The tiny ``stage`` run on whole rows, then with each prompt computed once
    (``data.max_prompt_len`` > 0, nothing cut), checking that only the second calls
    ``cls.method``: [(result, train metrics, read(workdir))] for the two runs, in that order."""
    runs, calls = [], traced(monkeypatch, cls, method)
    for name, fields in (("rows", {}), ("once", dict(data__max_len=320,
                                                      data__max_prompt_len=160))):
        calls.clear()
        workdir = str(tmp_path / name)
        result = run(tiny(stage, 300, steps=12, **fields), workdir)
        assert bool(calls) == (name == "once")
        runs.append((result, read_metrics(workdir, "train"), read(workdir)))
    return runs


def test_reward_model_with_each_prompt_computed_once_trains_as_on_whole_rows(tmp_path,
                                                                             monkeypatch):
    """``data.max_prompt_len`` > 0 (the prompt-once layout) scores the same sequences when
    nothing is cut, so the run's losses and validation follow the whole-row run's."""
    (rows, rows_train, rows_val), (once, once_train, once_val) = in_both_layouts(
        tmp_path, monkeypatch, "rm", ScalarHeadModel, "score_after_prompt",
        lambda workdir: read_metrics(workdir, "validation"))
    np.testing.assert_allclose([r["loss"] for r in once_train], [r["loss"] for r in rows_train],
                               rtol=1e-4)
    assert rows_val[-1]["accuracy"] > rows_val[0]["accuracy"]  # it learned something
    for key in ("loss", "accuracy", "reward_mean", "reward_std"):
        assert once_val[-1][key] == pytest.approx(rows_val[-1][key], rel=1e-4, abs=1e-5), key
    assert once["demonstration_offset"] == pytest.approx(rows["demonstration_offset"], rel=1e-4)


def test_dpo_with_each_prompt_computed_once_trains_as_on_whole_rows(tmp_path, monkeypatch):
    """DPO's ``data.max_prompt_len`` > 0: the reference log-probs, the train losses and the
    validation follow the whole-row run's when nothing is cut."""
    (rows, rows_train, rows_ref), (once, once_train, once_ref) = in_both_layouts(
        tmp_path, monkeypatch, "dpo", CausalLM, "logits_after_prompt",
        lambda workdir: np.load(os.path.join(workdir, "reference", "validation.npy")))
    np.testing.assert_allclose(once_ref, rows_ref, rtol=1e-5, atol=1e-4)
    assert np.std(rows_ref) > 1.0  # responses of different lengths and tokens
    np.testing.assert_allclose([r["loss"] for r in once_train], [r["loss"] for r in rows_train],
                               rtol=1e-4)
    assert rows_train[-1]["loss"] < rows_train[0]["loss"]  # it learned something
    for key in ("loss", "accuracy", "margin", "chosen_logprob", "rejected_logprob"):
        assert once[key] == pytest.approx(rows[key], rel=1e-4, abs=1e-5), key


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    """The loop is every stage's (the RM's and PPO's too; PPO's resumption is tested in
    test_ppo_stage.py, each stream kind's in tests/data/test_loaders.py)."""
    config = tiny("sft", 300, steps=8, save_every=4, eval_every=4)
    straight, resumed = straight_and_interrupted(run, config, tmp_path, monkeypatch, 6)
    assert TrainCheckpoints(os.path.join(resumed, "checkpoints")).latest_step() == 4
    run(config, resumed)
    assert timeless_metrics(resumed) == timeless_metrics(straight)
    a, b = (load_file(os.path.join(d, "model", "model.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_step_and_metric_and_keeps_checkpoints(tmp_path):
    # Updates of ~1e15 per weight keep step 1 finite and overflow the next forward pass.
    config = tiny("sft", 200, steps=6, save_every=1, optimizer__learning_rate=1e15,
                  optimizer__warmup_steps=0, optimizer__clip_norm=0.0)
    with pytest.raises(NonFiniteError, match=r"step (\d+): train metric '\w+' is (nan|inf)") as e:
        run(config, str(tmp_path))
    failed = int(e.value.args[0].split(":")[0].split()[1])
    assert failed >= 2
    rows = read_metrics(str(tmp_path), "train")
    assert [r["step"] for r in rows] == list(range(1, failed)), "every finite step was logged"
    assert TrainCheckpoints(str(tmp_path / "checkpoints")).latest_step() == failed - 1


def test_invalid_lines_are_counted_when_skipping(tmp_path):
    path = tmp_path / "demos.jsonl"
    good = [json.dumps(dict(prompt=f"prompt number {i}.", response="ok", user_id=i)) for i in range(60)]
    path.write_text("\n".join(good[:30] + ['{"prompt": "x"}', "not json"] + good[30:]) + "\n")
    config = tiny("sft", 0, steps=3, data__path=str(path), data__on_error="skip")
    run(config, str(tmp_path / "run"))
    report = json.load(open(tmp_path / "run" / "data" / "demonstration_report.json"))
    assert report["read"] == 62 and report["skipped_invalid"] == 2
    assert "demos.jsonl:31: field 'response': missing" in report["skipped_lines"][0]
    config.data.on_error = "raise"
    with pytest.raises(ValueError, match="demos.jsonl:31: field 'response': missing"):
        run(config, str(tmp_path / "strict"))
