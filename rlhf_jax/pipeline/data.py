"""A stage's data: JSON Lines → validation → the paper's prompt hygiene → user splits → TFDS.

``prepare(kind, config, workdir, tokenizer)`` runs once per workdir: it reads
``config.path`` (every bad line raises ``RecordError`` naming file, line and
field, or with ``config.on_error='skip'`` is skipped and counted; comparisons may
hold at most ``config.k_max`` responses), drops prompts
over ``config.max_prompt_tokens`` tokens, drops prompts that contain another
prompt, caps records per user at ``config.max_per_user`` (these three skipped
for pretraining text, where each text is its own user), splits by user into
train / validation / test (``config.split_fractions``), writes the splits with
the TFDS builder of ``kind`` under ``workdir/data`` and the counts of every step
to ``workdir/data/<kind>_report.json``, last and atomically. A file left without
records by these steps, or without a training or validation split, is a
``UserError`` naming the file and what removed the records. A later run with the same
workdir reuses the prepared splits as they are; one killed before the report was
written starts the preparation over.
"""

from __future__ import annotations

import json
import os

from rlhf_jax import parallel
from rlhf_jax.data import datasets, prompt_filters
from rlhf_jax.data.records import read_jsonl
from rlhf_jax.errors import UserError
from rlhf_jax.files import write_json
from rlhf_jax.pipeline import layout

SPLITS = ("train", "validation", "test")


def prepare(kind: str, config, workdir: str, tokenizer) -> tuple[dict, dict]:
    """``(sources, report)``: ``{split: data source}`` and what each step kept or removed."""
    data_dir = os.path.join(workdir, layout.DATA)
    report_path = os.path.join(data_dir, f"{kind}_report.json")

    def write():
        if not os.path.exists(report_path):  # written last: without it the records may be partial
            datasets.remove_records(kind, data_dir)
            write_json(report_path, _write(kind, config, data_dir, tokenizer))

    parallel.on_process_zero(f"prepared {kind} records", write)
    with open(report_path) as f:
        report = json.load(f)
    return datasets.read_records(kind, data_dir), report


def _write(kind: str, config, data_dir: str, tokenizer) -> dict:
    records, read = read_jsonl(config.path, kind, on_error=config.on_error,
                               k_max=config.k_max)
    report = dict(source=os.path.abspath(config.path), read=read.kept + len(read.skipped),
                  skipped_invalid=len(read.skipped), skipped_lines=read.skipped[:20])
    if kind != "pretrain":  # the prompt hygiene concerns prompts only
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        records, report["dropped_long_prompts"] = prompt_filters.drop_long(
            records, count, config.max_prompt_tokens)
        records, report["dropped_containing_prompts"] = prompt_filters.drop_containing(records)
        records, report["dropped_over_user_cap"] = prompt_filters.cap_per_user(
            records, config.max_per_user)
        if not records:
            raise UserError(
                f"0 {kind}s left after prompt hygiene: {config.path}: of {read.kept} valid "
                f"records, {report['dropped_long_prompts']} longer than max_prompt_tokens="
                f"{config.max_prompt_tokens}, {report['dropped_containing_prompts']} containing "
                f"another prompt, {report['dropped_over_user_cap']} over max_per_user="
                f"{config.max_per_user}")
    splits = prompt_filters.split_by_user(records, tuple(config.split_fractions), config.split_seed)
    for name, split in zip(SPLITS, splits):
        if name != "test" and not split:
            raise UserError(f"{config.path}: the {name} split is empty: {len(records)} records "
                            f"kept, split by user as split_fractions="
                            f"{tuple(config.split_fractions)}; add data or change split_fractions")
    report.update({f"{name}_records": len(split) for name, split in zip(SPLITS, splits)})
    datasets.write_records(kind, dict(zip(SPLITS, splits)), data_dir)
    return report
