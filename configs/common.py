"""Helpers shared by the presets."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
    """Parses ``'name,key=value,...'`` into typed fields (big_vision style).

    ``spec`` gives each known key with its default; the value's type is the
    default's type. The first bare word (if any) goes to the ``name`` key.
    """
    result = ml_collections.ConfigDict(dict(spec))
    for part in (arg or "").split(","):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "name", part
        if key not in spec:
            raise ValueError(f"config argument {arg!r}: unknown key {key!r}; known: {sorted(spec)}")
        kind = type(spec[key])
        result[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return result
