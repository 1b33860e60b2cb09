"""Warehouse rows become the events they were loaded from (SPEC §12), from real Avro, Parquet
and JSON-lines files, and duplicates between tables are sent once (SPEC §13)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from tests.helpers import read_json_lines, requests_by_device, run_file_sink, write_lines
from tests.warehouse_tables import (
    DUPLICATE_ROWS,
    EVENTS,
    at,
    tables,
    write_avro,
    write_jsonl,
    write_parquet,
)
from transforms.warehouse import (
    convert_row,
    glob_fixed_prefix,
    row_to_event,
    table_from_path,
    warehouse_value,
)

FLAGS = ["--project_name", "p", "--consent_category", "C0004"]


def _requests(output: Path) -> dict[str, list[dict]]:
    return requests_by_device(read_json_lines(output, "requests"))


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """What the original events give as JSON lines."""
    folder = tmp_path_factory.mktemp("events")
    write_lines(folder / "events.jsonl", [json.dumps(e) for e in EVENTS])
    report = run_file_sink(str(folder / "events.jsonl"), folder / "out", *FLAGS)
    return _requests(folder / "out"), report


def _rows_in_total() -> int:
    return sum(len(rows) for rows in tables().values())


def _assert_same_as_events(expected, output: Path, report: dict) -> None:
    expected_requests, expected_report = expected
    assert _requests(output) == expected_requests
    assert report["input"] == _rows_in_total()
    assert report["sent"] == expected_report["sent"]
    assert report["filtered"] == expected_report["filtered"] + DUPLICATE_ROWS
    assert report["dead_lettered"] == expected_report["dead_lettered"] == 0
    assert report["balanced"]


# BigQuery: one folder of shard-numbered files per table (`bq extract ... tracks-*.avro`).
@pytest.mark.parametrize(
    "timestamp_type",
    ["timestamp-micros", "timestamp-millis", "local-timestamp-micros", "local-timestamp-millis"],
)
def test_spec_12_avro_tables_give_the_requests_of_their_events(tmp_path, expected, timestamp_type):
    for table, rows in tables().items():
        write_avro(tmp_path / "export" / f"{table}-000000000000.avro", rows, timestamp_type)
    report = run_file_sink(
        str(tmp_path / "export" / "*.avro"),
        tmp_path / "out",
        "--warehouse_table",
        "auto",
        *FLAGS,
    )
    _assert_same_as_events(expected, tmp_path / "out", report)


# Snowflake: upper-case column names, a folder per table (`COPY INTO @stage/tracks/ ...`).
@pytest.mark.parametrize(
    ("unit", "timezone", "upper_case"),
    [("ms", "UTC", True), ("us", None, True), ("ns", "UTC", False), ("ns", None, False)],
)
def test_spec_12_parquet_tables_give_the_requests_of_their_events(
    tmp_path, expected, unit, timezone, upper_case
):
    for table, rows in tables().items():
        folder = table.upper() if upper_case else table
        write_parquet(
            tmp_path / "stage" / folder / "data_0_0_0.snappy.parquet",
            rows,
            unit=unit,
            timezone=timezone,
            upper_case=upper_case,
        )
    report = run_file_sink(
        str(tmp_path / "stage" / "**"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    _assert_same_as_events(expected, tmp_path / "out", report)


def test_spec_12_json_lines_tables_give_the_requests_of_their_events(tmp_path, expected):
    for table, rows in tables().items():
        write_jsonl(tmp_path / "export" / f"_{table}.jsonl", rows)
    report = run_file_sink(
        str(tmp_path / "export" / "*"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    _assert_same_as_events(expected, tmp_path / "out", report)


def test_spec_12_parquet_timestamps_in_seconds_are_read(tmp_path):
    row = {"id": "m", "anonymous_id": "x", "original_timestamp": at("2024-03-01T10:00:07Z")}
    write_parquet(tmp_path / "tracks.parquet", [row], unit="s")
    run_file_sink(
        str(tmp_path / "*.parquet"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    ((request,),) = _requests(tmp_path / "out").values()
    assert request["params"]["timestamp"] == 1709287207000


def test_spec_13_tracks_and_per_event_tables_give_each_event_once_with_its_properties(
    tmp_path,
):
    everything = tables()
    write_avro(tmp_path / "in" / "tracks" / "part-0.avro", everything["tracks"])
    write_avro(tmp_path / "in" / "order_completed" / "part-0.avro", everything["order_completed"])
    write_avro(tmp_path / "in" / "signed_up" / "part-0.avro", everything["signed_up"])
    report = run_file_sink(
        str(tmp_path / "in" / "*" / "*.avro"),
        tmp_path / "out",
        "--warehouse_table",
        "auto",
        "--project_name",
        "p",
    )
    assert report["input"] == 4
    assert (report["sent"], report["filtered"]) == (2, 2)
    assert report["filtered_reasons"] == {"duplicate": 2}
    requests = [r for device in _requests(tmp_path / "out").values() for r in device]
    by_id = {r["message_id"]: r["params"] for r in requests}
    assert by_id["a-2"]["ce_order_id"] == "o-1"
    assert by_id["a-2"]["ce_shipping_method"] == "air"
    assert by_id["b-2"]["ce_source"] == "ad"


def test_spec_12_known_difference_camel_case_properties_arrive_snake_case(tmp_path):
    event = {
        "type": "track",
        "messageId": "m",
        "anonymousId": "x",
        "event": "Order Completed",
        "properties": {"orderId": "o-1", "shipping": {"method": "air"}},
    }
    write_lines(tmp_path / "event.jsonl", [json.dumps(event)])
    run_file_sink(str(tmp_path / "event.jsonl"), tmp_path / "from_event", *FLAGS)
    row = {
        "id": "m",
        "anonymous_id": "x",
        "event_text": "Order Completed",
        "order_id": "o-1",
        "shipping_method": "air",
    }
    write_avro(tmp_path / "order_completed.avro", [row])
    run_file_sink(
        str(tmp_path / "order_completed.avro"),
        tmp_path / "from_row",
        "--warehouse_table",
        "auto",
        *FLAGS,
    )
    ((from_event,),) = _requests(tmp_path / "from_event").values()
    ((from_row,),) = _requests(tmp_path / "from_row").values()
    assert from_event["params"]["ce_orderId"] == from_row["params"]["ce_order_id"] == "o-1"
    assert "ce_order_id" not in from_event["params"]
    assert from_event["params"]["ce_shipping_method"] == from_row["params"]["ce_shipping_method"]


def test_spec_12_hostile_rows_are_all_accounted_for(tmp_path):
    hostile = [
        {"id": "t-1", "anonymous_id": ["not", "a", "string"], "user_id": {"x": 1}},  # no identity
        {"id": "t-2", "anonymous_id": "x", "original_timestamp": "yesterday"},
        {"id": "t-3", "anonymous_id": "x", "timestamp": True},
        {"id": "t-4", "anonymous_id": "x", "context_external_id": "{not json"},
        {"id": "t-5", "anonymous_id": "x", "type": "group", "properties": 1, "messageId": "z"},
        {"id": "t-6", "anonymous_id": "x", "__proto__": 1, "context": "c", "integrations": 0},
        {"id": "t-7", "anonymous_id": "x", "rudder_event": "{not an event"},
        {"id": "t-8", "anonymous_id": "x", "rudder_event": '"a string"'},
        {"id": "t-9", "anonymous_id": "x", **{f"column_{n}": n for n in range(10_000)}},
        {"id": "t-10", "anonymous_id": "x", "original_timestamp": "2024-02-30T10:00:00Z"},
        {"id": "t-11", "anonymous_id": "x", "event_text": {"an": "object"}},
    ]
    lines = [json.dumps(row) for row in hostile] + ["[1, 2]", "{broken", ""]
    (tmp_path / "in").mkdir()
    write_lines(tmp_path / "in" / "tracks.jsonl", lines)
    write_jsonl(tmp_path / "in" / "groups.jsonl", [{"id": "g-1", "anonymous_id": "x"}])
    write_jsonl(tmp_path / "in" / "mystery.jsonl", [{"id": "q-1", "anonymous_id": "x"}])
    write_avro(tmp_path / "in" / "accounts.avro", [{"id": "c-1", "name": "acme"}])
    report = run_file_sink(
        str(tmp_path / "in" / "*"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    assert report["input"] == len(hostile) + 2 + 3
    assert report["balanced"]
    assert report["dead_letter_reasons"] == {
        "missing_identity": 1,
        "invalid_timestamp": 3,
        "invalid_json": 2,
        "not_an_object": 2,
        "too_large": 1,
        "unsupported_type": 3,
    }
    sent = {r["message_id"]: r for d in _requests(tmp_path / "out").values() for r in d}
    assert set(sent) == {"t-4", "t-5", "t-6", "t-11"}
    assert sent["t-5"]["params"]["ce_type"] == "group"
    assert sent["t-5"]["params"]["ce_messageid"] == "z"
    assert sent["t-6"]["params"]["ce_context"] == "c"
    assert sent["t-11"]["params"]["event"] == ""
    dead = [d for f in read_json_lines(tmp_path / "out", "dead_letters") for d in f]
    assert len(dead) == report["dead_lettered"]
    unsupported = {d["message_id"] for d in dead if d["reason"] == "unsupported_type"}
    assert unsupported == {"g-1", "q-1", "c-1"}
    invalid = next(d for d in dead if d["message_id"] == "t-2")
    assert invalid["event"]["originalTimestamp"] == "yesterday"  # the event made from the row


def test_spec_12_given_table_applies_to_every_file(tmp_path):
    row = {"ID": "m", "ANONYMOUS_ID": "x", "EVENT_TEXT": "Clicked", "BUTTON": "Go"}
    write_parquet(tmp_path / "whatever-000.parquet", [row])
    run_file_sink(
        str(tmp_path / "*.parquet"),
        tmp_path / "out",
        "--warehouse_table",
        "button_clicked",
        "--input_format",
        "parquet",
        *FLAGS,
    )
    ((request,),) = _requests(tmp_path / "out").values()
    assert request["params"]["event"] == "clicked"
    assert request["params"]["ce_button"] == "Go"


def test_spec_12_rudder_event_wins_over_the_columns(tmp_path):
    original = {"type": "track", "event": "Real", "anonymousId": "x", "messageId": "m"}
    row = {"id": "m", "anonymous_id": "other", "event_text": "Columns"}
    write_avro(tmp_path / "tracks.avro", [{**row, "rudder_event": json.dumps(original)}])
    run_file_sink(
        str(tmp_path / "tracks.avro"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    ((request,),) = _requests(tmp_path / "out").values()
    assert request["params"]["event"] == "real"
    assert request["params"]["cookie"] == "x"


# --- the pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "table"),
    [
        ("exp/tracks-000000000000.avro", "tracks"),
        ("exp/TRACKS/data_0_0_0.snappy.parquet", "tracks"),
        ("exp/pages_0000_part_00.parquet", "pages"),
        ("exp/_Identifies.jsonl.gz", "identifies"),
        ("exp/2024-03-01/users/part-00000-of-00004.avro", "users"),
        ("exp/screens/order_completed.avro", "screens"),
        ("exp/identifies/groups-0.avro", "groups"),
        ("exp/order_completed/part-0.avro", None),
        ("exp/__tracks.avro", None),
    ],
)
def test_spec_12_auto_finds_the_nearest_table_name_below_the_fixed_prefix(path, table):
    assert table_from_path(path, "exp/") == table


def test_spec_12_the_fixed_prefix_is_the_folder_before_the_first_wildcard():
    assert glob_fixed_prefix("gs://b/tracks/2024-*/part-*.avro") == "gs://b/tracks/"
    assert glob_fixed_prefix("/data/exp/tracks.avro") == "/data/exp/"
    # a folder above the first wildcard does not name the table
    prefix = glob_fixed_prefix("gs://b/tracks/*")
    assert table_from_path("gs://b/tracks/2024-01/x.avro", prefix) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            datetime.datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc),
            "2024-03-01T10:00:00.123Z",
        ),
        (
            datetime.datetime(
                2024, 3, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            "2024-03-01T10:00:00.000Z",
        ),
        (datetime.datetime(2024, 3, 1), "2024-03-01T00:00:00.000Z"),
        (datetime.date(2024, 3, 1), "2024-03-01"),
        (b"caf\xc3\xa9", "café"),
        (float("nan"), None),
        ({"a": [b"x", None]}, {"a": ["x", None]}),
    ],
)
def test_spec_12_values_become_json(value, expected):
    assert warehouse_value(value) == expected


def test_spec_12_columns_map_case_insensitively_to_lower_case_keys():
    event = row_to_event(
        {"ID": "m", "ANONYMOUS_ID": "a", "ORDER_ID": 7, "CONTEXT_TRAITS_PLAN": "pro", "X": None},
        "order_completed",
    )
    assert event == {
        "type": "track",
        "messageId": "m",
        "anonymousId": "a",
        "properties": {"order_id": 7},
        "context": {"traits": {"plan": "pro"}},
    }


def test_spec_12_users_rows_are_identifies_keyed_by_user():
    event = row_to_event({"id": "u", "_user_id": "legacy", "email": "e@x"}, "users")
    assert event == {
        "type": "identify",
        "userId": "u",
        "traits": {"user_id": "legacy", "email": "e@x"},
    }


def test_spec_12_groups_rows_are_unsupported():
    dead = convert_row({"id": "g", "name": "acme"}, "groups")
    assert (dead.reason, dead.message_id) == ("unsupported_type", "g")


def test_spec_9_a_damaged_warehouse_file_is_named_and_counted_once(tmp_path):
    rows = tables()["pages"]
    good = write_parquet(tmp_path / "in" / "pages.parquet", rows)
    (tmp_path / "in" / "screens.parquet").write_bytes(good.read_bytes()[:-100])
    report = run_file_sink(
        str(tmp_path / "in" / "*.parquet"), tmp_path / "out", "--warehouse_table", "auto", *FLAGS
    )
    assert report["input"] == len(rows) + 1
    assert report["dead_letter_reasons"] == {"unreadable_file": 1}
    dead = [d for f in read_json_lines(tmp_path / "out", "dead_letters") for d in f]
    assert "screens.parquet" in dead[0]["detail"]
