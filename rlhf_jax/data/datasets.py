"""TensorFlow Datasets builders for the record formats, written as ``array_record`` (no TensorFlow).

Validated, filtered records go in split by split; the builder writes one
``array_record`` file set per split under ``data_dir/<builder>/1.0.0`` and
``tfds.data_source`` reads them back with random access, which is what grain's
``MapDataset.source`` needs. A prepared directory is reused as it is, so a
resumed run reads exactly the data it started with.

    write_records("comparison", {"train": [...], "validation": [...]}, data_dir)
    sources = read_records("comparison", data_dir)   # {"train": ArrayRecordDataSource, ...}
    comparison = to_record("comparison", sources["train"][0])

Writing prints nothing: TFDS's "Downloading and preparing dataset …" and "Dataset …
downloaded and prepared to …" lines (``termcolor`` prints to stdout, for datasets
it downloads) and its progress bars per split are off, since nothing is downloaded
and the stage prints its own summary of what it kept (``pipeline.stage.prepare``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from rlhf_jax.data.records import Comparison, Demonstration, PretrainText, Prompt

_TEXT = tfds.features.Text()
RECORD_TYPES = {"demonstration": Demonstration, "comparison": Comparison, "prompt": Prompt,
                "pretrain": PretrainText}
# Optional text fields are stored as "" and read back as None.
_OPTIONAL = ("user_id", "category", "labeler_id")


class _RecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the records given at construction (``splits``: name → records) as array_record."""

    VERSION = tfds.core.Version("1.0.0")
    KIND = ""

    def __init__(self, *, splits: Mapping[str, Sequence[Any]] | None = None, **kwargs):
        self._splits = splits
        super().__init__(file_format="array_record", **kwargs)

    def _log_download_bytes(self) -> None:
        """TFDS prints the download size here; there is no download."""

    def _log_download_done(self) -> None:
        """TFDS prints "downloaded and prepared to …" here; the stage reports its data itself."""

    def _info(self) -> tfds.core.DatasetInfo:
        fields = dataclasses.fields(RECORD_TYPES[self.KIND])
        features = {f.name: (tfds.features.Sequence(np.int32) if f.name == "ranking" else
                             tfds.features.Sequence(_TEXT) if f.name == "responses" else _TEXT)
                    for f in fields}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                     description=f"{self.KIND} records (rlhf_jax.data.records)")

    def _split_generators(self, dl_manager):
        if self._splits is None:
            raise ValueError(f"{self.name}: not prepared in {self.data_dir}, and no records given")
        # An empty split (say, no test users) is not written: TFDS cannot store one.
        return {name: self._generate_examples(records) for name, records in self._splits.items()
                if records}

    def _generate_examples(self, records):
        for index, record in enumerate(records):
            example = dataclasses.asdict(record)
            yield index, {k: ("" if v is None else list(v) if isinstance(v, tuple) else v)
                          for k, v in example.items()}


class DemonstrationRecords(_RecordsBuilder):
    KIND = "demonstration"


class ComparisonRecords(_RecordsBuilder):
    KIND = "comparison"


class PromptRecords(_RecordsBuilder):
    KIND = "prompt"


class PretrainRecords(_RecordsBuilder):
    KIND = "pretrain"


BUILDERS = {b.KIND: b for b in (DemonstrationRecords, ComparisonRecords, PromptRecords,
                                PretrainRecords)}


def _builder(kind: str, data_dir: str, splits=None) -> _RecordsBuilder:
    if kind not in BUILDERS:
        raise ValueError(f"unknown record kind {kind!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[kind](data_dir=data_dir, splits=splits)


def write_records(kind: str, splits: Mapping[str, Sequence[Any]], data_dir: str) -> None:
    """Prepares the ``kind`` dataset in ``data_dir`` from records per split (kept if already there)."""
    with _without_progress_bars():
        _builder(kind, data_dir, splits).download_and_prepare()


@contextlib.contextmanager
def _without_progress_bars():
    """TFDS's progress bars off while inside, then as they were (TFDS offers a setter only, so its
    flag is read)."""
    shown = tqdm_utils._active
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(shown)


def is_prepared(kind: str, data_dir: str) -> bool:
    return _builder(kind, data_dir).is_prepared()


def remove_records(kind: str, data_dir: str) -> None:
    """Deletes the ``kind`` dataset from ``data_dir``, whole or partly written."""
    shutil.rmtree(os.path.join(data_dir, _builder(kind, data_dir).name), ignore_errors=True)


def read_records(kind: str, data_dir: str) -> dict:
    """``{split: data source}`` of a prepared dataset: ``len`` and ``source[i]`` (a dict of bytes)."""
    return _builder(kind, data_dir).as_data_source()


def to_record(kind: str, example: Mapping[str, Any]):
    """A stored example (as the data source returns it) back to its record dataclass."""

    def value(name, v):
        if name == "ranking":
            return tuple(int(i) for i in v)
        if name == "responses":
            return tuple(r.decode() for r in v)
        text = v.decode() if isinstance(v, bytes) else str(v)
        return None if name in _OPTIONAL and not text else text

    return RECORD_TYPES[kind](**{k: value(k, v) for k, v in example.items()})
