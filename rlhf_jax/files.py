"""Files that survive ``kill -9``: written whole or not at all, read back tolerating a torn tail.

Every file the pipeline writes goes through ``write_atomic`` (a temporary file
in the same directory, flushed and fsynced, then ``os.replace``), so a reader
sees either the old file or the new one. Append-only logs (``metrics.jsonl``)
cannot be replaced at every line; ``read_jsonl_lines`` drops a last line cut
short by a kill (with a warning) instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from typing import Any, Iterator, Sequence


@contextlib.contextmanager
def write_atomic(path: str, mode: str = "w") -> Iterator[Any]:
    """``with write_atomic(path) as f: f.write(...)``: ``path`` appears, whole, only on success."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> str:
    with write_atomic(path) as f:
        f.write(text)
    return path


def write_json(path: str, value: Any) -> str:
    """Indented JSON; numpy scalars become floats."""
    return write_text(path, json.dumps(value, indent=2, default=float))


def write_jsonl(records: Sequence[dict], path: str) -> str:
    """One JSON object per line, written atomically; returns ``path``."""
    with write_atomic(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def read_jsonl_lines(path: str) -> list[dict]:
    """The objects of an append-only JSON Lines log. A last line without its newline (the writer
    was killed in the middle of it) is dropped with a warning; a bad complete line is damage,
    not a torn write, and raises."""
    with open(path) as f:
        *lines, tail = f.read().split("\n")  # tail is "" when the file ends with a newline
    if tail:
        warnings.warn(f"{path}: dropped a torn last line ({len(tail)} characters, written when "
                      "the run was killed)", stacklevel=2)
    return [json.loads(line) for line in lines]
