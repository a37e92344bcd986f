"""``python -m experiments.train`` with command-line overrides, as a user runs it."""

import json

from tests.processes import run


def test_train_entry_point_runs_a_stage_with_overrides(tmp_path):
    cmd = ["-m", "experiments.train", "--config=configs/sft.py:tiny",
           f"--workdir={tmp_path}", "--config.steps=3", "--config.data.toy_records=200",
           "--config.optimizer.warmup_steps=0", "--config.data.max_len=128",
           "--config.mesh.devices=1"]
    out = run(cmd, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loss"] > 0 and (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "metrics.jsonl").exists() and list((tmp_path / "tensorboard").iterdir())
    bad = run(cmd[:3] + ["--config.no_such_field=1"])
    assert bad.returncode != 0 and "no_such_field" in bad.stderr
