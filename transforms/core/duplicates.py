"""One event per (device, messageId) in batch runs (SPEC §13): pure functions.

Exporting both `tracks` and the per-event tables gives each track event twice, once without
its properties; the richest copy is the one kept.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from transforms.core.fields import as_object
from transforms.core.mapping import PreparedEvent

_SCALARS = (str, int, float, bool)


def leaf_count(value: Any, top_level: bool = True) -> int:
    """How many parameters §7 makes of an object: scalars and lists one each, nested objects
    their leaves, nulls and a top-level empty key nothing."""
    if type(value) is not dict:
        return 0 if value is None else 1
    return sum(
        leaf_count(inner, top_level=False)
        for key, inner in value.items()
        if not (top_level and key == "")
    )


def richness(event: dict[str, Any]) -> int:
    """The leaves of the event's properties and traits."""
    return leaf_count(as_object(event.get("properties"))) + leaf_count(
        as_object(event.get("traits"))
    )


def sorted_json(event: dict[str, Any]) -> str:
    """Compact JSON with sorted keys: the last tie-breaker, the same on every worker."""
    try:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _preference(event: PreparedEvent) -> tuple[int, tuple[bool, int, str], str]:
    return (-richness(event.event), event.send_order, sorted_json(event.event))


def drop_duplicates(events: list[PreparedEvent]) -> tuple[list[PreparedEvent], int]:
    """One device's events with one per messageId, and how many were dropped.

    Kept: the most leaves in properties and traits, then the earliest in send order, then the
    compact sorted-key JSON that sorts first. Events without a messageId are all kept.
    """
    ids = [event.message_id for event in events if event.message_id is not None]
    if len(set(ids)) == len(ids):  # the common case: nothing to decide
        return events, 0
    by_id: dict[str, list[PreparedEvent]] = {}
    kept: list[PreparedEvent] = []
    for event in events:
        if event.message_id is None:
            kept.append(event)
        else:
            by_id.setdefault(event.message_id, []).append(event)
    for copies in by_id.values():
        kept.append(copies[0] if len(copies) == 1 else min(copies, key=_preference))
    return kept, len(events) - len(kept)
