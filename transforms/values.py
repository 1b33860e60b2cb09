"""Turning nested event values into flat Woopra parameters (SPEC §7)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from transforms.records import compact_json


def flatten_into(
    params: dict[str, Any], prefix: str, source: dict[str, Any], skip: Collection[str] = ()
) -> None:
    """Add every top-level key of `source` (but those in `skip`) to `params` as `<prefix><key>`.

    Nested objects join their keys with `_` (an empty object gives nothing), lists become
    compact JSON text, nulls and a top-level key that is the empty string are left out.
    """
    for key, value in source.items():
        if value is None or not key or key in skip:
            continue
        value_type = type(value)
        if value_type is dict:
            _flatten_object(params, prefix + key, value)
        elif value_type is list:
            params[prefix + key] = compact_json(value)
        else:
            params[prefix + key] = value


def _flatten_object(params: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Depth first in source order; iterative, so that hostile nesting cannot exhaust the
    interpreter's stack. An object's walk pauses at an inner object and resumes after it."""
    stack = [(name, iter(value.items()))]
    while stack:
        name, items = stack[-1]
        for key, inner in items:
            inner_type = type(inner)
            if inner_type is dict:
                stack.append((f"{name}_{key}", iter(inner.items())))
                break
            if inner is not None:
                params[f"{name}_{key}"] = compact_json(inner) if inner_type is list else inner
        else:
            stack.pop()
