"""ParseEvents: raw records (lines, messages) to event objects (SPEC §1)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

import apache_beam as beam
import orjson

from transforms.core.mapping import message_id_of
from transforms.core.records import (
    DEAD_LETTER_TAG,
    INVALID_JSON,
    NOT_AN_OBJECT,
    STAGE_PARSE,
    TOO_LARGE,
    DeadLetter,
)
from transforms.progress import ProgressCounter

MAX_EVENT_BYTES = 32 * 1024
# Deeper events cannot be walked, encoded or shuffled safely; no real event comes close.
MAX_NESTING = 100
# An over-size line is still parsed for its messageId up to this size; beyond, it is not.
MAX_BYTES_PARSED_FOR_ID = 1024 * 1024
# The raw text kept in a dead letter of an over-size line.
MAX_DEAD_LETTER_TEXT = 1024 * 1024
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Enough digits in a row for an integer beyond 64 bits, which orjson would read as a float.
# Found by mapping every digit to "0" and every other byte to a space, then looking for a run
# of zeros: two C passes over the record, a tenth of the time of the regex `[0-9]{19}`.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_DIGITS = b"0" * 19
_NOT_PARSED = object()
# A file or message may start with a UTF-8 byte order mark; JSON readers may ignore it (RFC 8259).
UTF8_BOM = b"\xef\xbb\xbf"
# The messageId of a line that is not valid JSON, when its text still shows one.
_MESSAGE_ID_TEXT = re.compile(rb'"messageId"\s*:\s*"((?:[^"\\]|\\.){1,256})"')
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


class InvalidEventError(Exception):
    """The record is not valid UTF-8 JSON."""


def _reject_constant(name: str) -> float:
    raise InvalidEventError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEventError(f"number {text[:32]} is out of range")
    return value


# Made once: json.loads with hooks builds a new decoder per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads_strict(data: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, no NaN or Infinity, no number that overflows a float."""
    value = _fast_loads(data)
    if value is _NOT_PARSED:
        value = _loads_standard(data)
    if data.count(b"{") + data.count(b"[") > MAX_NESTING and _depth(value) > MAX_NESTING:
        raise InvalidEventError(f"nested deeper than {MAX_NESTING} levels")
    if _SURROGATE_ESCAPE.search(data) and not _encodable(value):
        raise InvalidEventError("contains an unpaired UTF-16 surrogate")
    return value


def _fast_loads(data: bytes) -> Any:
    """orjson's reading of the record where it is the standard decoder's, in a third of the
    time; _NOT_PARSED where it refuses the record or could differ.

    orjson refuses what the standard decoder (with the hooks above) refuses, and more: lone
    surrogates, nesting beyond 1,024 levels; those go to the standard decoder, which says
    why (or accepts them, as it does lone surrogates, for the checks after it). Integers
    beyond 64 bits orjson reads as floats: a record with 19 digits in a row goes to the
    standard decoder too.
    """
    if _LONG_DIGITS in data.translate(_DIGITS_AS_ZEROS):
        return _NOT_PARSED
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT_PARSED


def _loads_standard(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidEventError(f"not valid UTF-8 at byte {err.start}") from err
    try:
        value = _STRICT_DECODER.decode(text)
    except RecursionError as err:
        raise InvalidEventError("nested too deeply") from err
    except json.JSONDecodeError as err:
        raise InvalidEventError(f"not valid JSON: {err.msg} at char {err.pos}") from err
    except ValueError as err:  # e.g. an integer beyond the interpreter's digit limit
        raise InvalidEventError(f"not valid JSON: {str(err)[:80]}") from err
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raw_text(data: bytes) -> str:
    """The record as text for a dead letter, keeping undecodable bytes visible."""
    return data[:MAX_DEAD_LETTER_TEXT].decode("utf-8", errors="backslashreplace")


def parse_record(
    record: bytes | str, max_bytes: int = MAX_EVENT_BYTES
) -> dict[str, Any] | DeadLetter | None:
    """The event in one line or message; None for a blank line, which is not an event.

    Records over `max_bytes` are `too_large` (a warehouse row is allowed more: its size does
    not count, only that of the event made from it).
    """
    data = record.encode("utf-8", errors="surrogatepass") if isinstance(record, str) else record
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if not data or data.isspace():
        return None
    if len(data) > max_bytes:
        return too_large(data, max_bytes)
    try:
        value = loads_strict(data)
    except InvalidEventError as err:
        message_id = readable_message_id(data)
        return DeadLetter(message_id, STAGE_PARSE, INVALID_JSON, str(err), event=_raw_text(data))
    if not isinstance(value, dict):
        detail = f"a JSON {_JSON_KINDS.get(type(value), 'null')}, not an object"
        return DeadLetter(None, STAGE_PARSE, NOT_AN_OBJECT, detail, event=value)
    return value


def readable_message_id(data: bytes) -> str | None:
    """The messageId of a record that is not a valid event, when it can still be read: from
    the JSON with NaN and the like allowed, else from its text (a line cut short, bad UTF-8).
    """
    with contextlib.suppress(ValueError, RecursionError):
        message_id = message_id_of(json.loads(data.decode("utf-8")))
        if message_id is not None:
            return message_id
    match = _MESSAGE_ID_TEXT.search(data)
    if match is None:
        return None
    with contextlib.suppress(ValueError):
        return message_id_of({"messageId": json.loads(b'"' + match.group(1) + b'"')})
    return None


def too_large(data: bytes, max_bytes: int = MAX_EVENT_BYTES) -> DeadLetter:
    """The dead letter of a record over the size limit, with as much of its text as is kept."""
    message_id = None
    if len(data) <= MAX_BYTES_PARSED_FOR_ID:
        with contextlib.suppress(InvalidEventError):
            message_id = message_id_of(loads_strict(data))
    detail = f"{len(data)} bytes, over {max_bytes}"
    if len(data) > MAX_DEAD_LETTER_TEXT:
        detail += f"; event text cut to the first {MAX_DEAD_LETTER_TEXT} bytes"
    return DeadLetter(message_id, STAGE_PARSE, TOO_LARGE, detail, event=_raw_text(data))


class _ParseFn(beam.DoFn):
    def __init__(self) -> None:
        self.input_events = ProgressCounter("input")

    def process(self, record: bytes | str | DeadLetter):
        # A file that could not be read to its end sends its dead letter among its records.
        parsed = record if isinstance(record, DeadLetter) else parse_record(record)
        if parsed is None:
            return
        self.input_events.inc()
        if isinstance(parsed, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, parsed)
        else:
            yield parsed


class ParseEvents(beam.PTransform):
    """Bytes or text records to event dicts; counts every non-blank record as input.

    Returns the events as the main output and dead letters under DEAD_LETTER_TAG.
    """

    def expand(self, records):
        return records | "Parse" >> beam.ParDo(_ParseFn()).with_outputs(
            DEAD_LETTER_TAG, main="events"
        )
