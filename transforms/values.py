"""Turning nested event values into flat Woopra parameters (SPEC §7)."""

from __future__ import annotations

import json
from typing import Any


def flatten_into(params: dict[str, Any], prefix: str, source: dict[str, Any]) -> None:
    """Add every top-level key of `source` to `params` as `<prefix><key>`, flattened.

    Nested objects join their keys with `_` (an empty object gives nothing), lists become
    compact JSON text, nulls and a top-level key that is the empty string are left out.
    Iterative, so that hostile nesting cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[str, Any]] = [
        (prefix + key, value) for key, value in reversed(source.items()) if key != ""
    ]
    while stack:
        name, value = stack.pop()
        if value is None:
            continue
        if isinstance(value, dict):
            stack.extend((f"{name}_{key}", inner) for key, inner in reversed(value.items()))
        elif isinstance(value, list):
            params[name] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            params[name] = value
