"""SPEC §1 (non-empty), §7 (values), §8 (dry-run request shape), §9 (dead-letter shape)."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from transforms.core.fields import first_non_empty, non_empty
from transforms.core.mapping import MappingSettings, map_event
from transforms.core.records import (
    DEAD_LETTER_REASONS,
    MAX_FLOAT_WIRE_CHARS,
    STAGE_MAP,
    STAGE_PARSE,
    STAGE_READ,
    STAGE_SEND,
    DeadLetter,
    WoopraRequest,
    compact_json,
    wire_value,
)
from transforms.core.values import flatten_into
from transforms.parse import parse_record

SETTINGS = MappingSettings(project_name="values-tests")


def flat(source: dict, prefix: str = "cv_") -> dict[str, Any]:
    params: dict[str, Any] = {}
    flatten_into(params, prefix, source)
    return params


def request_of(event: dict) -> WoopraRequest:
    result = map_event(event, SETTINGS)
    assert isinstance(result, WoopraRequest), result
    return result


def track(**fields: Any) -> dict:
    return {"type": "track", "event": "Clicked", "messageId": "m-1", "anonymousId": "a", **fields}


# === §1 non-empty ===========================================================================


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x", "x"),
        (" ", " "),
        ("0", "0"),
        ("false", "false"),
        (0, "0"),
        (7, "7"),
        (-12, "-12"),
        (2.5, "2.5"),
        (0.0, "0"),
        (10**20, "100000000000000000000"),
        ("", None),
        (None, None),
        (True, None),
        (False, None),
        ({}, None),
        ({"a": 1}, None),
        ([], None),
        (["a"], None),
    ],
)
def test_spec_1_non_empty_definition(value: Any, expected: str | None) -> None:
    assert non_empty(value) == expected


def test_spec_1_first_non_empty_skips_absent_values() -> None:
    assert first_non_empty(None, "", False, [], {}, 0, "x") == "0"
    assert first_non_empty(None, True, "", "y") == "y"
    assert first_non_empty(None, "", [], {}) is None


# === §7 flattening ==========================================================================


def test_spec_7_nested_objects_join_keys_with_underscore() -> None:
    assert flat({"address": {"city": "Oslo", "geo": {"lat": 59.9, "lon": 10.7}}}) == {
        "cv_address_city": "Oslo",
        "cv_address_geo_lat": 59.9,
        "cv_address_geo_lon": 10.7,
    }


def test_spec_7_traits_address_city_becomes_cv_address_city() -> None:
    params = request_of(track(traits={"address": {"city": "Oslo"}})).params
    assert params["cv_address_city"] == "Oslo"
    assert "cv_address" not in params


@pytest.mark.parametrize(
    "source",
    [{"a": {}}, {"a": {"b": {}}}, {"a": {"b": {"c": {}}}}, {"a": {"b": None}}, {"a": None}, {}],
)
def test_spec_7_empty_object_and_null_give_nothing(source: dict) -> None:
    assert flat(source) == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b"], '["a","b"]'),
        ([], "[]"),
        ([1, 2.5, True, None], "[1,2.5,true,null]"),
        ([{"k": "v", "n": [1]}], '[{"k":"v","n":[1]}]'),
        ([[]], "[[]]"),
        ([{}], "[{}]"),
    ],
)
def test_spec_7_lists_become_compact_json(value: list, expected: str) -> None:
    assert flat({"tags": value}) == {"cv_tags": expected}


def test_spec_7_lists_with_non_ascii_stay_valid_compact_json() -> None:
    text = flat({"tags": ["é", "日本", 'quote"s']})["cv_tags"]
    assert json.loads(text) == ["é", "日本", 'quote"s']
    assert ", " not in text
    assert ": " not in text


def test_spec_7_nulls_are_left_out_at_every_level() -> None:
    assert flat({"a": None, "b": {"c": None, "d": 1}, "e": [None]}) == {
        "cv_b_d": 1,
        "cv_e": "[null]",
    }


def test_spec_7_top_level_empty_key_is_left_out() -> None:
    assert flat({"": "x", "a": 1}) == {"cv_a": 1}
    assert flat({"": {"b": 1}}) == {}
    params = request_of(track(properties={"": "p"}, traits={"": "t"})).params
    assert "ce_" not in params
    assert "cv_" not in params
    assert not any(key in ("ce_", "cv_") or key.startswith(("ce__", "cv__")) for key in params)


def test_spec_7_values_keep_their_json_type() -> None:
    assert flat({"s": "text", "i": 3, "f": 0.25, "t": True, "n": False, "z": 0, "e": ""}) == {
        "cv_s": "text",
        "cv_i": 3,
        "cv_f": 0.25,
        "cv_t": True,
        "cv_n": False,
        "cv_z": 0,
        "cv_e": "",
    }


def test_spec_7_parameters_keep_the_source_order_depth_first() -> None:
    source = {"a": 1, "b": {"c": 2, "d": {"e": 3, "x": None}, "f": 4}, "g": [1], "h": {}, "i": 5}
    assert list(flat(source)) == ["cv_a", "cv_b_c", "cv_b_d_e", "cv_b_f", "cv_g", "cv_i"]


def test_spec_7_flattening_very_deep_objects_never_raises() -> None:
    nested: Any = "leaf"
    for _ in range(5_000):
        nested = {"k": nested}
    params = flat({"deep": nested})
    assert params == {"cv_deep" + "_k" * 5_000: "leaf"}


def test_spec_7_flattening_adds_to_existing_params() -> None:
    params: dict[str, Any] = {"project": "p", "cv_a": "old"}
    flatten_into(params, "cv_", {"a": "new", "b": None})
    assert params == {"project": "p", "cv_a": "new"}


# === §7 wire form ===========================================================================


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (10**21, "1000000000000000000000"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (2.0, "2"),
        (100.0, "100"),
        (-3.25, "-3.25"),
        (1e16, "10000000000000000"),
        (1e21, "1000000000000000000000"),
        (1.5e-7, "0.00000015"),
        (0.30000000000000004, "0.30000000000000004"),
        (123456.789, "123456.789"),
        ("text", "text"),
        ("", ""),
        ("True", "True"),
    ],
)
def test_spec_7_wire_value(value: Any, expected: str) -> None:
    assert wire_value(value) == expected


def test_spec_7_wire_params_and_url_use_the_wire_form() -> None:
    request = WoopraRequest(
        message_id="m",
        endpoint="https://www.woopra.com/track/ce",
        params={"project": "p", "vip": True, "off": False, "n": 3, "f": 2.0, "g": 0.5, "s": "a b"},
    )
    assert request.wire_params() == {
        "project": "p",
        "vip": "true",
        "off": "false",
        "n": "3",
        "f": "2",
        "g": "0.5",
        "s": "a b",
    }
    split = urlsplit(request.url())
    assert f"{split.scheme}://{split.netloc}{split.path}" == request.endpoint
    assert dict(parse_qsl(split.query, keep_blank_values=True)) == request.wire_params()


@pytest.mark.parametrize(
    "params",
    [
        {"project": "p"},
        {"project": "p", "vip": True, "off": False, "n": -3, "big": 10**30, "s": "a b+c"},
        {"project": "p", "f": 2.0, "g": 0.5, "e": 1e22, "tiny": 1.5e-7, "neg": -0.0},
        {"project": "p", "text": "é/?#&=~ ü€😀", "empty": "", "spaces": "   "},
        {"project": "p", "flag": True, "x": 1e-5, "ünï": "çødé", "list": '["a b"]'},
    ],
)
def test_spec_7_url_length_counts_what_url_builds(params: dict) -> None:
    # The size check counts the URL without building it: exactly, and as a quick upper bound.
    for endpoint in ("https://www.woopra.com/track/ce", "http://127.0.0.1:8080/x/track/identify"):
        request = WoopraRequest(message_id="m", endpoint=endpoint, params=params)
        assert request.url_length() == len(request.url().encode("ascii"))
        assert request.url_length_bound() >= request.url_length()


@pytest.mark.parametrize(
    "value",
    [5e-324, -5e-324, -2.2250738585072014e-308, -2.225073858507201e-308, -1.7976931348623157e308],
)
def test_spec_7_longest_float_wire_text_is_within_the_bound(value: float) -> None:
    assert len(wire_value(value)) <= MAX_FLOAT_WIRE_CHARS
    request = WoopraRequest(message_id="m", endpoint="https://w/track/ce", params={"f": value})
    assert request.url_length_bound() >= request.url_length() == len(request.url())


def test_spec_7_float_wire_text_never_exceeds_the_bound_across_magnitudes() -> None:
    generator = random.Random(7)
    longest = 0
    for exponent in range(-324, 309):
        for _ in range(20):
            value = -float(f"{generator.random():.17f}e{exponent}")
            longest = max(longest, len(wire_value(value)))
    assert longest <= MAX_FLOAT_WIRE_CHARS
    assert longest >= MAX_FLOAT_WIRE_CHARS - 2  # the bound is tight, not a guess


def test_spec_7_url_is_urlencoded_params_after_endpoint() -> None:
    request = WoopraRequest(
        message_id=None,
        endpoint="https://www.woopra.com/track/ce",
        params={"event": "a&b=c d", "ce_x": "é/?#", "cv_flag": True},
    )
    assert request.url() == (
        "https://www.woopra.com/track/ce?event=a%26b%3Dc+d&ce_x=%C3%A9%2F%3F%23&cv_flag=true"
    )


def test_spec_7_mapped_request_keeps_json_types_and_sends_wire_text() -> None:
    event = track(
        properties={"price": 9.5, "qty": 2, "gift": True, "whole": 3.0},
        traits={"vip": False, "score": 0.1},
    )
    request = request_of(event)
    assert request.params["ce_price"] == 9.5
    assert request.params["ce_qty"] == 2
    assert request.params["ce_gift"] is True
    assert request.params["cv_vip"] is False
    wire = request.wire_params()
    assert wire["ce_price"] == "9.5"
    assert wire["ce_qty"] == "2"
    assert wire["ce_gift"] == "true"
    assert wire["ce_whole"] == "3"
    assert wire["cv_vip"] == "false"
    assert wire["cv_score"] == "0.1"
    assert all(isinstance(value, str) for value in wire.values())


# === §8 dry-run request =====================================================================


def test_spec_8_request_to_dict_shape() -> None:
    event = track(
        messageId="m-42",
        originalTimestamp="2024-03-01T10:00:00Z",
        properties={"price": 9.5, "gift": True},
    )
    request = request_of(event)
    assert request.to_dict() == {
        "message_id": "m-42",
        "endpoint": "https://www.woopra.com/track/ce",
        "method": "GET",
        "params": {
            "project": "values-tests",
            "event": "clicked",
            "cookie": "a",
            "timestamp": 1_709_287_200_000,
            "ce_price": 9.5,
            "ce_gift": True,
        },
    }
    assert list(request.to_dict()) == ["message_id", "endpoint", "method", "params"]


def test_spec_8_request_json_line_round_trips_with_json_types() -> None:
    request = request_of(track(messageId=None, traits={"n": 1, "ok": True, "name": "Zoë"}))
    line = request.to_json()
    assert "\n" not in line
    decoded = json.loads(line)
    assert decoded["message_id"] is None
    assert decoded["params"]["cv_n"] == 1
    assert decoded["params"]["cv_ok"] is True
    assert decoded["params"]["cv_name"] == "Zoë"
    assert decoded == request.to_dict()


def test_spec_8_request_equality_ignores_the_carried_event() -> None:
    one = WoopraRequest("m", "https://e/track/ce", {"a": 1}, event={"x": 1})
    two = WoopraRequest("m", "https://e/track/ce", {"a": 1}, event={"x": 2})
    assert one == two
    assert "event" not in one.to_dict()


# === §9 dead letters ========================================================================


def test_spec_9_reason_codes_are_exactly_the_documented_ones() -> None:
    assert set(DEAD_LETTER_REASONS) == {
        "invalid_json",
        "not_an_object",
        "too_large",
        "missing_type",
        "unsupported_type",
        "missing_project",
        "missing_identity",
        "invalid_timestamp",
        "request_too_large",
        "http_4xx",
        "retries_exhausted",
        "unreadable_file",
        "interrupted",
    }
    assert len(DEAD_LETTER_REASONS) == 13


def test_spec_9_stages() -> None:
    assert (STAGE_READ, STAGE_PARSE, STAGE_MAP, STAGE_SEND) == ("read", "parse", "map", "send")


def test_spec_9_dead_letter_to_dict_shape() -> None:
    dead = DeadLetter(
        message_id="m-1",
        stage="send",
        reason="http_4xx",
        detail="HTTP 400",
        event={"type": "track"},
        status=400,
        attempts=1,
    )
    assert dead.to_dict() == {
        "message_id": "m-1",
        "stage": "send",
        "reason": "http_4xx",
        "detail": "HTTP 400",
        "status": 400,
        "attempts": 1,
        "event": {"type": "track"},
    }
    assert list(dead.to_dict()) == [
        "message_id",
        "stage",
        "reason",
        "detail",
        "status",
        "attempts",
        "event",
    ]


def test_spec_9_dead_letter_defaults_are_null_status_and_zero_attempts() -> None:
    dead = DeadLetter(None, "parse", "invalid_json", "bad")
    assert dead.to_dict() == {
        "message_id": None,
        "stage": "parse",
        "reason": "invalid_json",
        "detail": "bad",
        "status": None,
        "attempts": 0,
        "event": None,
    }


def test_spec_9_dead_letter_json_line_round_trips() -> None:
    dead = DeadLetter("m", "map", "missing_identity", "no id", event={"note": "Zoë\n"})
    line = dead.to_json()
    assert "\n" not in line
    assert json.loads(line) == dead.to_dict()


def test_spec_9_parse_dead_letter_json_line_keeps_the_raw_text() -> None:
    record = b'{"messageId": "m-2", "bad": "\xff\xfe", "ok": "Zo\xc3\xab"}'
    dead = parse_record(record)
    assert isinstance(dead, DeadLetter)
    decoded = json.loads(dead.to_json())
    assert decoded["stage"] == "parse"
    assert decoded["reason"] == "invalid_json"
    assert decoded["message_id"] == "m-2"  # readable in the text
    assert decoded["status"] is None
    assert decoded["event"] == '{"messageId": "m-2", "bad": "\\xff\\xfe", "ok": "Zoë"}'


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"type": "track", "anonymousId": "a", "properties": {"p": "x" * 9_000}},
            "request_too_large",
        ),
        ({"type": "track"}, "missing_identity"),
        ({"type": "alias", "anonymousId": "a"}, "unsupported_type"),
        ({"anonymousId": "a"}, "missing_type"),
        ({"type": "page", "anonymousId": "a", "timestamp": "nope"}, "invalid_timestamp"),
    ],
)
def test_spec_9_map_dead_letters_use_documented_reasons(event: dict, reason: str) -> None:
    dead = map_event(event, SETTINGS)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == reason
    assert dead.reason in DEAD_LETTER_REASONS
    assert dead.to_dict()["event"] == event
    assert dead.to_dict()["stage"] == "map"


def test_spec_9_missing_project_dead_letter() -> None:
    dead = map_event({"type": "track", "anonymousId": "a"}, MappingSettings())
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "missing_project"


@pytest.mark.parametrize(
    "value",
    [
        {"big": 10**30, "list": [1, "é"]},
        ["line\nbreak", "nul\u0000", "sep\u2028", -0.0, 1e-7, 1e22, True, None],
        {"nested": {"a": [{"b": 1.5}]}},
    ],
)
def test_spec_8_compact_json_is_exact_json_without_spaces(value):
    text = compact_json(value)
    assert json.loads(text) == value
    assert " " not in text  # none of the values holds a space


def test_spec_8_compact_json_keeps_non_ascii_and_integers_beyond_64_bits():
    assert compact_json({"city": "Zürich", "id": 10**30}) == (
        '{"city":"Zürich","id":1000000000000000000000000000000}'
    )
