"""Record formats (JSON Lines) and their validation.

One JSON object per line:

* demonstration ``{"prompt", "response", "user_id"?, "category"?}``
* comparison ``{"prompt", "responses": [K strings], "ranking": [indices best→worst],
  "labeler_id"?, "user_id"?}`` with 2 ≤ K ≤ 9; the pairwise form
  ``{"prompt", "chosen", "rejected"}`` is a comparison with K = 2
* prompt ``{"prompt", "user_id"?, "category"?}``
* pretraining text ``{"text"}``

A bad line (malformed JSON, bytes that are not UTF-8, a field that does not fit)
raises ``RecordError`` naming the file, the line and the field, or, with
``on_error="skip"``, is skipped and counted in the returned ``ReadReport``.
Nothing is dropped silently, and a file without a single record is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, Optional

from rlhf_jax.errors import RecordError

MIN_K, MAX_K = 2, 9


@dataclasses.dataclass(frozen=True)
class Demonstration:
    prompt: str
    response: str
    user_id: Optional[str] = None
    category: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Comparison:
    prompt: str
    responses: tuple[str, ...]
    ranking: tuple[int, ...]  # indices into responses, best first
    labeler_id: Optional[str] = None
    user_id: Optional[str] = None

    @property
    def k(self) -> int:
        return len(self.responses)


@dataclasses.dataclass(frozen=True)
class Prompt:
    prompt: str
    user_id: Optional[str] = None
    category: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class PretrainText:
    text: str


@dataclasses.dataclass
class ReadReport:
    """How many records a read kept, and the error message of each line it skipped."""

    kept: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)


class Line:
    """Field access to one parsed JSON line; every failure names file, line and field."""

    def __init__(self, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def fail(self, field: str, why: str):
        raise RecordError(f"{self.where}: field '{field}': {why}")

    def text(self, field: str, optional: bool = False, nonempty: bool = True) -> Optional[str]:
        if field not in self.obj or self.obj[field] is None:
            if optional:
                return None
            self.fail(field, "missing")
        value = self.obj[field]
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {type(value).__name__}")
        if nonempty and not value.strip():
            self.fail(field, "empty")
        return value

    def ident(self, field: str) -> Optional[str]:
        """Optional ids may be strings or integers; they are kept as strings."""
        value = self.obj.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(field, f"expected a string or integer id, got {type(value).__name__}")
        return str(value)


def _demonstration(line: Line) -> Demonstration:
    return Demonstration(line.text("prompt"), line.text("response"), line.ident("user_id"),
                         line.text("category", optional=True))


def _comparison(line: Line, k_max: int = MAX_K) -> Comparison:
    prompt = line.text("prompt")
    if "responses" not in line.obj and ("chosen" in line.obj or "rejected" in line.obj):
        responses = (line.text("chosen"), line.text("rejected"))
        return Comparison(prompt, responses, (0, 1), line.ident("labeler_id"),
                          line.ident("user_id"))
    responses = line.obj.get("responses")
    if responses is None:
        line.fail("responses", "missing")
    if not isinstance(responses, list):
        line.fail("responses", f"expected a list of strings, got {type(responses).__name__}")
    if not MIN_K <= len(responses) <= k_max:
        line.fail("responses", f"K={len(responses)} responses, expected {MIN_K} to {k_max}" +
                  ("" if k_max == MAX_K else f" (k_max={k_max})"))
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            line.fail(f"responses[{i}]", f"expected a string, got {type(r).__name__}")
        if not r.strip():
            line.fail(f"responses[{i}]", "empty response")
    ranking = line.obj.get("ranking")
    if ranking is None:
        line.fail("ranking", "missing")
    if not isinstance(ranking, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ranking):
        line.fail("ranking", "expected a list of integer indices")
    if sorted(ranking) != list(range(len(responses))):
        line.fail("ranking", f"{ranking} is not a permutation of 0..{len(responses) - 1}")
    return Comparison(prompt, tuple(responses), tuple(ranking), line.ident("labeler_id"),
                      line.ident("user_id"))


def _prompt(line: Line) -> Prompt:
    return Prompt(line.text("prompt"), line.ident("user_id"), line.text("category", optional=True))


def _pretrain(line: Line) -> PretrainText:
    return PretrainText(line.text("text"))


PARSERS: dict[str, Callable[[Line], Any]] = {
    "demonstration": _demonstration, "comparison": _comparison, "prompt": _prompt,
    "pretrain": _pretrain}


def parse_file(path: str, parse: Callable[["Line"], Any], on_error: str = "raise"):
    """Parses a file of JSON lines with ``parse``; returns ``(records, ReadReport)``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    records, report = [], ReadReport()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                records.append(parse(Line(_json(raw, where), where)))
            except RecordError as e:
                if on_error == "raise":
                    raise
                report.skipped.append(str(e))
    if not records:
        raise RecordError(f"{path}: no records: " + (
            f"on_error='skip' skipped all {len(report.skipped)} lines; the first: "
            f"{report.skipped[0]}" if report.skipped else "the file is empty"))
    report.kept = len(records)
    return records, report


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RecordError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                          f"{e.start + 1})") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None


def read_jsonl(path: str, kind: str, on_error: str = "raise", k_max: int = MAX_K):
    """Reads a JSON Lines file of ``kind`` records (comparisons of at most ``k_max`` responses);
    returns ``(records, ReadReport)``."""
    if kind not in PARSERS:
        raise ValueError(f"unknown record kind {kind!r}; choose one of {sorted(PARSERS)}")
    parse = functools.partial(_comparison, k_max=k_max) if kind == "comparison" else PARSERS[kind]
    return parse_file(path, parse, on_error)
