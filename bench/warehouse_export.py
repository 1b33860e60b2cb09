"""The benchmark's events as RudderStack loads them into a warehouse, exported as BigQuery does.

`write_export(events, folder)` writes one folder per table (`identifies`, `pages`, `screens`,
one per track event, and `groups`/`aliases` for the types Woopra does not take), each with
one Avro file as `bq extract --destination_format AVRO --use_avro_logical_types` writes it:
nested keys joined with `_` and snake-cased, lists as JSON text, timestamps as
`timestamp-micros`, every column nullable, uncompressed (like the JSON-lines file). Each event
is one row (no `tracks` table), so the export holds the same events as the JSON-lines file.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro

_TABLES = {"identify": "identifies", "page": "pages", "screen": "screens", "group": "groups"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_NOT_A_NAME = re.compile(r"[^a-z0-9_]")
_RESERVED = frozenset({"id", "anonymous_id", "user_id", "event", "event_text", "received_at"})


def snake(key: str) -> str:
    """A column name as RudderStack makes it: `orderId` -> `order_id`."""
    return _NOT_A_NAME.sub("_", _CAMEL.sub(r"_\1", key).lower())


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}_{snake(key)}" if prefix else snake(key), inner, row)
    elif isinstance(value, list):
        row[prefix] = json.dumps(value, separators=(",", ":"))
    elif value is not None:
        row[prefix] = value


def _moment(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text


def table_and_row(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The table an event is loaded into, and its row there."""
    event_type = str(event.get("type", "")).lower()
    table = _TABLES.get(event_type) or ("aliases" if event_type == "alias" else None)
    if table is None:
        table = snake(str(event.get("event") or "unnamed")).strip("_") or "unnamed"
    row: dict[str, Any] = {
        "id": event.get("messageId"),
        "anonymous_id": event.get("anonymousId"),
        "user_id": event.get("userId"),
        "original_timestamp": _moment(event.get("originalTimestamp")),
        "timestamp": _moment(event.get("timestamp")),
        "received_at": datetime.datetime(2025, 4, 6, tzinfo=datetime.timezone.utc),
    }
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    for key, value in context.items():
        if key == "externalId":
            row["context_external_id"] = json.dumps(value, separators=(",", ":"))
        else:
            _flatten(f"context_{snake(key)}", value, row)
    if event_type == "track":
        row["event_text"] = event.get("event")
        row["event"] = table
    if event_type in ("page", "screen"):
        row["name"], row["category"] = event.get("name"), event.get("category")
    own = event.get("traits") if event_type == "identify" else event.get("properties")
    columns: dict[str, Any] = {}
    _flatten("", own if isinstance(own, dict) else {}, columns)
    for column, value in columns.items():
        row["_" + column if column in _RESERVED or column in row else column] = value
    return table, row


_AVRO_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}


def _schema(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, type]]:
    """One type per column, as the warehouse has it; a column of mixed types is text."""
    types: dict[str, type] = {}
    for row in rows:
        for column, value in row.items():
            if value is None:
                continue
            kind = type(value) if type(value) in _AVRO_TYPES else datetime.datetime
            seen = types.setdefault(column, kind)
            if seen is not kind:
                types[column] = str
    timestamp = {"type": "long", "logicalType": "timestamp-micros"}
    fields = []
    for column, kind in types.items():
        avro_type: Any = _AVRO_TYPES.get(kind) or timestamp
        fields.append({"name": column, "type": ["null", avro_type], "default": None})
    return {"type": "record", "name": "Row", "fields": fields}, types


def _cell(value: Any, kind: type) -> Any:
    if value is None or type(value) is kind:
        return value
    if kind is datetime.datetime:
        return None  # a timestamp column's value that was not a date-time
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value if isinstance(value, str) else json.dumps(value)


def write_export(events: Iterable[dict[str, Any]], folder: Path) -> dict[str, int]:
    """Every event as a row of its table's Avro file under `folder`; rows per table."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        table, row = table_and_row(event)
        tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        schema, types = _schema(rows)
        records = [{c: _cell(row.get(c), kind) for c, kind in types.items()} for row in rows]
        (folder / table).mkdir(parents=True, exist_ok=True)
        with open(folder / table / f"{table}-000000000000.avro", "wb") as handle:
            fastavro.writer(handle, fastavro.parse_schema(schema), records)
    return {table: len(rows) for table, rows in sorted(tables.items())}
