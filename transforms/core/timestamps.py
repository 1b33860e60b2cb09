"""Event timestamps as integer milliseconds since the epoch (SPEC §5)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
# The forms RudderStack SDKs write (`2025-01-06T00:16:14.577Z`, `...14.577+02:00`), with the
# time of day and offset in range: for these the standard library's parser gives the general
# rules' result in a third of the time.
_SDK_FORM = re.compile(
    r"\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
_ISO_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,
)


# The times an event can have, in ms: from the epoch to the end of year 9999 (UTC).
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253_402_300_799_999


class InvalidTimestampError(ValueError):
    """The chosen timestamp field is present but cannot be read."""


def event_timestamp_ms(event: dict[str, Any]) -> int | None:
    """`originalTimestamp` if present and not null, else `timestamp`; None when both are absent.

    The chosen field decides: when it cannot be parsed there is no fallback to the other.
    """
    value = event.get("originalTimestamp")
    if value is None:
        value = event.get("timestamp")
    if value is None:
        return None
    return parse_timestamp_ms(value)


def parse_timestamp_ms(value: Any) -> int:
    """Milliseconds since the epoch from an ISO 8601 date-time or a JSON number of milliseconds,
    within years 1970-9999: Woopra counts time from the epoch, and a number beyond that range
    (`1e300`, `-1`) is a broken field, not a time.

    Hand-written rather than `datetime.fromisoformat`, which accepts forms that are not
    date-times (a bare date, week dates) and rounds sub-millisecond digits instead of
    cutting them off. That parser serves only the SDKs' own forms, which it reads exactly.
    """
    millis = _timestamp_ms(value)
    if not MIN_TIMESTAMP_MS <= millis <= MAX_TIMESTAMP_MS:
        shown = value[:64] if isinstance(value, str) else value
        raise InvalidTimestampError(f"outside years 1970-9999: {shown!r}")
    return millis


def _timestamp_ms(value: Any) -> int:
    value_type = type(value)
    if value_type is str:
        if _SDK_FORM.fullmatch(value) is None:
            return _iso_ms(value)
        try:
            return (datetime.fromisoformat(value) - _EPOCH) // _ONE_MS
        except ValueError:  # no such day: the general rules say so
            return _iso_ms(value)
    if value_type is int:
        return int(value)
    if value_type is float:
        return int(value)
    shown = repr(value) if value_type is bool else value_type.__name__
    raise InvalidTimestampError(f"not a date-time: {shown}")


def _iso_ms(value: str) -> int:
    """Any ISO 8601 date-time the rules allow, with or without seconds, fraction or offset."""
    match = _ISO_DATE_TIME.fullmatch(value.strip())
    if match is None:
        raise InvalidTimestampError(f"not an ISO 8601 date-time: {value[:64]!r}")
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError as err:
        raise InvalidTimestampError(f"no such date: {value[:64]!r}") from err
    hour, minute, second = int(hour), int(minute), int(second or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidTimestampError(f"no such time of day: {value[:64]!r}")
    millis = int((fraction or "")[:3].ljust(3, "0"))
    offset_minutes = 0
    if sign:
        offset_h, offset_m = int(off_h), int(off_m or 0)
        if offset_h > 23 or offset_m > 59:
            raise InvalidTimestampError(f"no such UTC offset: {value[:64]!r}")
        offset_minutes = (offset_h * 60 + offset_m) * (1 if sign == "+" else -1)
    seconds = ((days * 24 + hour) * 60 + minute - offset_minutes) * 60 + second
    return seconds * 1000 + millis
