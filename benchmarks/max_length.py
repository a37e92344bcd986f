"""Longest trainable sequence: the largest length T at which one SFT step fits a memory budget,
for each remat policy, from XLA's memory analysis of the compiled step.

    python -m benchmarks.max_length --model=smollm2-135m --batch=8 --budget_gb=20 \\
        --policies=none,dots,full --check_seq=512

The step is ``sft_step`` (forward, backward, global-norm clipping, AdamW update) of
``CausalLM(get_config('<model>,dtype=<dtype>,remat_policy=<policy>'))`` on ``--batch`` rows of
T tokens, float32 params and AdamW state, jitted with the state donated, as the SFT stage runs it
(``benchmarks/train_steps.py``'s ``ours()``) but without a mesh. Nothing is materialised: state,
batch and key are ``ShapeDtypeStruct`` s (``jax.eval_shape``), and each length is only lowered
and compiled, ``jax.jit(step, donate_argnums=0).lower(state, batch, key).compile()``. Its need is
XLA's own ``memory_analysis()`` of the executable (jax's ``CompiledMemoryStats``):

    peak = argument_size + output_size + temp_size − alias_size

arguments (state, batch, key) and outputs (new state, metrics) live for the whole execution,
``temp`` is every intermediate buffer of XLA's buffer assignment (buffers whose live ranges do
not overlap share bytes), and ``alias`` is the outputs written in place of donated arguments
(the new state into the old), counted once. jax 0.10.2's ``CompiledMemoryStats`` has these
four fields (and ``host_*`` twins, 0 here) and also ``peak_memory_in_bytes``, reported as
``xla_peak_gb_at_max``: on XLA:CPU it is only the argument size (1.61 GB for SmolLM2 at every
length), so the budget is judged on the formula. GB are 1e9 bytes.

For each policy the length doubles from ``--granularity`` until a step no longer fits
``--budget_gb`` (or passes ``--max_seq``), then bisects between the last fit and the first
miss down to ``--granularity`` tokens. Rope models need no change to reach any length (cos and
sin come from the positions, there is no table); a model with learned positions gets
``max_seq_len`` raised to T (a bigger table than the preset's, counted in the peak).

``--check_seq`` (0: skip) checks the analysis against the process once: the state is
materialised, the step compiled and run ``--check_steps`` times at that length under
``--check_policy``, and the peak resident memory (``VmHWM`` of ``/proc/self/status``, reset
with ``/proc/self/clear_refs`` after compilation, once the state exists) is compared with the
analysis: the state's RSS against ``argument_size``, the growth during the steps against
``output + temp − alias`` (what a step adds on top of its live arguments).

Caveats: the figure is the backend this runs on (``device`` in the JSON; here XLA:CPU, host
memory). XLA:CPU's buffer assignment, fusion and algorithms are not a GPU's (no cuDNN/Triton
attention or GEMM workspaces, different fusion decisions, no allocator fragmentation or
framework reservation), so a GPU's limit at the same budget can differ in both directions.
The analysis leaves out the executable, the runtime and Python (hundreds of MB of RSS), and
that the process must also hold the data while compiling. Attention is materialised
(B, heads, T, T float32 scores), so memory grows with T² and the longest length is set by the
attention and the (B, T, vocab) float32 logits, not by the weights.

Prints one line per policy, then as the last line one JSON object: model, batch, budget_gb,
dtype, rows (policy, max_seq, peak_gb_at_max, peak_gb_at_next: the first length that did not
fit, or null, compile_s: compiling the step at max_seq, and every length probed), check,
jax_version, device.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.training.train_state import TrainState

from configs.models import get_config
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.train.optim import OptimizerConfig, make_optimizer
from rlhf_jax.train.sft import sft_step

FLAGS = flags.FLAGS
GB = 1e9


def define_flags() -> None:
    """Flags of ``python -m benchmarks.max_length`` (defined there only, so that importing this
    module, as its test does, defines none)."""
    flags.DEFINE_string("model", "smollm2-135m", "model preset in configs/models.py")
    flags.DEFINE_integer("batch", 8, "rows per SFT step")
    flags.DEFINE_float("budget_gb", 20.0, "memory budget of one step, GB (1e9 bytes)")
    flags.DEFINE_list("policies", ["none", "dots", "full"], "remat policies to search")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "compute dtype (params and AdamW state stay float32)")
    flags.DEFINE_integer("granularity", 128, "lengths searched are multiples of this")
    flags.DEFINE_integer("max_seq", 32768, "longest length tried")
    flags.DEFINE_integer("check_seq", 0, "length of the RSS check (0: skip)")
    flags.DEFINE_string("check_policy", "none", "remat policy of the RSS check")
    flags.DEFINE_integer("check_steps", 2, "steps run by the RSS check")


def model_config(model: str, policy: str, dtype: str, seq: int) -> ModelConfig:
    config = ModelConfig.from_dict(get_config(f"{model},dtype={dtype},remat_policy={policy}"))
    if config.position == "learned" and config.max_seq_len < seq:
        config = config.replace(max_seq_len=seq)  # rope has no table: any length works
    return config


def make_step(config: ModelConfig):
    """``(jitted step with the state donated, state initialiser: key -> TrainState)``."""
    model = CausalLM(config)
    tx = make_optimizer(OptimizerConfig(learning_rate=1e-4, total_steps=10_000))

    def init(key):
        params = model.init(key, jnp.zeros((1, 8), jnp.int32))["params"]
        return nn.meta.unbox(TrainState.create(apply_fn=model.apply, params=params, tx=tx))

    return jax.jit(functools.partial(sft_step, model=model), donate_argnums=0), init


def abstract_batch(batch: int, seq: int) -> dict:
    shape = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    return dict(tokens=shape, segment_ids=shape, loss_mask=shape)


def memory_stats(compiled) -> dict:
    """The executable's ``CompiledMemoryStats`` in bytes, and ``peak`` by the formula above."""
    m = compiled.memory_analysis()
    stats = dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
                 temp=m.temp_size_in_bytes, alias=m.alias_size_in_bytes,
                 xla_peak=getattr(m, "peak_memory_in_bytes", None))
    stats["peak"] = stats["argument"] + stats["output"] + stats["temp"] - stats["alias"]
    return stats


def analyse(model: str, policy: str, dtype: str, batch: int, seq: int) -> dict:
    """Compiles the step at ``batch × seq`` from shapes only; its memory (bytes) and compile_s."""
    step, init = make_step(model_config(model, policy, dtype, seq))
    key = jax.eval_shape(lambda: jax.random.key(0))
    state = jax.eval_shape(init, key)
    began = time.perf_counter()
    compiled = step.lower(state, abstract_batch(batch, seq), key).compile()
    compile_s = time.perf_counter() - began
    stats = memory_stats(compiled)
    del compiled
    gc.collect()
    return dict(stats, seq=seq, compile_s=compile_s)


def search(model: str, policy: str, dtype: str, batch: int, budget_gb: float,
           granularity: int = 128, max_seq: int = 32768, log=None) -> dict:
    """The largest multiple of ``granularity`` up to ``max_seq`` whose step's peak is within the
    budget: doubling from ``granularity``, then bisection. Assumes the peak grows with T."""
    budget = budget_gb * GB
    probes: dict[int, dict] = {}

    def fits(seq: int) -> bool:
        if seq not in probes:
            probes[seq] = analyse(model, policy, dtype, batch, seq)
            if log:
                p = probes[seq]
                log(f"  {policy:5s} T={seq:6d} peak {p['peak'] / GB:8.3f} GB "
                    f"(temp {p['temp'] / GB:.3f}) compile {p['compile_s']:.1f} s")
        return probes[seq]["peak"] <= budget

    began = time.perf_counter()
    fit, miss = 0, None
    seq = granularity
    while seq <= max_seq:  # doubling
        if not fits(seq):
            miss = seq
            break
        fit, seq = seq, seq * 2
    if miss is None and fit < max_seq:
        top = max_seq // granularity * granularity
        if top > fit:
            if fits(top):
                fit = top
            else:
                miss = top
    if miss is not None:  # bisection between the last fit and the first miss
        while miss - fit > granularity:
            mid = (fit + miss) // 2 // granularity * granularity
            if fits(mid):
                fit = mid
            else:
                miss = mid
    at_max, at_next = probes.get(fit), probes.get(miss)
    return dict(policy=policy, max_seq=fit,
                peak_gb_at_max=at_max["peak"] / GB if at_max else None,
                peak_gb_at_next=at_next["peak"] / GB if at_next else None,
                next_seq=miss, compile_s=at_max["compile_s"] if at_max else None,
                xla_peak_gb_at_max=(at_max["xla_peak"] / GB
                                    if at_max and at_max["xla_peak"] is not None else None),
                search_s=time.perf_counter() - began,
                probes=[dict(seq=s, peak_gb=p["peak"] / GB, argument_gb=p["argument"] / GB,
                             output_gb=p["output"] / GB, temp_gb=p["temp"] / GB,
                             alias_gb=p["alias"] / GB, compile_s=p["compile_s"])
                        for s, p in sorted(probes.items())])


def _status_kb(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def _reset_hwm() -> bool:
    """Resets ``VmHWM`` to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def check(model: str, policy: str, dtype: str, batch: int, seq: int, steps: int = 2) -> dict:
    """Runs the step ``steps`` times at ``batch × seq`` and compares resident memory with the
    analysis (GB): the state's RSS with ``argument``, the RSS peak during the steps above the
    RSS before them with ``output + temp − alias``."""
    config = model_config(model, policy, dtype, seq)
    step, init = make_step(config)
    began = time.perf_counter()
    compiled = step.lower(jax.eval_shape(init, jax.random.key(0)), abstract_batch(batch, seq),
                          jax.random.key(1)).compile()
    compile_s = time.perf_counter() - began
    stats = memory_stats(compiled)
    available = _status_kb("MemAvailable", "/proc/meminfo") * 1024
    if stats["peak"] > 0.9 * available:  # other processes hold the memory: do not start swapping
        return dict(policy=policy, seq=seq, batch=batch, skipped=(
            f"analysis peak {stats['peak'] / GB:.2f} GB > 90% of MemAvailable "
            f"{available / GB:.2f} GB"), analysis_peak_gb=stats["peak"] / GB)
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, config.vocab_size, (batch, seq)).astype(np.int32)
    data = jax.device_put(dict(tokens=tokens, segment_ids=np.ones_like(tokens),
                               loss_mask=np.ones_like(tokens)))
    init_jit = jax.jit(init)
    jax.block_until_ready(init_jit.lower(jax.random.key(0)).compile())  # compile it first
    gc.collect()
    rss_before_state = _status_kb("VmRSS") * 1024
    state = jax.block_until_ready(init_jit(jax.random.key(0)))
    gc.collect()
    rss_state = _status_kb("VmRSS") * 1024
    reset = _reset_hwm()
    hwm_start = _status_kb("VmHWM") * 1024
    times, losses, hwm_after = [], [], []
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(state, data, jax.random.key(i)))
        times.append(time.perf_counter() - t0)
        losses.append(float(metrics["loss"]))
        hwm_after.append(_status_kb("VmHWM") * 1024)
    rss_after = _status_kb("VmRSS") * 1024
    transient = stats["output"] + stats["temp"] - stats["alias"]
    growth = hwm_after[-1] - rss_state
    del state, metrics, compiled
    gc.collect()
    return dict(
        policy=policy, seq=seq, batch=batch, steps=steps, step_s=times, losses=losses,
        compile_s=compile_s, hwm_reset=reset,
        analysis_peak_gb=stats["peak"] / GB, analysis_argument_gb=stats["argument"] / GB,
        analysis_output_gb=stats["output"] / GB, analysis_temp_gb=stats["temp"] / GB,
        analysis_alias_gb=stats["alias"] / GB,
        analysis_transient_gb=transient / GB,
        analysis_xla_peak_gb=None if stats["xla_peak"] is None else stats["xla_peak"] / GB,
        rss_before_state_gb=rss_before_state / GB, rss_with_state_gb=rss_state / GB,
        measured_state_gb=(rss_state - rss_before_state) / GB,
        hwm_at_start_gb=hwm_start / GB, hwm_after_each_step_gb=[h / GB for h in hwm_after],
        rss_after_steps_gb=rss_after / GB,
        measured_growth_gb=growth / GB,
        growth_over_transient=growth / transient if transient else None,
        measured_peak_over_analysis_peak=(hwm_after[-1] - rss_before_state) / stats["peak"])


def main(_):
    check_result = None
    if FLAGS.check_seq:  # first, before the search's compilations fill the process
        check_result = check(FLAGS.model, FLAGS.check_policy, FLAGS.dtype, FLAGS.batch,
                             FLAGS.check_seq, FLAGS.check_steps)
        c = check_result
        if "skipped" in c:
            print(f"check skipped: {c['skipped']}", flush=True)
    if check_result and "skipped" not in check_result:
        print(f"check {c['policy']} T={c['seq']}: analysis peak {c['analysis_peak_gb']:.3f} GB "
              f"(args {c['analysis_argument_gb']:.3f}, +{c['analysis_transient_gb']:.3f} during "
              f"the step); measured state {c['measured_state_gb']:.3f} GB, "
              f"+{c['measured_growth_gb']:.3f} GB during {c['steps']} steps "
              f"({c['growth_over_transient']:.2f}x), step {min(c['step_s']):.1f} s", flush=True)
    rows = []
    for policy in FLAGS.policies:
        row = search(FLAGS.model, policy, FLAGS.dtype, FLAGS.batch, FLAGS.budget_gb,
                     FLAGS.granularity, FLAGS.max_seq,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
        rows.append(row)
        nxt = ("none up to --max_seq" if row["next_seq"] is None else
               f"T={row['next_seq']} needs {row['peak_gb_at_next']:.2f} GB")
        at_max = "-" if row["peak_gb_at_max"] is None else f"{row['peak_gb_at_max']:.2f}"
        print(f"{FLAGS.model} batch {FLAGS.batch} {FLAGS.dtype} remat={policy:5s} "
              f"max_seq {row['max_seq']:6d} ({at_max} GB of {FLAGS.budget_gb:g}; {nxt}), "
              f"{len(row['probes'])} lengths compiled in {row['search_s']:.0f} s", flush=True)
    print(json.dumps(dict(model=FLAGS.model, batch=FLAGS.batch, budget_gb=FLAGS.budget_gb,
                          dtype=FLAGS.dtype, granularity=FLAGS.granularity,
                          max_seq_cap=FLAGS.max_seq, formula="argument + output + temp - alias",
                          rows=rows, check=check_result, jax_version=jax.__version__,
                          device=f"{jax.default_backend()}: {jax.devices()[0].device_kind}")))


if __name__ == "__main__":
    define_flags()
    app.run(main)
