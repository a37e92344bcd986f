"""Every benchmark runs, as a user runs it, at tiny shapes with its peers skipped, and prints its
figures as one JSON object on its last line (the peers' runners need their own virtualenvs)."""

import json
import subprocess
import sys

import pytest

from tests.processes import ROOT, environment

SMALL_ACCELERATOR = ["--model=tiny", "--seq=64", "--prompt=16", "--steps=2", "--warmup=0",
                     "--gen_batch=4", "--gen_prompt=16", "--gen_new=8", "--ppo_prompts=4",
                     "--ppo_prompt_len=16", "--ppo_new=8", "--ppo_iterations=1", "--peak_tflops=1"]
PPO = ["--models=tiny", "--dtypes=float32", "--skip_peers", "--peers=ppo", "--prompts=4",
       "--prompt_len=16", "--new_tokens=8", "--iterations=1", "--warmup=0"]
RUNS = {
    "matmul": ["--shapes=256x256x256", "--iters=1"],
    "forward": ["--model=tiny", "--seq=64", "--iters=2"],
    "generate": ["--model=tiny", "--peer=false", "--prompt=16", "--new=8", "--iters=1"],
    "train_steps": ["--models=tiny", "--dtypes=float32", "--skip_peers", "--seq=64",
                    "--prompt=16", "--responses=3", "--steps=2", "--warmup=0", "--peak_gflops=1"],
    "ppo": PPO,
    "ppo_two_programs": [*PPO, "--nofuse_scoring"],  # scoring and the update timed apart
    "accelerator": [*SMALL_ACCELERATOR, "--dtype=float32"],
    # cuDNN attention cannot run on CPU: the command records why and measures with xla.
    "accelerator_cudnn": [*SMALL_ACCELERATOR, "--dtype=bfloat16", "--attention=cudnn"],
    "memory": ["--cases=sft_small_full", "--sft_steps=3"],
}


def run(name: str, *extra: str) -> list[str]:
    """The lines the benchmark printed; the last is its JSON object."""
    script = name.removesuffix("_cudnn").removesuffix("_two_programs")
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *RUNS[name], *extra],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def positive(*values) -> bool:
    return all(isinstance(v, float) and v > 0 for v in values)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_benchmark_runs_at_tiny_shapes(name):
    lines = run(name)
    out = json.loads(lines[-1])
    if name == "matmul":
        assert positive(out["float32_peak_gflops"], out["bfloat16_f32acc_peak_gflops"])
    elif name == "forward":
        assert positive(out["tokens_per_s"], out["gflops_per_s"])
    elif name == "generate":
        assert positive(out["ours"]["new_tokens_per_s"]) and "transformers" not in out
    elif name == "train_steps":
        assert [(r["stage"], r["side"]) for r in out["rows"]] == [
            ("sft", "ours"), ("rm", "ours"), ("dpo", "ours")]
        assert all(positive(r["step_s"]) and r["last_loss"] < r["first_loss"]
                   and r["step_s_rounds"] == [r["step_s"]] for r in out["rows"])
    elif name.startswith("ppo"):
        ours = out[0]["ppo"]["ours"]
        assert positive(ours["generate_s"], ours["score_train_s"])
        assert abs(ours["iteration_s"] - ours["generate_s"] - ours["score_train_s"]) < 1e-9
        assert ours["iteration_s_rounds"] == [ours["iteration_s"]]
        apart = name == "ppo_two_programs"
        assert ("score_s" in ours) == ("train_s" in ours) == apart
        if apart:
            assert positive(ours["score_s"], ours["train_s"])
            assert ours["score_train_s"] >= ours["score_s"] + ours["train_s"]
    elif name == "accelerator":
        for part in ("forward", "sft", "rm"):
            assert positive(out[part]["tokens_per_s"], out[part]["mfu"])
        for part in ("sft", "rm"):  # also dispatched back to back, waited for once
            assert positive(out[part]["pipelined_step_s"], out[part]["pipelined_mfu"])
        assert positive(out["generate"]["new_tokens_per_s"], out["ppo"]["iteration_s"])
        assert out["model"] == "tiny" and out["backend"] == "cpu" and "cudnn_error" not in out
        # Each part was printed when it landed, so a run cut short keeps what it measured.
        printed = dict(line.split(": ", 1) for line in lines[:-1] if ": {" in line)
        for part in ("forward", "sft", "rm", "generate", "ppo"):
            assert json.loads(printed[part]) == out[part]
        landed = [out[part]["at_s"] for part in ("forward", "sft", "rm", "generate", "ppo")]
        assert landed == sorted(landed) and 0 < landed[-1] <= out["wall_s"]
    elif name == "accelerator_cudnn":
        assert out["attention"] == "xla" and out["cudnn_error"]
        assert positive(out["sft"]["step_s"], out["ppo"]["iteration_s"])
    elif name == "memory":
        assert positive(out["sft_small_full_peak_gb"], out["sft_small_full_s"])


def test_accelerator_runs_the_parts_asked_for_and_prints_where_the_time_went(tmp_path):
    lines = run("accelerator", "--parts=rm", "--parts=sft", f"--profile_dir={tmp_path}")
    out = json.loads(lines[-1])
    assert [part for part in ("forward", "sft", "rm", "generate", "ppo") if part in out] == [
        "sft", "rm"]
    for stage in ("sft", "rm"):  # the timed steps alone, one trace per step
        assert len(list(tmp_path.glob(f"{stage}/plugins/profile/*/*.trace.json.gz"))) == 1
        title = next(i for i, line in enumerate(lines) if line.startswith(f"{stage}: device time"))
        lane = next(i for i in range(title, len(lines)) if lines[i].startswith("XLA CPU client: "))
        ms, share, count, *_ = lines[lane + 1].split()
        assert float(ms) > 0 and share.endswith("%") and int(count) > 0


def test_accelerator_retries_with_xla_only_after_a_cudnn_failure_other_than_memory():
    from benchmarks.accelerator import retry_with_xla
    from configs.models import get_config
    from rlhf_jax.models import ModelConfig

    xla = ModelConfig.from_dict(get_config("tiny,dtype=bfloat16"))
    cudnn = xla.replace(attention="cudnn")
    unsupported = RuntimeError("INTERNAL: cuDNN does not support this head dim")
    out_of_memory = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    assert retry_with_xla(cudnn, unsupported)
    assert not retry_with_xla(cudnn, out_of_memory) and not retry_with_xla(xla, unsupported)
