"""SPEC §5 `timestamp`: which field is read and how it becomes epoch milliseconds."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from transforms.core.mapping import MappingSettings, map_event, prepare_event
from transforms.core.records import INVALID_TIMESTAMP, STAGE_MAP, DeadLetter, WoopraRequest
from transforms.core.timestamps import InvalidTimestampError, event_timestamp_ms, parse_timestamp_ms

SETTINGS = MappingSettings(project_name="ts-tests")
ABSENT = object()


def ms(*parts: int, micro: int = 0, offset: timedelta = timedelta(0)) -> int:
    """Epoch milliseconds computed independently with datetime (truncating sub-milliseconds)."""
    moment = datetime(*parts, microsecond=micro, tzinfo=timezone(offset))
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def event(original: Any = ABSENT, timestamp: Any = ABSENT) -> dict:
    fields: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-ts",
        "anonymousId": "anon-1",
        "originalTimestamp": original,
        "timestamp": timestamp,
    }
    return {key: value for key, value in fields.items() if value is not ABSENT}


T = "2024-01-02T03:04:05.678Z"
T_MS = ms(2024, 1, 2, 3, 4, 5, micro=678_000)
U = "2023-06-30T23:59:59.001Z"
U_MS = ms(2023, 6, 30, 23, 59, 59, micro=1_000)


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", ms(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05.678Z", T_MS),
        ("2024-01-02T03:04:05.6Z", ms(2024, 1, 2, 3, 4, 5, micro=600_000)),
        ("2024-01-02T03:04:05.67Z", ms(2024, 1, 2, 3, 4, 5, micro=670_000)),
        ("2024-01-02T03:04:05.000Z", ms(2024, 1, 2, 3, 4, 5)),
        ("1970-01-01T00:00:00.000Z", 0),
        ("2000-02-29T12:00:00Z", ms(2000, 2, 29, 12)),
        ("2099-12-31T23:59:59.999Z", ms(2099, 12, 31, 23, 59, 59, micro=999_000)),
    ],
)
def test_spec_5_utc_date_time_with_z(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05.6789Z", T_MS),
        ("2024-01-02T03:04:05.678999Z", T_MS),
        ("2024-01-02T03:04:05.9999Z", ms(2024, 1, 2, 3, 4, 5, micro=999_000)),
        ("2024-01-02T03:04:05.999999999Z", ms(2024, 1, 2, 3, 4, 5, micro=999_000)),
        ("2024-01-02T03:04:05.0009Z", ms(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T23:59:59.9995Z", ms(2024, 1, 2, 23, 59, 59, micro=999_000)),
    ],
)
def test_spec_5_fractional_seconds_beyond_milliseconds_are_cut_not_rounded(
    text: str, expected: int
) -> None:
    assert parse_timestamp_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T05:04:05.678+02:00", T_MS),
        ("2024-01-01T21:34:05.678-05:30", T_MS),
        ("2024-01-02T03:04:05.678+00:00", T_MS),
        ("2024-01-02T03:04:05.678-00:00", T_MS),
        ("2024-01-02T08:49:05.678+0545", T_MS),
        ("2024-01-02T17:04:05.678+14:00", T_MS),
        ("2024-01-01T15:04:05.678-12:00", T_MS),
        ("2024-01-02T12:00:00+09:00", ms(2024, 1, 2, 3)),
    ],
)
def test_spec_5_offsets_are_applied(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


def test_spec_5_hour_only_offset_is_applied() -> None:
    assert parse_timestamp_ms("2024-01-02T08:04:05.678+05") == T_MS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05", ms(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05.678", T_MS),
        ("2024-01-02T03:04:05.678999", T_MS),
        ("2024-01-02 03:04:05.678", T_MS),
        ("2024-01-02T03:04", ms(2024, 1, 2, 3, 4)),
    ],
)
def test_spec_5_no_zone_means_utc(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


def test_spec_5_offset_form_matches_datetime_for_many_offsets() -> None:
    for minutes in range(-12 * 60, 14 * 60 + 1, 45):
        sign = "+" if minutes >= 0 else "-"
        hours, mins = divmod(abs(minutes), 60)
        text = f"2024-07-15T10:20:30.405{sign}{hours:02d}:{mins:02d}"
        expected = ms(2024, 7, 15, 10, 20, 30, micro=405_000, offset=timedelta(minutes=minutes))
        assert parse_timestamp_ms(text) == expected, text


def test_spec_5_sdk_form_matches_datetime_from_year_1970_to_9999() -> None:
    # `YYYY-MM-DDTHH:MM:SS.mmm` with `Z` or `±HH:MM` takes a faster path than the general
    # rules: same results.
    generator = random.Random(5)
    for _ in range(20_000):
        parts = (
            generator.randint(1971, 9998),
            generator.randint(1, 12),
            generator.randint(1, 28),
            generator.randint(0, 23),
            generator.randint(0, 59),
            generator.randint(0, 59),
        )
        millis = generator.randint(0, 999)
        year, month, day, hour, minute, second = parts
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}"
        expected = ms(*parts, micro=millis * 1000)
        assert parse_timestamp_ms(text + "Z") == expected, text
        assert parse_timestamp_ms(text + "+05:30") == expected - 330 * 60_000, text
        assert parse_timestamp_ms(text + "-0000") == expected, text  # the general rules


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_704_164_645_678, 1_704_164_645_678),
        (0, 0),
        (1, 1),
        (253_402_300_799_999, 253_402_300_799_999),  # 9999-12-31T23:59:59.999Z
        (1_704_164_645_678.0, 1_704_164_645_678),
        (1_704_164_645_678.9, 1_704_164_645_678),
    ],
)
def test_spec_5_json_number_is_already_milliseconds(value: float, expected: int) -> None:
    result = parse_timestamp_ms(value)
    assert result == expected
    assert isinstance(result, int)


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "yesterday",
        "not a date",
        "2024-01-02",
        "03:04:05Z",
        "2024-13-02T03:04:05Z",
        "2024-00-02T03:04:05Z",
        "2024-02-30T03:04:05Z",
        "2023-02-29T03:04:05Z",
        "2024-01-32T03:04:05Z",
        "2024-01-02T24:04:05Z",
        "2024-01-02T03:60:05Z",
        "2024-01-02T03:04:61Z",
        "2024-01-02T03:04:05+25:00",
        "2024-01-02T03:04:05+02:60",
        "2024-01-02T03:04:05ZZ",
        "2024-01-02T03:04:05.Z",
        "2024-01-02T03:04:05Z trailing",
        "1704164645678",
        "24-01-02T03:04:05Z",
        # The SDKs' own form, but no such moment or not the digits the rules allow:
        "2024-02-30T03:04:05.678Z",
        "2023-02-29T03:04:05.678Z",
        "2024-01-02T24:00:00.000Z",
        "2024-01-02T03:60:05.678Z",
        "2024-01-02T03:04:60.678Z",
        "2024-W01-2T03:04:05.678Z",
        "2024-01-02T03:04:05.67\u0668Z",
        "0000-01-02T03:04:05.678Z",
        "2024-01-02T03:04:05.678+24:00",
        "2024-01-02T03:04:05.678+02:60",
        True,
        False,
        [2024, 1, 2],
        {"iso": T},
    ],
)
def test_spec_5_unparseable_timestamp_raises_invalid_timestamp(value: Any) -> None:
    with pytest.raises(InvalidTimestampError):
        parse_timestamp_ms(value)


@pytest.mark.parametrize(
    "value",
    [
        1e300,
        -1,
        -0.5e3,
        253_402_300_800_000,  # 10000-01-01T00:00:00Z
        10**30,
        "1969-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00.000Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
    ],
)
def test_spec_5_timestamp_outside_years_1970_to_9999_is_invalid(value: Any) -> None:
    with pytest.raises(InvalidTimestampError, match="outside years 1970-9999"):
        parse_timestamp_ms(value)
    dead = prepare_event(event(value), SETTINGS)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "invalid_timestamp"


def test_spec_5_timestamp_range_ends_are_kept() -> None:
    assert parse_timestamp_ms("1970-01-01T00:00:00.000Z") == 0
    assert parse_timestamp_ms("9999-12-31T23:59:59.999Z") == 253_402_300_799_999
    assert parse_timestamp_ms(0.9) == 0


# --- which field ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "timestamp", "expected"),
    [
        (T, U, T_MS),
        (T, ABSENT, T_MS),
        (ABSENT, U, U_MS),
        (None, U, U_MS),
        (T_MS, U, T_MS),
        (0, U, 0),
        (ABSENT, U_MS, U_MS),
        (None, None, None),
        (ABSENT, None, None),
        (None, ABSENT, None),
        (ABSENT, ABSENT, None),
    ],
)
def test_spec_5_original_timestamp_wins_and_null_falls_back(
    original: Any, timestamp: Any, expected: int | None
) -> None:
    assert event_timestamp_ms(event(original, timestamp)) == expected


@pytest.mark.parametrize(
    ("original", "timestamp"),
    [
        ("not a date", U),
        ("", U),
        ("2024-02-30T00:00:00Z", U),
        ("2024-01-02", U_MS),
        (ABSENT, "not a date"),
        (None, "garbage"),
    ],
)
def test_spec_5_unparseable_chosen_field_is_invalid_timestamp_without_fallback(
    original: Any, timestamp: Any
) -> None:
    with pytest.raises(InvalidTimestampError):
        event_timestamp_ms(event(original, timestamp))
    dead = prepare_event(event(original, timestamp), SETTINGS)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == INVALID_TIMESTAMP
    assert dead.stage == STAGE_MAP
    assert dead.message_id == "m-ts"
    assert dead.event == event(original, timestamp)


def test_spec_5_valid_timestamp_field_is_not_used_when_original_is_bad() -> None:
    result = map_event(event("bad", U), SETTINGS)
    assert isinstance(result, DeadLetter)
    assert result.reason == INVALID_TIMESTAMP


@pytest.mark.parametrize(
    ("original", "timestamp", "expected"),
    [
        (T, U, T_MS),
        (None, U, U_MS),
        ("2024-01-02T05:04:05.678999+02:00", ABSENT, T_MS),
        (T_MS, ABSENT, T_MS),
    ],
)
def test_spec_5_timestamp_parameter_is_integer_milliseconds(
    original: Any, timestamp: Any, expected: int
) -> None:
    request = map_event(event(original, timestamp), SETTINGS)
    assert isinstance(request, WoopraRequest)
    assert request.params["timestamp"] == expected
    assert type(request.params["timestamp"]) is int
    assert request.wire_params()["timestamp"] == str(expected)


@pytest.mark.parametrize(("original", "timestamp"), [(ABSENT, ABSENT), (None, None)])
def test_spec_5_both_timestamps_absent_gives_no_parameter(original: Any, timestamp: Any) -> None:
    request = map_event(event(original, timestamp), SETTINGS)
    assert isinstance(request, WoopraRequest)
    assert "timestamp" not in request.params
