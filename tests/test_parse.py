"""SPEC §1 (input) and §9 (parse-stage dead letters): `parse_record` and `loads_strict`."""

from __future__ import annotations

import json

import pytest

from transforms.core.mapping import MappingSettings, map_event
from transforms.core.records import (
    INVALID_JSON,
    NOT_AN_OBJECT,
    STAGE_PARSE,
    TOO_LARGE,
    DeadLetter,
    WoopraRequest,
)
from transforms.parse import InvalidEventError, loads_strict, parse_record

MAX_BYTES = 32 * 1024
SETTINGS = MappingSettings(project_name="parse-tests")

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "m-1",
    "anonymousId": "anon-1",
    "originalTimestamp": "2024-03-01T10:00:00.000Z",
    "properties": {"total": 12.5},
}


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def line_of_size(size: int, *, message_id: str = "m-big", multibyte: bool = False) -> str:
    """A valid event line whose UTF-8 encoding is exactly `size` bytes."""
    fields = {"messageId": message_id, "type": "track", "anonymousId": "anon-1", "pad": ""}
    room = size - len(compact(fields).encode("utf-8"))
    assert room >= 0
    fields["pad"] = "é" * (room // 2) + "x" * (room % 2) if multibyte else "x" * room
    line = compact(fields)
    assert len(line.encode("utf-8")) == size
    return line


def dead_letter(record: bytes | str, reason: str) -> DeadLetter:
    result = parse_record(record)
    assert isinstance(result, DeadLetter), result
    assert result.reason == reason
    assert result.stage == STAGE_PARSE
    return result


def through_mapping(record: bytes | str) -> DeadLetter | WoopraRequest:
    """Parse then map one record, using every output form; must never raise."""
    parsed = parse_record(record)
    assert parsed is not None
    if isinstance(parsed, DeadLetter):
        json.loads(parsed.to_json())
        return parsed
    result = map_event(parsed, SETTINGS)
    json.loads(result.to_json())
    if isinstance(result, WoopraRequest):
        result.url().encode("utf-8")
    return result


# --- a valid line ---------------------------------------------------------------------------


def test_spec_1_valid_event_line_parses_to_the_object() -> None:
    assert parse_record(compact(EVENT).encode("utf-8")) == EVENT


def test_spec_1_text_and_bytes_records_parse_alike() -> None:
    line = compact({**EVENT, "event": "Ünïcode ✓"})
    assert parse_record(line) == parse_record(line.encode("utf-8")) == json.loads(line)


def test_spec_1_surrounding_whitespace_is_allowed() -> None:
    assert parse_record(b"  " + compact(EVENT).encode() + b"\r\n") == EVENT


# --- blank lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("record", [b"", b" ", b"\n", b"\r\n", b"\t  \t", "", "   \n"])
def test_spec_1_blank_line_is_skipped(record: bytes | str) -> None:
    assert parse_record(record) is None


# --- size -----------------------------------------------------------------------------------


def test_spec_1_line_of_exactly_32_kib_is_accepted() -> None:
    line = line_of_size(MAX_BYTES)
    assert parse_record(line.encode("utf-8")) == json.loads(line)


def test_spec_1_line_one_byte_over_32_kib_is_too_large() -> None:
    line = line_of_size(MAX_BYTES + 1)
    dead = dead_letter(line.encode("utf-8"), TOO_LARGE)
    assert dead.message_id == "m-big"


def test_spec_1_size_is_counted_in_utf8_bytes_not_characters() -> None:
    line = line_of_size(MAX_BYTES + 1, multibyte=True)
    assert len(line) <= MAX_BYTES
    assert dead_letter(line, TOO_LARGE).message_id == "m-big"


def test_spec_1_multibyte_line_of_exactly_32_kib_is_accepted() -> None:
    line = line_of_size(MAX_BYTES, multibyte=True)
    assert parse_record(line) == json.loads(line)


def test_spec_9_too_large_dead_letter_keeps_the_raw_text() -> None:
    line = line_of_size(MAX_BYTES + 100)
    dead = dead_letter(line.encode("utf-8"), TOO_LARGE)
    assert dead.event == line
    assert dead.to_dict()["event"] == line


def test_spec_1_too_large_line_that_does_not_parse_has_no_message_id() -> None:
    line = line_of_size(MAX_BYTES + 10)[:-1]  # cut off the closing brace
    dead = dead_letter(line.encode("utf-8"), TOO_LARGE)
    assert dead.message_id is None
    assert dead.event == line


def test_spec_1_size_is_checked_before_parsing() -> None:
    record = b"{" + b"x" * MAX_BYTES + b"\xff"
    dead_letter(record, TOO_LARGE)


def test_spec_1_too_large_deeply_nested_line_is_too_large() -> None:
    record = b"[" * 300_000 + b"]" * 300_000
    assert dead_letter(record, TOO_LARGE).message_id is None


# --- invalid JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        b'{"type": "track", "value": NaN}',
        b'{"type": "track", "value": Infinity}',
        b'{"type": "track", "value": -Infinity}',
        b'{"type": "track", "value": 1e999}',
        b'{"type": "track", "value": -1e999}',
        b'{"type": "track", "values": [1, 2, 1e999]}',
        b'{"type": "track", "nested": {"deep": {"value": NaN}}}',
        b"NaN",
        b"Infinity",
    ],
)
def test_spec_1_nan_and_infinity_are_invalid_json(record: bytes) -> None:
    dead = dead_letter(record, INVALID_JSON)
    assert dead.message_id is None
    assert dead.event == record.decode("utf-8")


@pytest.mark.parametrize(
    "record",
    [
        b'{"type": "track"',
        b"{'type': 'track'}",
        b'{"type": "track",}',
        b'{"type": track}',
        b"not json at all",
        b'{"type": "track"} {"type": "page"}',
        b'{"type": "tr\x00ack"}',
        b'\x00{"type": "track"}',
    ],
)
def test_spec_1_malformed_json_is_invalid_json(record: bytes) -> None:
    dead = dead_letter(record, INVALID_JSON)
    assert dead.event == record.decode("utf-8")


@pytest.mark.parametrize(
    "record",
    [
        b'{"type": "track", "name": "caf\xe9"}',
        b'{"type": "track", "name": "\xff\xfe"}',
        b'{"type": "track", "name": "cut \xc3"}',
        b'{"type": "track", "name": "\xed\xa0\x80"}',
        b'{"type": "track", "name": "\xc0\xaf"}',
    ],
)
def test_spec_1_invalid_utf8_is_invalid_json(record: bytes) -> None:
    dead_letter(record, INVALID_JSON)


def test_spec_9_invalid_utf8_raw_text_keeps_bad_bytes_as_backslash_escapes() -> None:
    record = b'{"messageId": "m-7", "name": "caf\xe9 \xff"}'
    dead = dead_letter(record, INVALID_JSON)
    assert dead.event == '{"messageId": "m-7", "name": "caf\\xe9 \\xff"}'
    assert json.loads(dead.to_json())["event"] == dead.event


def test_spec_9_invalid_json_dead_letter_keeps_the_raw_text() -> None:
    record = '{"messageId": "m-8", "type": "träck", oops}'
    dead = dead_letter(record.encode("utf-8"), INVALID_JSON)
    assert dead.event == record
    assert dead.message_id == "m-8"  # still readable in the text


@pytest.mark.parametrize(
    "record",
    [
        b'{"messageId": "m-9", "type": "track", "v": NaN}',
        b'{"type": "track", "messageId": "m-9", "properties": {"cut": "off',
        b'{"messageId": "m-9", "name": "\xff"}',
        b'{"messageId" : "m-9" "type": "track"}',
    ],
)
def test_spec_9_parse_dead_letter_carries_a_message_id_still_readable(record) -> None:
    dead = dead_letter(record, INVALID_JSON)
    assert dead.message_id == "m-9"


@pytest.mark.parametrize(
    "record",
    [b'{"type": "track", oops}', b'{"messageId": null, "x": NaN}', b'{"messageId": ""'],
)
def test_spec_9_parse_dead_letter_without_a_readable_message_id_has_null(record) -> None:
    assert dead_letter(record, INVALID_JSON).message_id is None


def test_spec_1_loads_strict_rejects_nan_and_accepts_large_finite_numbers() -> None:
    with pytest.raises(InvalidEventError):
        loads_strict(b"[NaN]")
    with pytest.raises(InvalidEventError):
        loads_strict(b"[1e400]")
    assert loads_strict(b"[1e308, -1.5e-300]") == [1e308, -1.5e-300]


def test_spec_1_loads_strict_rejects_invalid_utf8() -> None:
    with pytest.raises(InvalidEventError):
        loads_strict(b'"\xff"')


# --- not an object --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "value"),
    [
        (b"[1, 2]", [1, 2]),
        (b"[]", []),
        (b'[{"type": "track"}]', [{"type": "track"}]),
        (b'"track"', "track"),
        (b"42", 42),
        (b"-0.5", -0.5),
        (b"null", None),
        (b"true", True),
        (b"false", False),
    ],
)
def test_spec_1_json_that_is_not_an_object_is_not_an_object(record: bytes, value: object) -> None:
    dead = dead_letter(record, NOT_AN_OBJECT)
    assert dead.message_id is None
    # SPEC §9: the dead letter carries the original event or the raw text.
    assert dead.event == value or dead.event == record.decode("utf-8")
    assert type(dead.event) in (type(value), str)


# --- hostile input never raises -------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        b"[" * 16_384 + b"]" * 16_384,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b"[" * 5_000,
        b"{" * 30_000,
        b'{"a":[' * 3_000,
    ],
)
def test_spec_1_deep_nesting_never_raises(record: bytes) -> None:
    assert len(record) <= MAX_BYTES
    result = parse_record(record)
    assert isinstance(result, dict | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.reason in (INVALID_JSON, NOT_AN_OBJECT)


@pytest.mark.parametrize("depth", [1, 10, 50, 90, 99, 100, 101, 150, 500, 2_000])
def test_spec_1_deeply_nested_properties_never_raise_through_mapping(depth: int) -> None:
    nested = '{"k":' * depth + '"leaf"' + "}" * depth
    head = compact({k: v for k, v in EVENT.items() if k != "properties"})[:-1]
    record = f'{head},"properties":{nested},"traits":{{"deep":[{nested}]}}}}'
    assert len(record) <= MAX_BYTES
    result = through_mapping(record.encode("utf-8"))
    assert isinstance(result, DeadLetter | WoopraRequest)
    if depth <= 50:  # as deep as real events ever get: an ordinary event
        assert isinstance(result, WoopraRequest)


def test_spec_1_shallow_nesting_is_an_ordinary_event() -> None:
    event = {**EVENT, "properties": {"a": {"b": {"c": {"d": [[[1]]]}}}}}
    result = through_mapping(compact(event))
    assert isinstance(result, WoopraRequest)
    assert result.params["ce_a_b_c_d"] == "[[[1]]]"


def test_spec_1_escaped_nul_characters_are_kept_and_never_raise() -> None:
    record = b'{"type": "track", "event": "a\\u0000b", "anonymousId": "x\\u0000y",'
    record += b' "properties": {"n\\u0000": "\\u0000"}}'
    result = through_mapping(record)
    assert isinstance(result, WoopraRequest)
    assert result.params["event"] == "a\x00b"
    assert result.params["cookie"] == "x\x00y"
    assert result.params["ce_n\x00"] == "\x00"
    assert "%00" in result.url()


@pytest.mark.parametrize(
    "record",
    [
        b'{"type": "track", "anonymousId": "a", "event": "\\ud800"}',
        b'{"type": "track", "anonymousId": "a", "event": "x\\udfffy"}',
        b'{"type": "track", "anonymousId": "\\udc00", "properties": {"\\ud83d": 1}}',
        '{"type": "track", "anonymousId": "a", "event": "\ud800"}',
        '{"type": "track", "anonymousId": "a", "properties": {"k": "\udcff"}}',
    ],
)
def test_spec_1_lone_surrogates_never_raise(record: bytes | str) -> None:
    result = through_mapping(record)
    assert isinstance(result, DeadLetter | WoopraRequest)
    if isinstance(result, DeadLetter):
        assert result.reason == INVALID_JSON
        assert isinstance(result.event, str)


def test_spec_1_escaped_surrogate_pair_is_a_valid_character() -> None:
    parsed = parse_record(b'{"type": "track", "event": "\\ud83d\\ude00 done"}')
    assert parsed == {"type": "track", "event": "\U0001f600 done"}


def test_spec_1_huge_integer_literal_never_raises() -> None:
    record = b'{"type": "track", "anonymousId": "a", "userId": ' + b"1" * 5_000 + b"}"
    result = through_mapping(record)
    assert isinstance(result, DeadLetter | WoopraRequest)
    if isinstance(result, DeadLetter):
        assert result.reason == INVALID_JSON


def test_spec_1_too_large_line_with_huge_integer_is_too_large() -> None:
    record = b'{"messageId": "m-9", "n": ' + b"7" * (MAX_BYTES + 10) + b"}"
    dead = dead_letter(record, TOO_LARGE)
    assert dead.message_id in ("m-9", None)


# --- the fast decoder agrees with the standard one ------------------------------------------


def _standard_reading(record: bytes):
    """What the standard decoder with the same hooks makes of a record, or its error."""
    from transforms.parse import _loads_standard

    try:
        return "value", _loads_standard(record)
    except InvalidEventError as err:
        return "error", str(err)


def _reading(record: bytes):
    try:
        return "value", loads_strict(record)
    except InvalidEventError as err:
        return "error", str(err)


@pytest.mark.parametrize(
    "record",
    [
        b'{"a":1,"b":2,"a":3}',  # a repeated key: the last value, in the first one's place
        b'{"n":[9223372036854775807,-9223372036854775808,18446744073709551615]}',
        b'{"n":123456789012345678901234567890,"m":-9223372036854775809}',  # beyond 64 bits
        b'{"id":"1234567890123456789012"}',  # a long digit run that is no number
        b'{"f":[0.1,1e308,5e-324,-0.0,1E2,2.5e-300,0.30000000000000004,1e-400]}',
        b'{"s":"\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/ \xc3\xa9 \xe2\x82\xac \x7f"}',
        b'{"s":"\\ud800"}',  # a lone surrogate: accepted, then refused by the check after
        b'\xef\xbb\xbf{"a":1}',  # a byte order mark
        b'{"a":"\t"}',  # a raw control character
        b'{"a":1e400}',
        b'{"a":NaN}',
        b'{"a":01}',
        b'{"a":1,}',
        b" \t\r\n{} \n",
        b"[" * 150 + b"]" * 150,
        b"[" * 2000 + b"]" * 2000,
        b'"text"',
    ],
)
def test_spec_1_the_fast_decoder_reads_what_the_standard_decoder_reads(record: bytes) -> None:
    _assert_same_reading(record)


def _assert_same_reading(record: bytes) -> None:
    """The same value (types, key order, floats) or the same error; the checks after the
    decoder (nesting, lone surrogates) may still refuse what it read."""
    reading, standard = _reading(record), _standard_reading(record)
    if standard[0] == "error" or reading[0] == "value":
        assert (reading[0], repr(reading[1])) == (standard[0], repr(standard[1]))


def test_spec_1_the_fast_decoder_reads_the_sample_events_as_the_standard_one() -> None:
    from pathlib import Path

    lines = (Path(__file__).parent.parent / "testdata" / "events.jsonl").read_bytes().splitlines()
    for line in lines:
        _assert_same_reading(line)
