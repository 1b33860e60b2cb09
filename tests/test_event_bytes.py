"""What the shuffle by device carries comes back exactly: events as bytes, records decoded
after the GroupByKey."""

from __future__ import annotations

import pytest

import transforms.identity  # noqa: F401  (registers the PreparedEvent coder)
from transforms.core.event_bytes import event_from_bytes, event_to_bytes
from transforms.core.mapping import MappingSettings, PreparedEvent, prepare_event
from transforms.device_records import DeviceRecordCoder, split_by_kind
from transforms.identity_state import DeviceIdentity

EVENTS = [
    {"type": "track", "properties": {"price": 1.1, "n": -0.0, "list": [1, None, True, "é"]}},
    {"b": 1, "a": {"z": 2, "y": [{}, []]}, "empty": "", "float": 5e-324, "big": 1e308},
    {"int64": -9223372036854775808, "uint64": 18446744073709551615},
    {"beyond_64_bits": 123456789012345678901234567890},  # orjson refuses: pickled
    {"lone_surrogate": "\ud800"},  # orjson refuses: pickled
]


@pytest.mark.parametrize("event", EVENTS)
def test_an_event_comes_back_with_the_same_values_types_and_key_order(event) -> None:
    back = event_from_bytes(event_to_bytes(event))
    assert repr(back) == repr(event)


def test_events_travel_as_json_unless_json_cannot_hold_them() -> None:
    assert event_to_bytes(EVENTS[0]).startswith(b'j{"type":"track"')
    assert not event_to_bytes(EVENTS[3]).startswith(b"j")


def test_grouped_records_stay_encoded_until_split_by_kind_decodes_them() -> None:
    coder = DeviceRecordCoder()
    event = prepare_event(
        {"type": "track", "event": "x", "anonymousId": "a", "messageId": "m", "userId": "u"},
        MappingSettings(project_name="p"),
    )
    assert isinstance(event, PreparedEvent)
    identity = DeviceIdentity("a", "u", None, 17)
    held = [coder.decode(coder.encode(value)) for value in (event, identity)]
    assert all(type(value) is bytes for value in held)
    # handed on again as they came (the runner encodes what it held)
    again = [coder.decode(coder.encode(value)) for value in held]
    events, others = split_by_kind(again)
    assert events == [event]
    assert others == {DeviceIdentity: [identity]}
