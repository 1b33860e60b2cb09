"""Turning nested event values into flat Woopra parameters (SPEC §7)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from transforms.records import compact_json

_SCALAR_TYPES = frozenset({str, int, float, bool})


def flatten_into(
    params: dict[str, Any], prefix: str, source: dict[str, Any], skip: Collection[str] = ()
) -> None:
    """Add every top-level key of `source` (but those in `skip`) to `params` as `<prefix><key>`.

    Nested objects join their keys with `_` (an empty object gives nothing), lists become
    compact JSON text, nulls and a top-level key that is the empty string are left out.
    """
    for key, value in source.items():
        if type(value) in _SCALAR_TYPES:
            if key and key not in skip:
                params[prefix + key] = value
        elif value is not None and key and key not in skip:
            _flatten_nested(params, prefix + key, value)


def _flatten_nested(params: dict[str, Any], name: str, value: Any) -> None:
    """Iterative, so that hostile nesting cannot exhaust the interpreter's stack."""
    stack: list[tuple[str, Any]] = [(name, value)]
    while stack:
        name, value = stack.pop()
        if value is None:
            continue
        if isinstance(value, dict):
            stack.extend((f"{name}_{key}", inner) for key, inner in reversed(value.items()))
        elif isinstance(value, list):
            params[name] = compact_json(value)
        else:
            params[name] = value
