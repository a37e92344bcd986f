"""``workdir/report.md`` and its plots from the evaluation's results.

``write(workdir, results)`` writes ``results.json`` (every number), the plots
``figure1.png`` (win rate against SFT with 95% intervals), ``overoptimization.png``
(RM and gold score against √KL at each validation of each RL run) and ``ppo_curves.png`` (RM
score, KL and win rate against SFT per iteration), and ``report.md`` with the
tables and samples.
``summary(results)`` is the table the pipeline prints.
"""

from __future__ import annotations

import math
import os

from matplotlib.figure import Figure  # no pyplot: no backend is chosen for the caller

from rlhf_jax.files import write_atomic, write_json, write_text


def save_figure(fig: Figure, path: str) -> None:
    """``fig``, laid out tight, as a PNG at ``path`` (written atomically)."""
    fig.tight_layout()
    with write_atomic(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")


def _ci(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def summary(results: dict) -> str:
    """Win rate, gold score and alignment tax per model, as a Markdown table."""
    tax = results["alignment_tax"]
    lines = [f"| model | win rate vs SFT ({results['judge']}) | gold score | pretraining loss "
             "| fact accuracy |", "|---|---|---|---|---|"]
    for model, win in results["win_rate_vs_sft"].items():
        gold = results["gold_score"].get(model)
        t = tax.get(model)
        tax_cells = f"{t['pretrain_loss']:.4f} | {t['fact_accuracy']:.3f}" if t else "- | -"
        lines.append(f"| {model} | {_ci(win)} | {_ci(gold) if gold else '-'} | {tax_cells} |")
    return "\n".join(lines)


def _figure1(results: dict, path: str) -> None:
    models = list(results["win_rate_vs_sft"])
    wins = [results["win_rate_vs_sft"][m] for m in models]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.bar(models, [w["value"] for w in wins], color="#4c72b0",
           yerr=[[w["value"] - w["low"] for w in wins], [w["high"] - w["value"] for w in wins]],
           capsize=4)
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"win rate vs SFT ({results['judge']})")
    save_figure(fig, path)


def _overoptimization(results: dict, path: str) -> None:
    """RM and gold score of each validation checkpoint against √KL from SFT (Gao et al. 2022),
    each run's points joined in order of KL, not of time."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    colors = ("#c44e52", "#55a868", "#4c72b0", "#8172b2", "#ccb974", "#64b5cd")
    for (run, rows), color in zip(results["overoptimization"].items(), colors):
        rows = sorted(rows, key=lambda r: r["kl"])
        root = [math.sqrt(max(r["kl"], 0.0)) for r in rows]
        ax.plot(root, [r["rm_score"] for r in rows], "o:", color=color, alpha=0.6,
                markersize=3, label=f"{run}: RM score")
        if rows and "gold_score" in rows[0]:
            ax.plot(root, [r["gold_score"] for r in rows], "s-", color=color, markersize=4,
                    label=f"{run}: gold score")
    ax.set_xlabel("√KL(π ‖ π_SFT) per response (nats^½)")
    ax.set_ylabel("score")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _curves(results: dict, path: str) -> None:
    """RM score, KL and (with labelers) the expected win rate against SFT per PPO iteration."""
    keys = [("rm_score", "RM score"), ("kl", "KL (nats)"), ("win_rate", "win rate vs SFT")]
    rows = next(iter(results["overoptimization"].values()))
    keys = [(k, label) for k, label in keys if rows and k in rows[0]]
    fig = Figure(figsize=(4 * len(keys), 3))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for run, rows in results["overoptimization"].items():
        steps = [r["iteration"] for r in rows]
        for ax, (key, _) in zip(axes, keys):
            ax.plot(steps, [r[key] for r in rows], label=run)
    for ax, (_, label) in zip(axes, keys):
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def write(workdir: str, results: dict) -> str:
    """Writes the results, plots and report; returns the report's path."""
    write_json(os.path.join(workdir, "results.json"), results)
    _figure1(results, os.path.join(workdir, "figure1.png"))
    _overoptimization(results, os.path.join(workdir, "overoptimization.png"))
    _curves(results, os.path.join(workdir, "ppo_curves.png"))
    rm, agreement = results["rm_accuracy"], results.get("agreement") or {}
    parts = [
        "# InstructGPT pipeline report", "",
        f"{results['prompts']} held-out prompts; win rates judged by the {results['judge']}, "
        "95% intervals over prompts.", "", summary(results), "", "![Figure 1](figure1.png)", "",
        "## Reward model", "",
        f"Pairwise accuracy on {rm['comparisons']} validation comparisons: "
        f"{rm['training_labelers']:.3f} as ranked by training labelers"
        + (f", {rm['heldout_labelers']:.3f} as ranked by held-out labelers"
           if "heldout_labelers" in rm else "") + " (the paper: 72.4% and 69.6%).", ""]
    if agreement:
        parts += [f"Inter-labeler agreement on the sampled comparisons: {agreement['training']:.3f} "
                  f"among training labelers, {agreement['heldout']:.3f} among held-out labelers "
                  "(the paper: 72.6% and 77.3%).", ""]
    if results["rubric"]:
        parts += ["## Rubric parts per model", "", "| model | content | clean | concise | quality |",
                  "|---|---|---|---|---|"]
        parts += [f"| {m} | " + " | ".join(f"{r[k]:.3f}" for k in ("content", "clean", "concise",
                                                                     "quality")) + " |"
                  for m, r in results["rubric"].items()] + [""]
    parts += ["## Alignment tax", "", "| model | held-out pretraining loss | fact accuracy | "
              "fact probability |", "|---|---|---|---|"]
    parts += [f"| {m} | {t['pretrain_loss']:.4f} | {t['fact_accuracy']:.3f} | "
              f"{t['fact_probability']:.3f} |" for m, t in results["alignment_tax"].items()]
    parts += ["", "## Over-optimization", "", "![over-optimization](overoptimization.png)", "",
              "![PPO curves](ppo_curves.png)", "", "## Samples", ""]
    for sample in results["samples"]:
        parts += [f"**{sample['prompt']}**", "", "| model | response |", "|---|---|"]
        parts += [f"| {m} | {str(text).replace('|', '/') or '(empty)'} |"
                  for m, text in sample.items() if m != "prompt"] + [""]
    return write_text(os.path.join(workdir, "report.md"), "\n".join(parts) + "\n")
