"""The ablation study on its ``micro`` preset, from the shared micro run's first stages."""

import json
import math
import os
import shutil

import numpy as np

from configs.ablations import get_config
from rlhf_jax.pipeline.ablations import run_ablations, settings_of
from rlhf_jax.pipeline.settings import typed
from rlhf_jax.pipeline.ablations import Ablations

SHARED = ("inputs", "base", "sft", "round1/comparisons")


def test_every_setting_and_seed_is_trained_judged_and_reported(micro_pipeline, tmp_path):
    for name in SHARED:  # the micro run's base, SFT and first comparisons: nothing to redo
        shutil.copytree(os.path.join(micro_pipeline[0], name), tmp_path / "shared" / name)
    config = get_config("micro")
    results = run_ablations(config, str(tmp_path))
    study = typed(Ablations, config, "config")
    assert len(results["rows"]) == len(settings_of(study)) == 12
    for row in results["rows"]:
        methods = study.methods[row["sweep"]]
        assert set(row) == {"sweep", "value", "seed", "rm_training_labelers", "rm_heldout_labelers",
                            *(f"{m}_{k}" for m in methods for k in ("win_rate", "gold_score"))}
        for key, value in row.items():
            if key not in ("sweep",):
                assert math.isfinite(value), key
        assert 0 <= row["rm_training_labelers"] <= 1 and 0 <= row["ppo_ptx_win_rate"] <= 1
    # Sizes differ in data; labelers=4 and noise=1 are the size=1 data (trained once per seed).
    sizes = [len(open(tmp_path / f"size{s:g}" / "seed0.jsonl").readlines()) for s in (0.5, 1.0)]
    assert sizes[0] == round(sizes[1] / 2) and sizes[1] == results["pool_comparisons"]
    assert not os.path.exists(tmp_path / "labelers4") and not os.path.exists(tmp_path / "noise1")
    same = [r for r in results["rows"] if (r["sweep"], r["value"]) in
            (("size", 1.0), ("labelers", 4), ("noise", 1.0)) and r["seed"] == 1]
    assert len({r["ppo_ptx_win_rate"] for r in same}) == 1
    # One labeler ranks everything in the labelers=1 data; noisier labelers reorder rankings.
    one = [json.loads(line) for line in open(tmp_path / "labelers1" / "seed0.jsonl")]
    assert {r["labeler_id"] for r in one} == {"t0"}
    base = [json.loads(line)["ranking"] for line in open(tmp_path / "size1" / "seed0.jsonl")]
    noisy = [json.loads(line)["ranking"] for line in open(tmp_path / "noise2" / "seed0.jsonl")]
    assert np.mean([a != b for a, b in zip(base, noisy)]) > 0.3
    # Over-optimization points of both methods for every seed, each with KL and gold score.
    for method in ("ppo_ptx", "dpo"):
        assert set(results["curves"][method]) == {"0", "1"}
        for points in results["curves"][method].values():
            assert len(points) >= 2 and all(math.isfinite(p["kl"] + p["gold_score"])
                                            for p in points)
    report = open(tmp_path / "ablations.md").read()
    for name in ("ablation_size.png", "ablation_labelers.png", "ablation_noise.png",
                 "ablation_overoptimization.png"):
        assert name in report and os.path.getsize(tmp_path / name) > 0
    assert json.load(open(tmp_path / "ablations.json"))["rows"] == results["rows"]
    # A second run finds every step done.
    again = run_ablations(config, str(tmp_path))
    assert again["rows"] == results["rows"]
