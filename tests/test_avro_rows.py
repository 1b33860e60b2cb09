"""Warehouse rows of Avro files (SPEC §12) read by the flat-record decoder give exactly what
fastavro's reader gives: the same values of every type, the same records before a damage and
the same error; the columns left out are only those the conversion ignores."""

from __future__ import annotations

import datetime
import decimal
import io
import math
from pathlib import Path
from typing import Any

import fastavro
import pytest

from pipeline.file_records import read_avro_rows
from transforms.core.avro_rows import flat_record_decoder
from transforms.warehouse import RowTables, glob_fixed_prefix

UTC = datetime.timezone.utc
TIMESTAMP_TYPES = (
    "timestamp-millis",
    "timestamp-micros",
    "local-timestamp-millis",
    "local-timestamp-micros",
)
# Every type the decoder reads, as a column that may be null (both orders) and one that may not.
FLAT_TYPES: dict[str, Any] = {
    "boolean": [True, False],
    "int": [0, -1, 2**31 - 1, -(2**31)],
    "long": [0, 1, -1, 63, -64, 64, 2**63 - 1, -(2**63)],
    "float": [0.5, -2.25, float("inf")],
    "double": [0.1, -1e300, 5e-324, float("nan")],
    "bytes": [b"", b"\x00\xff", b"x" * 300],
    "string": ["", "plain", "naïve 東京 🚀", "q" * 200],
}


def ALL(_path: str, _names: list[str]) -> None:  # noqa: N802 - every column kept
    return None


def _write(path: Path, fields: list[dict[str, Any]], records: list[dict[str, Any]], **kw) -> Path:
    schema = {"type": "record", "name": "Row", "fields": fields}
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), records, **kw)
    return path


def _fastavro_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, "rb") as handle:
        return list(fastavro.reader(handle))


def _same(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """Equal rows with keys in the same order, values of the same type (NaN equal to NaN)."""

    def key(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return ("nan", float)
        return (value, type(value))

    return [[(k, key(v)) for k, v in row.items()] for row in left] == [
        [(k, key(v)) for k, v in row.items()] for row in right
    ]


def _flat_table(tmp_path: Path, **writer_options) -> Path:
    fields, columns = [], {}
    for kind, values in FLAT_TYPES.items():
        fields += [
            {"name": f"{kind}_or_null", "type": ["null", kind]},
            {"name": f"{kind}_first", "type": [kind, "null"]},
            {"name": f"{kind}_always", "type": kind},
        ]
        columns[kind] = values
    moments = [
        datetime.datetime(2024, 3, 1, 10, 15, 0, 250999, tzinfo=UTC),
        datetime.datetime(1969, 7, 20, 20, 17, 40, 1000, tzinfo=UTC),
        datetime.datetime(1, 1, 1, tzinfo=UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ]
    for logical in TIMESTAMP_TYPES:
        column = logical.replace("-", "_")
        fields.append({"name": column, "type": ["null", {"type": "long", "logicalType": logical}]})
        local = logical.startswith("local-")
        columns[logical] = [m.replace(tzinfo=None) if local else m for m in moments]
    fields.append({"name": "mixed", "type": ["null", "string", "long", "double"]})
    records = []
    for number in range(60):
        record: dict[str, Any] = {"mixed": [None, "text", -7, 2.5][number % 4]}
        for kind, values in FLAT_TYPES.items():
            value = values[number % len(values)]
            record[f"{kind}_or_null"] = None if number % 3 == 0 else value
            record[f"{kind}_first"] = None if number % 4 == 1 else value
            record[f"{kind}_always"] = value
        for logical in TIMESTAMP_TYPES:
            values = columns[logical]
            record[logical.replace("-", "_")] = None if number % 5 == 0 else values[number % 4]
        records.append(record)
    return _write(tmp_path / "flat.avro", fields, records, **writer_options)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_spec_12_flat_rows_are_fastavros_rows(tmp_path, codec):
    path = _flat_table(tmp_path, codec=codec, sync_interval=500)  # several blocks
    with open(path, "rb") as handle:
        assert flat_record_decoder(fastavro.reader(handle).writer_schema, None) is not None
    assert _same(list(read_avro_rows(str(path), ALL)), _fastavro_rows(path))


def test_spec_12_only_the_columns_asked_for_are_kept_nulls_included(tmp_path):
    path = _flat_table(tmp_path)
    kept = {"string_or_null", "long_first", "timestamp_micros"}
    asked = []

    def columns(file_path: str, names: list[str]) -> set[str]:
        asked.append((file_path, names))
        return kept

    rows = list(read_avro_rows(str(path), columns))
    full = _fastavro_rows(path)
    assert asked == [(str(path), list(full[0]))]
    assert _same(rows, [{k: v for k, v in row.items() if k in kept} for row in full])
    assert any(row["string_or_null"] is None for row in rows)


@pytest.mark.parametrize(
    "column_type",
    [
        {"type": "int", "logicalType": "date"},
        {"type": "long", "logicalType": "timestamp-nanos"},
        {"type": "string", "logicalType": "uuid"},
        {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
        {"type": "long", "logicalType": "time-micros"},
        {"type": "array", "items": "string"},
        {"type": "map", "values": "long"},
        {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]},
        {"type": "fixed", "name": "Four", "size": 4},
        {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "long"}]},
        ["null", "string", {"type": "array", "items": "long"}],
    ],
)
def test_spec_12_other_types_are_read_by_fastavro(tmp_path, column_type):
    values = {
        "date": datetime.date(2024, 3, 1),
        "timestamp-nanos": 1_700_000_000_123_456_789,
        "uuid": "8c0b7a4e-5a44-4c4b-9f43-7a0e6f3c2d11",
        "decimal": decimal.Decimal("12.34"),
        "time-micros": datetime.time(10, 15, 0, 250),
        "array": ["a", "b"],
        "map": {"k": 1},
        "enum": "BLUE",
        "fixed": b"\x00\x01\x02\x03",
        "record": {"a": 7},
    }
    if isinstance(column_type, list):
        value: Any = [1, 2]
    else:
        value = values[column_type.get("logicalType") or column_type["type"]]
    fields = [{"name": "id", "type": "string"}, {"name": "other", "type": column_type}]
    path = _write(tmp_path / "other.avro", fields, [{"id": "a", "other": value}] * 3)
    with open(path, "rb") as handle:
        assert flat_record_decoder(fastavro.reader(handle).writer_schema, None) is None
    assert _same(list(read_avro_rows(str(path), ALL)), _fastavro_rows(path))
    assert list(read_avro_rows(str(path), lambda _p, _n: {"other"})) == _fastavro_rows(path)


def _read_until_damage(read) -> tuple[int, str]:
    """How many records were read, and the error that stopped it (as ReadRecordsFn sees it)."""
    count = 0
    try:
        for _ in read():
            count += 1
    except Exception as error:  # the damage, whatever fastavro calls it
        return count, f"{type(error).__name__}: {error}"
    return count, "no error"


def _damaged(path: Path, placeholder: bytes, replacement: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(placeholder) == 1
    assert len(placeholder) == len(replacement)
    path.write_bytes(data.replace(placeholder, replacement))
    return path


def _damage_is_fastavros(path: Path, kept: set[str] | None) -> None:
    ours = _read_until_damage(lambda: read_avro_rows(str(path), lambda _p, _n: kept))

    def theirs():
        with open(path, "rb") as handle:
            yield from fastavro.reader(handle)

    expected = _read_until_damage(theirs)
    assert ours == expected
    assert 0 < ours[0] < 50
    assert ours[1] != "no error"


def _table(tmp_path: Path, text: str, moment: Any = None) -> Path:
    fields = [
        {"name": "id", "type": ["null", "string"]},
        {"name": "note", "type": ["null", "string"]},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
    ]
    records = [
        {"id": f"m{n}", "note": text if n == 30 else "fine", "at": moment if n == 30 else None}
        for n in range(50)
    ]
    return _write(tmp_path / "damaged.avro", fields, records, sync_interval=200)


@pytest.mark.parametrize("kept", [None, {"id"}])
def test_spec_9_text_that_is_not_utf8_stops_the_file_where_fastavro_stops(tmp_path, kept):
    path = _damaged(_table(tmp_path, "PLACEHOLDER"), b"PLACEHOLDER", b"\xff" * 11)
    _damage_is_fastavros(path, kept)


@pytest.mark.parametrize("kept", [None, {"id"}])
def test_spec_9_timestamp_beyond_year_9999_stops_the_file_where_fastavro_stops(tmp_path, kept):
    beyond = 253_402_300_800_000_000  # 10000-01-01 in microseconds
    _damage_is_fastavros(_table(tmp_path, "fine", moment=beyond), kept)


def test_spec_9_union_index_out_of_range_stops_the_file_where_fastavro_stops(tmp_path):
    path = _table(tmp_path, "PLACEHOLDER")
    # The note's union index (2: the string branch) and its length, then the text: index 5.
    data = path.read_bytes()
    at = data.index(b"PLACEHOLDER") - 2
    assert data[at] == 2
    path.write_bytes(data[:at] + b"\x0a" + data[at + 1 :])
    _damage_is_fastavros(path, {"id"})


def test_spec_9_truncated_table_keeps_what_fastavro_keeps(tmp_path):
    path = _table(tmp_path, "fine")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    _damage_is_fastavros(path, {"id"})


def test_spec_12_records_that_are_not_rows_are_fastavros(tmp_path):
    path = tmp_path / "strings.avro"
    with open(path, "wb") as handle:
        fastavro.writer(handle, "string", ["a", "b"])
    assert list(read_avro_rows(str(path), ALL)) == ["a", "b"]


def test_spec_12_columns_used_leave_out_only_ignored_columns():
    pattern = "/exports/*/*.avro"
    tables = RowTables("auto", glob_fixed_prefix(pattern))
    columns = ["id", "anonymous_id", "received_at", "context_locale", "event", "event_text"]
    columns += ["context_ip", "context_library_name", "price", "rudder_event", "uuid_ts"]
    used = tables.columns_used("/exports/tracks/tracks-000000000000.avro", columns)
    assert used == {
        "id",
        "anonymous_id",
        "event_text",
        "context_ip",
        "price",
        "rudder_event",
    }
    # A per-event table (no table in the path, an event_text column) keeps its event_text.
    assert "event_text" in tables.columns_used("/exports/order_completed/x.avro", columns)
    # Rows that become dead letters show every column.
    assert tables.columns_used("/exports/groups/groups.avro", columns) is None
    assert tables.columns_used("/exports/unknown/x.avro", ["id", "name"]) is None
    assert RowTables("Pages", "").columns_used("/any/x.avro", ["context_page_url", "event"]) == {
        "context_page_url"
    }


def test_spec_12_decoder_refuses_bytes_that_end_early():
    schema = {"type": "record", "name": "Row", "fields": [{"name": "s", "type": "string"}]}
    decoder = flat_record_decoder(schema, None)
    assert decoder is not None
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, {"s": "hello"})
    rows: list[dict[str, Any]] = []
    with pytest.raises(Exception, match="past the block"):
        decoder.decode_block(buffer.getvalue() * 2 + buffer.getvalue()[:3], 3, rows)
    assert rows == [{"s": "hello"}, {"s": "hello"}]
