"""RowsToEvents: rows of RudderStack's warehouse schema become events (SPEC §12).

Each row becomes one event, counted as input and checked for size (that of its compact JSON)
here, as ParseEvents does for a line; every later check (§1-§11) applies unchanged. A row's
`rudder_event` text is parsed as an event line. Rows of a table that holds no supported event
are dead-lettered here (`unsupported_type`).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from transforms.core.fields import non_empty
from transforms.core.records import (
    DEAD_LETTER_TAG,
    INVALID_JSON,
    METRICS_NAMESPACE,
    STAGE_PARSE,
    UNSUPPORTED_TYPE,
    DeadLetter,
    compact_json,
)
from transforms.parse import MAX_BYTES_PARSED_FOR_ID, MAX_EVENT_BYTES, parse_record, too_large

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

# How a column is used (a Route): its kind, the key it is stored under, and for NESTED and
# LIST the path of the object that holds that key in the event.
IGNORED, TOP_LEVEL, OWN, NESTED, LIST, TOP_AND_OWN, WHOLE_EVENT = range(7)
Route = tuple[int, str, tuple[str, ...]]
_IGNORED: Route = (IGNORED, "", ())
# Routes by table and column, found once per column name (bounded: JSON rows may name anything).
_ROUTES: dict[str, dict[str, Route]] = {}
_MAX_ROUTES_PER_TABLE = 100_000
# Values that need no conversion: the common case, checked by exact type.
_PLAIN_TYPES = frozenset({str, int, bool})


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
    if moment.tzinfo is None:
        return moment.isoformat(timespec="milliseconds") + "Z"
    if moment.tzinfo is not datetime.timezone.utc:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # without "+00:00"


def route_of(column: str, table: str) -> Route:
    """Where a column of a table goes in the event (SPEC §12's column table)."""
    name = column.lower()
    event_type = _EVENT_TYPES.get(table, "track")
    if name == "id":
        return (TOP_LEVEL, "userId" if table == USERS else "messageId", ())
    if name in _TOP_LEVEL_COLUMNS:
        path = _TOP_LEVEL_COLUMNS[name]
        return (TOP_LEVEL, path[0], ()) if len(path) == 1 else (NESTED, path[-1], path[:-1])
    if name in _LIST_COLUMNS:
        path = _LIST_COLUMNS[name]
        return (LIST, path[-1], path[:-1])
    if name == RUDDER_EVENT:
        return (WHOLE_EVENT, name, ())
    if name in _IGNORED_COLUMNS:
        return _IGNORED
    if name.startswith("context_"):
        page_key = name[len("context_page_") :]
        if name.startswith("context_page_") and page_key in _PAGE_CONTEXT_KEYS:
            return (NESTED, page_key, ("context", "page"))
        for prefix, holder in _NESTED_CONTEXT:
            if name.startswith(prefix):
                key = name[len(prefix) :]
                return (NESTED, key, ("context", holder))
        return _IGNORED
    if event_type == "identify":
        return (OWN, "user_id" if name == "_user_id" else name, ())
    if event_type in ("page", "screen") and name in ("name", "category"):
        return (TOP_AND_OWN, name, ())
    return (OWN, name, ())


def _routes_of(table: str) -> dict[str, Route]:
    routes = _ROUTES.get(table)
    if routes is None or len(routes) > _MAX_ROUTES_PER_TABLE:
        routes = _ROUTES[table] = {}
    return routes


def _holder(event: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The object at `path` in the event, made where missing."""
    holder = event
    for key in path:
        inner = holder.get(key)
        if inner is None:
            inner = holder[key] = {}
        holder = inner
    return holder


def _as_list(value: Any) -> list[Any] | None:
    """A list column's value: a list, or the JSON text of one; anything else is absent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, list) else None


def row_to_event(row: Mapping[str, Any], table: str) -> dict[str, Any]:
    """The event a row of a supported table stands for by its columns (SPEC §12's table)."""
    return _event_of(row, table)[0]


def _event_of(row: Mapping[str, Any], table: str) -> tuple[dict[str, Any], Any]:
    """The event made from the columns, and the `rudder_event` value (None when not set).

    Other columns go to `traits` (identifies, users) or `properties` (the rest): `own`.
    """
    whole_event = None
    event_type = _EVENT_TYPES.get(table, "track")
    event: dict[str, Any] = {"type": event_type}
    own: dict[str, Any] = {}
    holders: dict[tuple[str, ...], dict[str, Any]] = {}
    routes = _routes_of(table)
    for column, value in row.items():
        if value is None:
            continue
        route = routes.get(column)
        if route is None:
            route = routes[column] = route_of(column, table)
        kind, key, path = route
        if kind == IGNORED:
            continue
        if kind == WHOLE_EVENT:
            whole_event = value
            continue
        if type(value) not in _PLAIN_TYPES:
            value = warehouse_value(value)
            if value is None:
                continue
        if kind == OWN:
            own[key] = value
        elif kind == TOP_LEVEL:
            event[key] = value
        elif kind in (NESTED, LIST):
            if kind == LIST:
                value = _as_list(value)
                if value is None:
                    continue
            holder = holders.get(path)
            if holder is None:
                holder = holders[path] = _holder(event, path)
            holder[key] = value
        else:
            event[key] = own[key] = value
    if own:
        event["traits" if event_type == "identify" else "properties"] = own
    return event, whole_event


def _rudder_event_text(value: Any) -> bytes:
    """A `rudder_event` value as text: the whole event, as RudderStack sent it."""
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


def convert_row(row: Mapping[str, Any], table: str | None) -> dict[str, Any] | bytes | DeadLetter:
    """What a row stands for: its event; the text of its `rudder_event`, to be parsed as an
    event line; or a dead letter (its table holds no event Woopra takes, or the event is over
    the size limit). `table` is the row's table, None when none was found."""
    if table is None or table in UNSUPPORTED_TABLES:
        whole_event = next((v for k, v in row.items() if k.lower() == RUDDER_EVENT), None)
        if whole_event is not None:
            return _rudder_event_text(whole_event)
        shown = {str(column): warehouse_value(value) for column, value in row.items()}
        message_id = non_empty(next((v for k, v in row.items() if k.lower() == "id"), None))
        detail = (
            f"rows of the {table} table hold no event Woopra takes"
            if table
            else "no table named in the file's path and no event_text column"
        )
        return DeadLetter(message_id, STAGE_PARSE, UNSUPPORTED_TYPE, detail, event=shown)
    event, whole_event = _event_of(row, table)
    if whole_event is not None:
        return _rudder_event_text(whole_event)
    try:
        data = event_json(event)
    except (ValueError, RecursionError):  # nested beyond what JSON encoders walk
        detail = "the event made from the row cannot be written as JSON"
        return DeadLetter(non_empty(event.get("messageId")), STAGE_PARSE, INVALID_JSON, detail)
    if len(data) > MAX_EVENT_BYTES:
        dead = too_large(data)
        if len(data) <= MAX_BYTES_PARSED_FOR_ID:
            dead.event = event
        return dead
    return event


class RowTables:
    """The table of a file's rows: `table` unless it is `auto`; else by the file's path below
    `fixed_prefix`, else a per-event track table when the row has `event_text` (SPEC §12)."""

    def __init__(self, table: str, fixed_prefix: str) -> None:
        self.table = table
        self.fixed_prefix = fixed_prefix
        self._tables_by_path: dict[str, str | None] = {}

    def table_of(self, file_path: str, row: Mapping[str, Any]) -> str | None:
        if self.table != AUTO:
            return self.table.lower()
        table = self._tables_by_path.get(file_path, "")
        if table == "":
            table = self._tables_by_path[file_path] = table_from_path(file_path, self.fixed_prefix)
        if table is None and has_column(row, EVENT_TEXT):
            return PER_EVENT_TABLE
        return table

    def columns_used(self, file_path: str, columns: list[str]) -> frozenset[str] | None:
        """The columns of a file (whose rows all have `columns`) that its rows' events are
        made from; None when every column counts (rows that become dead letters show all)."""
        table = self.table_of(file_path, dict.fromkeys(columns))
        if table is None or table in UNSUPPORTED_TABLES:
            return None
        routes = _routes_of(table)
        used = []
        for column in columns:
            route = routes.get(column)
            if route is None:
                route = routes[column] = route_of(column, table)
            if route[0] != IGNORED:
                used.append(column)
        return frozenset(used)


class _RowsToEventsFn(beam.DoFn):
    def __init__(self, table: str, fixed_prefix: str) -> None:
        self.table = table
        self.fixed_prefix = fixed_prefix
        self.input_events = Metrics.counter(METRICS_NAMESPACE, "input")

    def setup(self) -> None:
        self._table_of = RowTables(self.table, self.fixed_prefix).table_of

    def process(self, element: tuple[str, Any] | DeadLetter):
        if isinstance(element, DeadLetter):  # a damaged file's, among its rows: one input
            self.input_events.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, element)
            return
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
        if isinstance(converted, bytes):  # the row's rudder_event: an event line
            converted = parse_record(converted)
            if converted is None:  # blank text: the row is not an event
                converted = DeadLetter(None, STAGE_PARSE, INVALID_JSON, "rudder_event is blank")
        self.input_events.inc()
        if isinstance(converted, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, converted)
        else:
            yield converted


class RowsToEvents(beam.PTransform):
    """(file path, warehouse row) to events, one per row (SPEC §12).

    `table` is `auto` (each file's table from its path below the glob's fixed prefix, else a
    per-event track table when the row has `event_text`) or a table name. Like ParseEvents,
    counts every row as input, and returns the events as the main output and dead letters
    under DEAD_LETTER_TAG.
    """

    def __init__(self, table: str, input_glob: str) -> None:
        super().__init__()
        self.table = table
        self.fixed_prefix = glob_fixed_prefix(input_glob)

    def columns_used(self) -> Callable[[str, list[str]], frozenset[str] | None]:
        """The columns of each file that this transform reads (`RowTables.columns_used`), for
        the reader to keep: it may leave out the others."""
        return RowTables(self.table, self.fixed_prefix).columns_used

    def expand(self, rows):
        return rows | "ToEvents" >> beam.ParDo(
            _RowsToEventsFn(self.table, self.fixed_prefix)
        ).with_outputs(DEAD_LETTER_TAG, main="events")
