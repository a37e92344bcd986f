"""The ablation study's report: ``workdir/ablations.md``, ``ablations.json`` and plots.

``write(workdir, results)`` takes ``pipeline.ablations.run_ablations``'s results
(one row per sweep, value and seed) and writes, per sweep, a table of every
measured quantity as its mean over seeds with a 95% t-interval
(``stats.seed_interval``) and a plot of the win rates against SFT with those
intervals (``ablation_<sweep>.png``); and ``ablation_overoptimization.png``:
the held-out labelers' gold score of each validation checkpoint of PPO-ptx
and DPO on all the comparisons against √KL from SFT (nats^½ per response), one
point per checkpoint and seed, a line through each seed's checkpoints in
order of KL (Gao et al. 2022), beside each method's own proxy (RM score, DPO's
implicit reward β·KL).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend is chosen for the caller

from rlhf_jax.evaluation.report import save_figure
from rlhf_jax.evaluation.stats import seed_interval
from rlhf_jax.files import write_json, write_text

SWEEP_TITLES = {"size": "share of the comparisons", "labelers": "training labelers",
                "noise": "labeler noise (× the panel's)"}
COLORS = {"ppo_ptx": "#c44e52", "dpo": "#4c72b0", "dpo_kwise": "#8172b2", "best_of_n": "#55a868"}


def aggregate(rows: list[dict]) -> dict:
    """``{sweep: {value: {quantity: seed_interval}}}`` over the rows' seeds."""
    out: dict = {}
    for row in rows:
        cell = out.setdefault(row["sweep"], {}).setdefault(row["value"], {})
        for key, value in row.items():
            if key not in ("sweep", "value", "seed"):
                cell.setdefault(key, []).append(value)
    return {sweep: {value: {k: seed_interval(v) for k, v in cell.items()}
                    for value, cell in sorted(values.items())}
            for sweep, values in out.items()}


def _cell(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _table(sweep: str, values: dict) -> list[str]:
    keys = [k for k in next(iter(values.values()))]
    lines = [f"| {SWEEP_TITLES[sweep]} | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|" + "---|" * (len(keys) + 1)]
    for value, cell in values.items():
        lines.append(f"| {value:g} | " + " | ".join(_cell(cell[k]) for k in keys) + " |")
    return lines


def _sweep_plot(sweep: str, values: dict, sft: dict, path: str) -> None:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    xs = list(values)
    for method, color in COLORS.items():
        key = f"{method}_win_rate"
        if key not in values[xs[0]]:
            continue
        cells = [values[x][key] for x in xs]
        ax.errorbar(xs, [c["value"] for c in cells], capsize=3, marker="o", color=color,
                    label=method, yerr=[[c["value"] - c["low"] for c in cells],
                                        [c["high"] - c["value"] for c in cells]])
    ax.axhline(sft["win_rate"], color="gray", linestyle="--", linewidth=1, label="SFT")
    if sweep == "size":
        ax.set_xscale("log", base=2)
    ax.set_xlabel(SWEEP_TITLES[sweep])
    ax.set_ylabel("win rate vs SFT (held-out labelers)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _overoptimization(curves: dict, path: str) -> None:
    fig = Figure(figsize=(9, 3.5))
    gold_ax, proxy_ax = fig.subplots(1, 2)
    for method, seeds in curves.items():
        for i, (seed, points) in enumerate(sorted(seeds.items())):
            points = sorted(points, key=lambda r: r["kl"])
            root = [np.sqrt(max(r["kl"], 0.0)) for r in points]
            label = method if i == 0 else None
            gold_ax.plot(root, [r["gold_score"] for r in points], "o-", color=COLORS[method],
                         alpha=0.7, markersize=3, label=label)
            proxy_ax.plot(root, [r["proxy"] for r in points], "o-", color=COLORS[method],
                          alpha=0.7, markersize=3, label=label)
    gold_ax.set_ylabel("gold score (held-out labelers)")
    proxy_ax.set_ylabel("proxy: RM score (PPO-ptx), β·KL (DPO)")
    for ax in (gold_ax, proxy_ax):
        ax.set_xlabel("√KL(π ‖ π_SFT) per response (nats^½)")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def write(workdir: str, results: dict) -> str:
    """Writes ``ablations.json``, the plots and ``ablations.md``; returns the report's path."""
    tables = aggregate(results["rows"])
    write_json(os.path.join(workdir, "ablations.json"), dict(results, tables={
        sweep: {f"{v:g}": cell for v, cell in values.items()} for sweep, values in tables.items()}))
    sft = results["sft"]
    parts = ["# Ablations: how much feedback, and is a reward model needed?", "",
             f"Every setting trained from the same SFT model with seeds {results['seeds']}; "
             f"means over seeds with 95% t-intervals. Policies are judged by the held-out "
             f"labelers on {results['eval_prompts']} evaluation prompts against one SFT sample "
             f"(a second SFT sample wins {sft['win_rate']:.3f}, gold score "
             f"{sft['gold_score']:.3f}); reward models on {results['test_comparisons']} test "
             f"comparisons kept out of the {results['pool_comparisons']} they are drawn from.",
             ""]
    for sweep, values in tables.items():
        _sweep_plot(sweep, values, sft, os.path.join(workdir, f"ablation_{sweep}.png"))
        parts += [f"## {SWEEP_TITLES[sweep]}", "", *_table(sweep, values), "",
                  f"![{sweep}](ablation_{sweep}.png)", ""]
    _overoptimization(results["curves"], os.path.join(workdir, "ablation_overoptimization.png"))
    parts += ["## Over-optimization: PPO-ptx against DPO", "",
              "Each validation checkpoint of the runs on all the comparisons, one line per seed.",
              "", "![over-optimization](ablation_overoptimization.png)", ""]
    return write_text(os.path.join(workdir, "ablations.md"), "\n".join(parts))
