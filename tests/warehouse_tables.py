"""Warehouse exports for the tests, written as BigQuery, Snowflake and Redshift write them:
RudderStack's warehouse tables (SPEC §12) as Avro (fastavro), Parquet (pyarrow) or JSON lines,
beside the events they were loaded from."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.warehouse import iso_utc_millis

UTC = datetime.timezone.utc


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each column's first non-null value, in first-seen order: what its type follows."""
    columns: dict[str, Any] = {}
    for row in rows:
        for name, value in row.items():
            if columns.get(name) is None:
                columns[name] = value
    return columns


_AVRO_TYPES = {str: "string", bool: "boolean", int: "long", float: "double", bytes: "bytes"}


def _avro_type(value: Any, timestamp_type: str) -> Any:
    if isinstance(value, datetime.datetime):
        return {"type": "long", "logicalType": timestamp_type}
    if isinstance(value, datetime.date):
        return {"type": "int", "logicalType": "date"}
    return _AVRO_TYPES.get(type(value), "string")


def write_avro(
    path: Path, rows: list[dict[str, Any]], timestamp_type: str = "timestamp-micros"
) -> Path:
    """An Avro file as `bq extract --destination_format AVRO --use_avro_logical_types` writes
    one: every column nullable; timestamps of the given logical type (local-* ones naive)."""
    local = timestamp_type.startswith("local-")
    fields = [
        {"name": name, "type": ["null", _avro_type(value, timestamp_type)], "default": None}
        for name, value in _columns(rows).items()
    ]
    schema = {"type": "record", "name": "Row", "fields": fields}

    def cell(value: Any) -> Any:
        if local and isinstance(value, datetime.datetime):
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    records = [{name: cell(row.get(name)) for name in _columns(rows)} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), records)
    return path


def write_parquet(
    path: Path,
    rows: list[dict[str, Any]],
    unit: str = "us",
    timezone: str | None = "UTC",
    upper_case: bool = False,
) -> Path:
    """A Parquet file as Snowflake's `COPY INTO @stage ... HEADER=TRUE` (upper-case names) or
    Redshift's `UNLOAD ... FORMAT PARQUET` writes one, with timestamps of the given unit."""
    columns = _columns(rows)
    arrays, names = [], []
    for name, sample in columns.items():
        values = [row.get(name) for row in rows]
        if isinstance(sample, datetime.datetime):
            if timezone is None:
                values = [v and v.astimezone(UTC).replace(tzinfo=None) for v in values]
            array = pa.array(values, type=pa.timestamp(unit, tz=timezone))
        else:
            array = pa.array(values)
        arrays.append(array)
        names.append(name.upper() if upper_case else name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """JSON lines of rows, timestamps as the ISO text a JSON export holds."""

    def text(value: Any) -> Any:
        return iso_utc_millis(value) if isinstance(value, datetime.datetime) else value

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({k: text(v) for k, v in row.items()}) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- one small history, as events and as warehouse rows --------------------------------------

CONTEXT_A = {
    "ip": "203.0.113.7",
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/86.0.4240.111 Safari/537.36",
}
UA_A = CONTEXT_A["userAgent"]

EVENTS: list[dict[str, Any]] = [
    {
        "type": "identify",
        "messageId": "a-1",
        "anonymousId": "anon-a",
        "userId": "u-a",
        "originalTimestamp": "2024-03-01T10:00:00.125Z",
        "traits": {
            "email": "a@example.com",
            "name": "Ada",
            "plan": "pro",
            "seats": 5,
            "prefs": {"color": "blue"},
            "user_id": "legacy-7",
        },
        "context": {
            **CONTEXT_A,
            "traits": {"tier": "gold"},
            "geo": {"city": "Lisbon"},
            "library": {"name": "analytics.js"},
        },
    },
    {
        "type": "track",
        "messageId": "a-2",
        "anonymousId": "anon-a",
        "event": "Order Completed",
        "originalTimestamp": "2024-03-01T10:05:00.250Z",
        "properties": {
            "order_id": "o-1",
            "revenue": 12.5,
            "paid": True,
            "shipping": {"method": "air"},
            "items": [{"sku": "a"}],
        },
        "context": CONTEXT_A,
    },
    {
        "type": "page",
        "messageId": "a-3",
        "anonymousId": "anon-a",
        "name": "Pricing",
        "category": "Docs",
        "originalTimestamp": "2024-03-01T10:06:00.000Z",
        "properties": {"name": "Pricing", "category": "Docs", "url": "https://x.test/pricing"},
        "context": {
            **CONTEXT_A,
            "page": {"referrer": "https://search.test/", "referring_domain": "search.test"},
        },
    },
    {
        "type": "screen",
        "messageId": "b-1",
        "anonymousId": "anon-b",
        "userId": "u-b",
        "name": "Home",
        "timestamp": "2024-03-02T08:00:00.500Z",
        "properties": {"name": "Home", "tab": "feed"},
        "context": {
            "externalId": [{"type": "woopraId", "id": "w-b"}],
            "device": {"type": "ios"},
            "app": {"name": "Shop"},
            "os": {"name": "iOS"},
        },
    },
    {
        "type": "track",
        "messageId": "b-2",
        "anonymousId": "anon-b",
        "event": "Signed Up",
        "originalTimestamp": "2024-03-02T08:01:00.000Z",
        "properties": {"source": "ad"},
        "context": {
            "externalId": [{"type": "woopraId", "id": "w-b"}],
            "consentManagement": {"deniedConsentIds": ["C0004"]},
        },
    },
    {"type": "identify", "userId": "u-c", "traits": {"plan": "free", "email": "c@example.com"}},
]

_TRACKING_COLUMNS_A = {
    "context_ip": CONTEXT_A["ip"],
    "context_user_agent": UA_A,
    "received_at": at("2024-03-01T11:00:00Z"),
    "uuid_ts": at("2024-03-01T11:00:01Z"),
    "context_library_name": "analytics.js",
}


def tables() -> dict[str, list[dict[str, Any]]]:
    """EVENTS as RudderStack loads them: by table, with both `tracks` and per-event tables."""
    order = {
        "id": "a-2",
        "anonymous_id": "anon-a",
        "user_id": None,
        "event": "order_completed",
        "event_text": "Order Completed",
        "original_timestamp": at("2024-03-01T10:05:00.250Z"),
        **_TRACKING_COLUMNS_A,
    }
    signed_up = {
        "id": "b-2",
        "anonymous_id": "anon-b",
        "event": "signed_up",
        "event_text": "Signed Up",
        "original_timestamp": at("2024-03-02T08:01:00Z"),
        "context_external_id": '[{"type":"woopraId","id":"w-b"}]',
        "context_consent_management_denied_consent_ids": '["C0004"]',
    }
    return {
        "identifies": [
            {
                "id": "a-1",
                "anonymous_id": "anon-a",
                "user_id": "u-a",
                "original_timestamp": at("2024-03-01T10:00:00.125Z"),
                "email": "a@example.com",
                "name": "Ada",
                "plan": "pro",
                "seats": 5,
                "prefs_color": "blue",
                "_user_id": "legacy-7",
                "context_traits_tier": "gold",
                "context_geo_city": "Lisbon",
                **_TRACKING_COLUMNS_A,
            }
        ],
        "tracks": [order, signed_up],
        "order_completed": [
            {
                **order,
                "order_id": "o-1",
                "revenue": 12.5,
                "paid": True,
                "shipping_method": "air",
                "items": '[{"sku":"a"}]',
            }
        ],
        "signed_up": [{**signed_up, "source": "ad"}],
        "pages": [
            {
                "id": "a-3",
                "anonymous_id": "anon-a",
                "name": "Pricing",
                "category": "Docs",
                "url": "https://x.test/pricing",
                "original_timestamp": at("2024-03-01T10:06:00Z"),
                "context_page_referrer": "https://search.test/",
                "context_page_referring_domain": "search.test",
                **_TRACKING_COLUMNS_A,
            }
        ],
        "screens": [
            {
                "id": "b-1",
                "anonymous_id": "anon-b",
                "user_id": "u-b",
                "name": "Home",
                "tab": "feed",
                "timestamp": at("2024-03-02T08:00:00.500Z"),
                "context_external_id": '[{"type":"woopraId","id":"w-b"}]',
                "context_device_type": "ios",
                "context_app_name": "Shop",
                "context_os_name": "iOS",
                "sent_at": at("2024-03-02T08:00:01Z"),
            }
        ],
        "users": [
            {
                "id": "u-c",
                "plan": "free",
                "email": "c@example.com",
                "received_at": at("2024-03-03T00:00:00Z"),
            }
        ],
    }


# Rows of both the `tracks` table and the per-event tables: each event is there twice.
DUPLICATE_ROWS = 2
