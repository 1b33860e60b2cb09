"""Turning nested event values into flat Woopra parameters (SPEC §7)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from transforms.core.records import compact_json

_SCALAR_TYPES = frozenset({str, int, float, bool})


def flatten_into(
    params: dict[str, Any], prefix: str, source: dict[str, Any], skip: Collection[str] = ()
) -> None:
    """Add every top-level key of `source` (but those in `skip`) to `params` as `<prefix><key>`.

    Nested objects join their keys with `_` (an empty object gives nothing), lists become
    compact JSON text, nulls and a top-level key that is the empty string are left out.
    """
    for key, value in source.items():
        if type(value) in _SCALAR_TYPES:  # the common case first
            if key and key not in skip:
                params[prefix + key] = value
        elif value is not None and key and key not in skip:
            if type(value) is dict:
                _flatten_object(params, prefix + key, value)
            else:
                params[prefix + key] = compact_json(value)


def _flatten_object(params: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Depth first in source order; iterative, so that hostile nesting cannot exhaust the
    interpreter's stack. An object's walk pauses at an inner object and resumes after it."""
    stack = [(name, iter(value.items()))]
    while stack:
        name, items = stack[-1]
        for key, inner in items:
            inner_type = type(inner)
            if inner_type in _SCALAR_TYPES:
                params[f"{name}_{key}"] = inner
            elif inner_type is dict:
                stack.append((f"{name}_{key}", iter(inner.items())))
                break
            elif inner is not None:
                params[f"{name}_{key}"] = compact_json(inner)
        else:
            stack.pop()
