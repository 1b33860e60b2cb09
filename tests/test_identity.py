"""SPEC §4: the identity of an event, its device, the send order and identity stitching."""

from __future__ import annotations

import random
from typing import Any

import pytest

from transforms.core.mapping import (
    MappingSettings,
    PreparedEvent,
    build_request,
    identity_of,
    map_event,
    prepare_event,
)
from transforms.core.records import MISSING_IDENTITY, DeadLetter, WoopraRequest
from transforms.identity import Identity, in_send_order, resolve_device, stitch

SETTINGS = MappingSettings(project_name="identity-tests")
ABSENT = object()


def make(**fields: Any) -> dict:
    base: dict[str, Any] = {"type": "track", "event": "Clicked", "messageId": "m-1"}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ABSENT}


def prepared(
    message_id: str | None,
    timestamp_ms: int | None,
    cv_id: str | None = None,
    cv_email: str | None = None,
    cookie: str | None = "c-1",
) -> PreparedEvent:
    return PreparedEvent(
        event={"type": "track", "event": "e", "messageId": message_id},
        event_type="track",
        project="p",
        message_id=message_id,
        timestamp_ms=timestamp_ms,
        cv_id=cv_id,
        cv_email=cv_email,
        cookie=cookie,
    )


def ids(events: list[PreparedEvent]) -> list[str | None]:
    return [event.message_id for event in events]


def who(events: list[PreparedEvent]) -> list[tuple[str | None, str | None]]:
    return [(event.cv_id, event.cv_email) for event in events]


# === cv_id ==================================================================================


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "userId": "top",
                "traits": {"userId": "t-uid", "id": "t-id"},
                "context": {"traits": {"userId": "c-uid", "id": "c-id"}},
            },
            "top",
        ),
        (
            {
                "traits": {"userId": "t-uid", "id": "t-id"},
                "context": {"traits": {"userId": "c-uid", "id": "c-id"}},
            },
            "t-uid",
        ),
        (
            {"traits": {"id": "t-id"}, "context": {"traits": {"userId": "c-uid", "id": "c-id"}}},
            "t-id",
        ),
        ({"context": {"traits": {"userId": "c-uid", "id": "c-id"}}}, "c-uid"),
        ({"context": {"traits": {"id": "c-id"}}}, "c-id"),
        (
            {
                "userId": "",
                "traits": {"userId": None, "id": False},
                "context": {"traits": {"id": "c-id"}},
            },
            "c-id",
        ),
        (
            {
                "userId": {"id": "x"},
                "traits": {"userId": ["y"]},
                "context": {"traits": {"id": "c"}},
            },
            "c",
        ),
        ({"userId": 42}, "42"),
        ({"userId": 0}, "0"),
        ({"userId": -7}, "-7"),
        ({"userId": 4.5}, "4.5"),
        ({"userId": True, "traits": {"userId": "t"}}, "t"),
        ({"traits": {"id": 9}}, "9"),
        ({"traits": "u-1", "context": {"traits": {"id": "c"}}}, "c"),
        ({}, None),
    ],
)
def test_spec_4_cv_id_precedence(fields: dict, expected: str | None) -> None:
    cv_id, _, _ = identity_of(make(anonymousId="a", **fields))
    assert cv_id == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "traits": {"email": "t@x.io"},
                "context": {"traits": {"email": "c@x.io"}},
                "properties": {"email": "p@x.io"},
            },
            "t@x.io",
        ),
        (
            {"context": {"traits": {"email": "c@x.io"}}, "properties": {"email": "p@x.io"}},
            "c@x.io",
        ),
        ({"properties": {"email": "p@x.io"}}, "p@x.io"),
        ({"traits": {"email": ""}, "properties": {"email": "p@x.io"}}, "p@x.io"),
        ({"traits": {"email": None}, "context": {"traits": {"email": "c@x.io"}}}, "c@x.io"),
        ({"traits": {"email": True}, "context": {"traits": {"email": {"a": 1}}}}, None),
        ({"traits": {"email": 12}}, "12"),
        ({"properties": ["email"], "context": {"traits": "x"}}, None),
        ({"email": "top@x.io", "context": {"email": "ctx@x.io"}}, None),
        ({}, None),
    ],
)
def test_spec_4_cv_email_precedence(fields: dict, expected: str | None) -> None:
    _, cv_email, _ = identity_of(make(anonymousId="a", **fields))
    assert cv_email == expected


@pytest.mark.parametrize("event_type", ["identify", "track", "page", "screen"])
def test_spec_4_properties_email_feeds_cv_email_for_every_type(event_type: str) -> None:
    event = make(type=event_type, properties={"email": "p@x.io"})
    params = map_event(event, SETTINGS)
    assert isinstance(params, WoopraRequest)
    assert params.params["cv_email"] == "p@x.io"
    assert "cookie" not in params.params


@pytest.mark.parametrize(
    ("external_id", "anonymous_id", "expected"),
    [
        ([{"type": "woopraId", "id": "w-1"}], "anon", "w-1"),
        ([{"type": "WOOPRAID", "id": "w-1"}], "anon", "w-1"),
        ([{"type": "woopraid", "id": "w-1"}], "anon", "w-1"),
        ([{"type": "WoopraId", "id": "w-1"}], ABSENT, "w-1"),
        ([{"type": "brazeExternalId", "id": "b"}, {"type": "woopraId", "id": "w"}], "a", "w"),
        ([{"type": "woopraId", "id": "w-1"}, {"type": "woopraId", "id": "w-2"}], "a", "w-1"),
        ([{"type": "woopraId", "id": ""}, {"type": "woopraId", "id": "w-2"}], "a", "w-2"),
        ([{"type": "woopraId", "id": None}, {"type": "WOOPRAID", "id": "w-2"}], "a", "w-2"),
        ([{"type": "woopraId"}, {"type": "woopraId", "id": True}], "anon", "anon"),
        ([{"type": "woopraId", "id": 12345}], "anon", "12345"),
        ([{"type": "woopraId", "id": 0}], "anon", "0"),
        ([{"type": "woopra", "id": "w"}], "anon", "anon"),
        ([{"type": "woopraId ", "id": "w"}], "anon", "anon"),
        ([{"id": "w"}], "anon", "anon"),
        ([], "anon", "anon"),
        ({"type": "woopraId", "id": "w"}, "anon", "anon"),
        ("woopraId", "anon", "anon"),
        (ABSENT, "anon", "anon"),
        (ABSENT, 77, "77"),
        (ABSENT, "", None),
        (ABSENT, False, None),
        (ABSENT, ABSENT, None),
    ],
)
def test_spec_4_cookie_prefers_woopra_external_id(
    external_id: Any, anonymous_id: Any, expected: str | None
) -> None:
    context = {} if external_id is ABSENT else {"externalId": external_id}
    _, _, cookie = identity_of(make(anonymousId=anonymous_id, context=context, userId="u"))
    assert cookie == expected


def test_spec_4_the_three_are_independent() -> None:
    event = make(
        userId=1,
        properties={"email": "p@x.io"},
        anonymousId="anon",
        context={"externalId": [{"type": "woopraId", "id": "w"}]},
    )
    assert identity_of(event) == ("1", "p@x.io", "w")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"userId": "", "anonymousId": "", "traits": {"email": ""}},
        {"userId": None, "anonymousId": None, "properties": {"email": None}},
        {"userId": True, "anonymousId": [], "traits": {"id": {}, "email": False}},
        {"context": {"externalId": [{"type": "woopraId", "id": ""}]}},
        {"traits": "u-1", "properties": "p@x.io", "context": "c"},
    ],
)
def test_spec_4_no_identity_is_missing_identity(fields: dict) -> None:
    dead = map_event(make(**fields), SETTINGS)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == MISSING_IDENTITY


@pytest.mark.parametrize(
    "fields",
    [
        {"userId": "u"},
        {"traits": {"email": "t@x.io"}},
        {"properties": {"email": "p@x.io"}},
        {"anonymousId": "a"},
        {"context": {"externalId": [{"type": "woopraId", "id": "w"}]}},
        {"userId": 0},
    ],
)
def test_spec_4_any_one_identifier_is_enough(fields: dict) -> None:
    assert isinstance(prepare_event(make(**fields), SETTINGS), PreparedEvent)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"anonymousId": "a", "userId": "u", "traits": {"email": "e@x.io"}}, "cookie:a"),
        (
            {"context": {"externalId": [{"type": "woopraId", "id": "w"}]}, "anonymousId": "a"},
            "cookie:w",
        ),
        ({"userId": "u", "traits": {"email": "e@x.io"}}, "cv_id:u"),
        ({"userId": 5}, "cv_id:5"),
        ({"traits": {"email": "e@x.io"}}, "cv_email:e@x.io"),
    ],
)
def test_spec_4_device_is_cookie_else_cv_id_else_cv_email(fields: dict, key: str) -> None:
    event = prepare_event(make(**fields), SETTINGS)
    assert isinstance(event, PreparedEvent)
    assert event.device_key == key


def test_spec_4_device_keys_of_different_kinds_never_collide() -> None:
    by_cookie = prepare_event(make(anonymousId="same"), SETTINGS)
    by_id = prepare_event(make(userId="same"), SETTINGS)
    by_email = prepare_event(make(traits={"email": "same"}), SETTINGS)
    keys = {e.device_key for e in (by_cookie, by_id, by_email) if isinstance(e, PreparedEvent)}
    assert len(keys) == 3


# === send order =============================================================================


def test_spec_4_send_order_is_by_timestamp() -> None:
    events = [prepared("b", 3_000), prepared("a", 1_000), prepared("c", 2_000)]
    assert ids(in_send_order(events)) == ["a", "c", "b"]


def test_spec_4_send_order_ties_are_broken_by_message_id() -> None:
    events = [prepared("m-3", 5), prepared("m-1", 5), prepared("m-2", 5), prepared("m-0", 9)]
    assert ids(in_send_order(events)) == ["m-1", "m-2", "m-3", "m-0"]


def test_spec_4_events_without_timestamp_come_last() -> None:
    events = [
        prepared("n-2", None),
        prepared("late", 9_999_999_999_999),
        prepared("n-1", None),
        prepared("neg", -5),
        prepared("zero", 0),
    ]
    assert ids(in_send_order(events)) == ["neg", "zero", "late", "n-1", "n-2"]


def test_spec_4_send_order_of_real_events_uses_parsed_timestamps() -> None:
    raw = [
        make(messageId="third", anonymousId="a", originalTimestamp="2024-01-01T12:00:00+02:00"),
        make(messageId="first", anonymousId="a", originalTimestamp="2024-01-01T09:00:00Z"),
        make(messageId="last", anonymousId="a"),
        make(messageId="second", anonymousId="a", timestamp="2024-01-01T09:30:00.5Z"),
        make(messageId="fourth", anonymousId="a", originalTimestamp=1_704_106_800_001),
    ]
    events = [prepare_event(event, SETTINGS) for event in raw]
    assert all(isinstance(event, PreparedEvent) for event in events)
    assert ids(in_send_order(events)) == ["first", "second", "third", "fourth", "last"]


def test_spec_4_send_order_does_not_depend_on_input_order() -> None:
    events = [prepared(f"m-{i % 7}", (i * 37) % 11 or None) for i in range(40)]
    expected = ids(in_send_order(events))
    rng = random.Random(7)
    for _ in range(10):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert ids(in_send_order(shuffled)) == expected


# === stitching ==============================================================================


def test_spec_4_later_events_get_the_current_identity() -> None:
    events = [prepared("1", 1, cv_id="u-1", cv_email="a@x.io"), prepared("2", 2), prepared("3", 3)]
    stitched, current = stitch(events)
    assert who(stitched) == [("u-1", "a@x.io")] * 3
    assert current == Identity("u-1", "a@x.io")


def test_spec_4_earlier_events_get_the_first_value_seen() -> None:
    events = [
        prepared("1", 1),
        prepared("2", 2),
        prepared("3", 3, cv_id="u-first"),
        prepared("4", 4, cv_id="u-second"),
        prepared("5", 5),
    ]
    stitched, current = stitch(events)
    assert [e.cv_id for e in stitched] == ["u-first", "u-first", "u-first", "u-second", "u-second"]
    assert current.cv_id == "u-second"


def test_spec_4_own_identifiers_always_win() -> None:
    events = [
        prepared("1", 1, cv_id="u-a", cv_email="a@x.io"),
        prepared("2", 2, cv_id="u-b"),
        prepared("3", 3, cv_email="c@x.io"),
        prepared("4", 4, cv_id="u-a", cv_email="d@x.io"),
        prepared("5", 5),
    ]
    stitched, current = stitch(events)
    assert who(stitched) == [
        ("u-a", "a@x.io"),
        ("u-b", "a@x.io"),
        ("u-b", "c@x.io"),
        ("u-a", "d@x.io"),
        ("u-a", "d@x.io"),
    ]
    assert current == Identity("u-a", "d@x.io")


def test_spec_4_cv_id_and_cv_email_are_stitched_independently() -> None:
    events = [
        prepared("1", 1),
        prepared("2", 2, cv_email="first@x.io"),
        prepared("3", 3),
        prepared("4", 4, cv_id="u-1"),
        prepared("5", 5),
    ]
    stitched, _ = stitch(events)
    assert who(stitched) == [("u-1", "first@x.io")] * 5


def test_spec_4_stitching_keeps_a_value_missing_when_nobody_carries_it() -> None:
    events = [prepared("1", 1), prepared("2", 2, cv_email="e@x.io"), prepared("3", 3)]
    stitched, current = stitch(events)
    assert who(stitched) == [(None, "e@x.io")] * 3
    assert current == Identity(None, "e@x.io")


def test_spec_4_stitching_changes_only_cv_id_and_cv_email() -> None:
    events = [prepared("1", 1, cookie="c-9"), prepared("2", 2, cv_id="u", cookie="c-9")]
    stitched, _ = stitch(events)
    for before, after in zip(events, stitched, strict=True):
        assert after.cookie == before.cookie
        assert after.message_id == before.message_id
        assert after.timestamp_ms == before.timestamp_ms
        assert after.event == before.event
    assert events[0].cv_id is None  # the input is not modified


def test_spec_4_stitch_with_known_identity_carries_earlier_state() -> None:
    events = [prepared("1", 1), prepared("2", 2, cv_id="u-new"), prepared("3", 3)]
    stitched, current = stitch(events, known=Identity("u-old", "old@x.io"))
    assert who(stitched) == [
        ("u-old", "old@x.io"),
        ("u-new", "old@x.io"),
        ("u-new", "old@x.io"),
    ]
    assert current == Identity("u-new", "old@x.io")


def test_spec_4_stitch_known_state_across_two_batches() -> None:
    first, state = stitch([prepared("1", 1, cv_email="e@x.io"), prepared("2", 2)])
    second, state = stitch([prepared("3", 3), prepared("4", 4, cv_id="u")], known=state)
    assert who(first) == [(None, "e@x.io")] * 2
    # event 3 is earlier than the device's first cv_id carrier: it gets the first value seen
    assert who(second) == [("u", "e@x.io"), ("u", "e@x.io")]
    assert state == Identity("u", "e@x.io")


def test_spec_4_stitch_of_nothing_returns_the_known_identity() -> None:
    assert stitch([]) == ([], Identity())
    assert stitch([], known=Identity("u", None)) == ([], Identity("u", None))


def test_spec_4_stitched_identity_reaches_the_request() -> None:
    raw = [
        make(messageId="a", anonymousId="c-1", originalTimestamp="2024-01-01T00:00:00Z"),
        make(
            messageId="b",
            anonymousId="c-1",
            userId="u-1",
            traits={"email": "e@x.io"},
            originalTimestamp="2024-01-01T00:00:01Z",
        ),
    ]
    events = [prepare_event(event, SETTINGS) for event in raw]
    ordered, _ = resolve_device("cookie:c-1", events, stitch_identity=True)
    requests = [build_request(event, SETTINGS) for event in ordered]
    assert all(isinstance(request, WoopraRequest) for request in requests)
    first = requests[0].params
    assert first["cv_id"] == "u-1"
    assert first["cv_email"] == "e@x.io"
    assert first["cookie"] == "c-1"


def test_spec_4_resolve_device_orders_and_stitches_a_cookie_device() -> None:
    events = [prepared("2", 20, cv_id="u-1"), prepared("1", 10), prepared("3", None)]
    ordered, _ = resolve_device("cookie:c-1", events, stitch_identity=True)
    assert ids(ordered) == ["1", "2", "3"]
    assert [e.cv_id for e in ordered] == ["u-1", "u-1", "u-1"]


def test_spec_4_resolve_device_without_stitching_only_orders() -> None:
    events = [prepared("2", 20, cv_id="u-1"), prepared("1", 10), prepared("3", None)]
    ordered, _ = resolve_device("cookie:c-1", events, stitch_identity=False)
    assert ids(ordered) == ["1", "2", "3"]
    assert [e.cv_id for e in ordered] == [None, "u-1", None]


@pytest.mark.parametrize("device_key", ["cv_id:u-1", "cv_email:e@x.io"])
def test_spec_4_only_cookie_devices_are_stitched(device_key: str) -> None:
    events = [
        prepared("2", 2, cv_id="u-1", cookie=None),
        prepared("1", 1, cv_id="u-1", cv_email="e@x.io", cookie=None),
        prepared("3", 3, cv_id="u-1", cookie=None),
    ]
    ordered, _ = resolve_device(device_key, events, stitch_identity=True)
    assert ids(ordered) == ["1", "2", "3"]
    assert who(ordered) == [("u-1", "e@x.io"), ("u-1", None), ("u-1", None)]
