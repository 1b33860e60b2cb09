"""RowsToEvents: rows of RudderStack's warehouse schema become events (SPEC §12).

Each row becomes the compact JSON text of one event, which ParseEvents then reads like any
other record, so the size, parse and every later check (§1-§11) apply unchanged. Rows of a
table that holds no supported event are dead-lettered here (`unsupported_type`).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from transforms.fields import non_empty
from transforms.parse import MAX_BYTES_PARSED_FOR_ID, parse_record
from transforms.records import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    STAGE_PARSE,
    UNSUPPORTED_TYPE,
    DeadLetter,
    compact_json,
)

AUTO = "auto"
IDENTIFIES, USERS, TRACKS, PAGES, SCREENS = "identifies", "users", "tracks", "pages", "screens"
# What `auto` recognises in a path: the five tables above and those that hold no event
# this pipeline sends.
UNSUPPORTED_TABLES = frozenset({"groups", "aliases", "accounts"})
_EVENT_TYPES = {
    IDENTIFIES: "identify",
    USERS: "identify",
    TRACKS: "track",
    PAGES: "page",
    SCREENS: "screen",
}
KNOWN_TABLES = frozenset(_EVENT_TYPES) | UNSUPPORTED_TABLES
# The name RowsToEvents gives a per-event track table found by its `event_text` column.
PER_EVENT_TABLE = "<event table>"

RUDDER_EVENT = "rudder_event"
EVENT_TEXT = "event_text"
_GLOB_CHARACTERS = re.compile(r"[*?\[{]")
# A shard number at the end of an exported file's name: BigQuery's `-000000000000`, Snowflake's
# `_0_0_0`, Redshift's `0000_part_00`, Beam's `-00000-of-00004`.
_SHARD_SUFFIX = re.compile(r"(?:[-_](?:\d+|part|of))+$")

_TOP_LEVEL_COLUMNS = {
    "anonymous_id": ("anonymousId",),
    "user_id": ("userId",),
    "original_timestamp": ("originalTimestamp",),
    "timestamp": ("timestamp",),
    EVENT_TEXT: ("event",),
    "context_ip": ("context", "ip"),
    "context_user_agent": ("context", "userAgent"),
    "context_device_type": ("context", "device", "type"),
    "context_app_name": ("context", "app", "name"),
    "context_os_name": ("context", "os", "name"),
}
_PAGE_CONTEXT_KEYS = frozenset(
    {"url", "title", "referrer", "search", "path", "referring_domain", "initial_referring_domain"}
)
# Columns whose value is a list, or the JSON text of one.
_LIST_COLUMNS = {
    "context_external_id": ("context", "externalId"),
    "context_consent_management_denied_consent_ids": (
        "context",
        "consentManagement",
        "deniedConsentIds",
    ),
}
_IGNORED_COLUMNS = frozenset(
    {"event", "received_at", "sent_at", "uuid_ts", "loaded_at", "channel", "record_id"}
)
_NESTED_CONTEXT = (("context_geo_", "geo"), ("context_traits_", "traits"))

# How a column is used: a tuple of paths into the event (a column may feed two fields), and
# whether its value is a list given as JSON text.
Route = tuple[tuple[tuple[str, ...], ...], bool]
_IGNORED: Route = ((), False)


def glob_fixed_prefix(pattern: str) -> str:
    """The folder part of the input glob before its first wildcard: paths below it name tables.

    Cut back to the last `/`, so that the file name counts even when the glob names one file.
    """
    match = _GLOB_CHARACTERS.search(pattern)
    fixed = pattern[: match.start()] if match else pattern
    return fixed[: fixed.rfind("/") + 1]


def table_from_path(file_path: str, fixed_prefix: str) -> str | None:
    """The table a file belongs to by its path (SPEC §12 `auto`), or None when none is named.

    The nearest component below the prefix wins: the file name (without extensions and shard
    number), then each folder above it; compared case-insensitively, one leading `_` ignored.
    """
    relative = file_path[len(fixed_prefix) :] if file_path.startswith(fixed_prefix) else file_path
    components = [part for part in relative.replace("\\", "/").split("/") if part]
    for depth, component in enumerate(reversed(components)):
        name = component.lower()
        if depth == 0:
            name = _SHARD_SUFFIX.sub("", name.split(".", 1)[0])
        if name.startswith("_"):
            name = name[1:]
        if name in KNOWN_TABLES:
            return name
    return None


def has_column(row: Mapping[str, Any], column: str) -> bool:
    """Whether the row has the column, its name compared case-insensitively."""
    return column in row or column.upper() in row or any(k.lower() == column for k in row)


def warehouse_value(value: Any) -> Any:
    """A column value as JSON (SPEC §12): timestamps ISO 8601 UTC with milliseconds, dates ISO,
    bytes UTF-8 text (base64 when they are not UTF-8), decimals numbers; not-a-number is null."""
    value_type = type(value)
    if value_type is str or value_type is int or value_type is bool or value is None:
        return value
    if value_type is float:
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime):
        return iso_utc_millis(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(key): warehouse_value(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [warehouse_value(inner) for inner in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def iso_utc_millis(moment: datetime.datetime) -> str:
    """`2024-03-01T10:15:00.250Z`; a time without a zone is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


@functools.lru_cache(maxsize=65536)
def _route(column: str, table: str) -> Route:
    """Where a column of a table goes in the event (SPEC §12's column table)."""
    name = column.lower()
    event_type = _EVENT_TYPES.get(table, "track")
    if name == "id":
        return ((("userId",) if table == USERS else ("messageId",),), False)
    if name in _TOP_LEVEL_COLUMNS:
        return ((_TOP_LEVEL_COLUMNS[name],), False)
    if name in _LIST_COLUMNS:
        return ((_LIST_COLUMNS[name],), True)
    if name in _IGNORED_COLUMNS or name == RUDDER_EVENT:
        return _IGNORED
    if name.startswith("context_"):
        page_key = name[len("context_page_") :]
        if name.startswith("context_page_") and page_key in _PAGE_CONTEXT_KEYS:
            return ((("context", "page", page_key),), False)
        for prefix, holder in _NESTED_CONTEXT:
            if name.startswith(prefix):
                return ((("context", holder, name[len(prefix) :]),), False)
        return _IGNORED
    if event_type == "identify":
        return ((("traits", "user_id" if name == "_user_id" else name),), False)
    if event_type in ("page", "screen") and name in ("name", "category"):
        return (((name,), ("properties", name)), False)
    return ((("properties", name),), False)


def _put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    holder = event
    for key in path[:-1]:
        inner = holder.get(key)
        if inner is None:
            inner = holder[key] = {}
        holder = inner
    holder[path[-1]] = value


def _as_list(value: Any) -> list[Any] | None:
    """A list column's value: a list, or the JSON text of one; anything else is absent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, list) else None


def row_to_event(row: Mapping[str, Any], table: str) -> dict[str, Any]:
    """The event a row of a supported table stands for (SPEC §12's column table)."""
    event: dict[str, Any] = {"type": _EVENT_TYPES.get(table, "track")}
    for column, raw in row.items():
        if raw is None:
            continue
        paths, is_list = _route(column, table)
        if not paths:
            continue
        value = _as_list(warehouse_value(raw)) if is_list else warehouse_value(raw)
        if value is None:
            continue
        for path in paths:
            _put(event, path, value)
    return event


def _rudder_event_text(row: Mapping[str, Any]) -> bytes | None:
    """The `rudder_event` column's text when it is set: the whole event, as RudderStack sent it."""
    value = row.get(RUDDER_EVENT)
    if value is None:
        value = next((v for k, v in row.items() if k.lower() == RUDDER_EVENT), None)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    return compact_json(warehouse_value(value)).encode("utf-8", errors="surrogatepass")


def event_json(event: dict[str, Any]) -> bytes:
    """The event's compact JSON, whose size is the row's size (SPEC §12 "Counting")."""
    try:
        return orjson.dumps(event)
    except (orjson.JSONEncodeError, TypeError):
        return compact_json(event).encode("utf-8", errors="surrogatepass")


def convert_row(row: Mapping[str, Any], table: str | None) -> bytes | DeadLetter:
    """A row as the text of its event, or the `unsupported_type` dead letter of its table.

    `table` is the table the row belongs to, None when none was found.
    """
    text = _rudder_event_text(row)
    if text is not None:
        return text
    if table is None or table in UNSUPPORTED_TABLES:
        shown = {str(column): warehouse_value(value) for column, value in row.items()}
        message_id = non_empty(next((v for k, v in row.items() if k.lower() == "id"), None))
        detail = (
            f"rows of the {table} table hold no event Woopra takes"
            if table
            else "no table named in the file's path and no event_text column"
        )
        return DeadLetter(message_id, STAGE_PARSE, UNSUPPORTED_TYPE, detail, event=shown)
    return event_json(row_to_event(row, table))


class _RowsToEventsFn(beam.DoFn):
    def __init__(self, table: str, fixed_prefix: str) -> None:
        self.table = table
        self.fixed_prefix = fixed_prefix
        self.input_events = Metrics.counter(METRICS_NAMESPACE, "input")

    def setup(self) -> None:
        self._tables_by_path: dict[str, str | None] = {}

    def _table_of(self, file_path: str, row: Mapping[str, Any]) -> str | None:
        if self.table != AUTO:
            return self.table.lower()
        table = self._tables_by_path.get(file_path, "")
        if table == "":
            table = self._tables_by_path[file_path] = table_from_path(file_path, self.fixed_prefix)
        if table is None and has_column(row, EVENT_TEXT):
            return PER_EVENT_TABLE
        return table

    def process(self, element: tuple[str, Any]):
        file_path, record = element
        if isinstance(record, dict):
            row = record
        else:  # a JSON line: parsed as a row, whose size does not count (its event's does)
            row = parse_record(record, max_bytes=MAX_BYTES_PARSED_FOR_ID)
            if row is None:
                return
            if isinstance(row, DeadLetter):
                self.input_events.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, row)
                return
        converted = convert_row(row, self._table_of(file_path, row))
        if isinstance(converted, DeadLetter):
            self.input_events.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, converted)
        else:
            yield converted


class RowsToEvents(beam.PTransform):
    """(file path, warehouse row) to event records (bytes), one per row (SPEC §12).

    `table` is `auto` (each file's table from its path below the glob's fixed prefix, else a
    per-event track table when the row has `event_text`) or a table name. Returns the records
    as the main output and dead letters under DEAD_LETTER_TAG; those rows count as input here,
    every other row when ParseEvents reads its record.
    """

    def __init__(self, table: str, input_glob: str) -> None:
        super().__init__()
        self.table = table
        self.fixed_prefix = glob_fixed_prefix(input_glob)

    def expand(self, rows):
        return rows | "ToEvents" >> beam.ParDo(
            _RowsToEventsFn(self.table, self.fixed_prefix)
        ).with_outputs(DEAD_LETTER_TAG, main="records")
