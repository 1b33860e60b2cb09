"""The values that flow between stages: Woopra requests and dead letters (SPEC §8, §9)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson

# Dead-letter reason codes (SPEC §9).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
TOO_LARGE = "too_large"
MISSING_TYPE = "missing_type"
UNSUPPORTED_TYPE = "unsupported_type"
MISSING_PROJECT = "missing_project"
MISSING_IDENTITY = "missing_identity"
INVALID_TIMESTAMP = "invalid_timestamp"
REQUEST_TOO_LARGE = "request_too_large"
HTTP_4XX = "http_4xx"
RETRIES_EXHAUSTED = "retries_exhausted"
UNREADABLE_FILE = "unreadable_file"
INTERRUPTED = "interrupted"
DEAD_LETTER_REASONS = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    TOO_LARGE,
    MISSING_TYPE,
    UNSUPPORTED_TYPE,
    MISSING_PROJECT,
    MISSING_IDENTITY,
    INVALID_TIMESTAMP,
    REQUEST_TOO_LARGE,
    HTTP_4XX,
    RETRIES_EXHAUSTED,
    UNREADABLE_FILE,
    INTERRUPTED,
)

# Stages a dead letter can come from (SPEC §9).
STAGE_READ = "read"
STAGE_PARSE = "parse"
STAGE_MAP = "map"
STAGE_SEND = "send"

METRICS_NAMESPACE = "woopra"

# The tagged output through which every stage hands on its dead letters.
DEAD_LETTER_TAG = "dead_letters"


# Bytes that urlencode (quote_plus) writes as one character; every other byte takes three.
_URL_SAFE_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~ "
# The longest wire text of a float: a negative subnormal with 17 digits, written out in full
# (`-0.` then 307 zeros then the digits). Every character of it is URL-safe.
MAX_FLOAT_WIRE_CHARS = 327


# The same text as orjson writes, for what orjson refuses (integers beyond 64 bits).
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def compact_json(value: Any) -> str:
    """JSON text without spaces, non-ASCII kept as is: output lines and list parameters.

    orjson writes it in a fifth of the standard encoder's time; every request goes through it.
    """
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:
        return _COMPACT_JSON.encode(value)


def wire_value(value: Any) -> str:
    """How one JSON-typed parameter value travels in a URL (SPEC §7)."""
    if type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            text = format(Decimal(text), "f")
        return text.removesuffix(".0")
    return str(value)


@dataclass(slots=True, init=False)
class WoopraRequest:
    """One HTTP call to Woopra's tracking API, with JSON-typed parameters.

    Not frozen: a frozen dataclass costs five times as much to build, once per event.
    """

    message_id: str | None
    endpoint: str
    params: dict[str, Any]
    method: str = "GET"
    # The original event, carried so that a failed send can dead-letter it (SPEC §9).
    event: Any = field(default=None, compare=False, repr=False)

    # Written out: the one dataclasses would write is interpreted, this one compiled.
    def __init__(
        self,
        message_id: str | None,
        endpoint: str,
        params: dict[str, Any],
        method: str = "GET",
        event: Any = None,
    ) -> None:
        self.message_id = message_id
        self.endpoint = endpoint
        self.params = params
        self.method = method
        self.event = event

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle's default makes an empty object first, which a compiled __init__ refuses.
        return WoopraRequest, (self.message_id, self.endpoint, self.params, self.method, self.event)

    def wire_params(self) -> dict[str, str]:
        return {key: wire_value(value) for key, value in self.params.items()}

    def url(self) -> str:
        return self.endpoint + "?" + urlencode(self.wire_params())

    def url_length(self) -> int:
        """len(self.url()), counted without building it."""
        params = self.params
        text = "".join(params) + "".join([wire_value(value) for value in params.values()])
        raw = text.encode("utf-8")
        escaped = len(raw.translate(None, _URL_SAFE_BYTES))
        return self._url_length_of(len(raw) + 2 * escaped)

    def url_length_bound(self) -> int:
        """At least len(self.url()), in half of url_length()'s time: the size check runs it on
        every event, and url_length() only near the limit.

        Every byte counts as escaped, so nothing is looked up per byte. `str` of a string, an
        integer or a boolean (`True` for `true`) has the wire text's length; floats, whose
        text is the dearest to make, each count the longest a float's wire text can be.
        """
        params = self.params
        texts = [str(value) for value in params.values() if type(value) is not float]
        floats = len(params) - len(texts)
        raw = ("".join(params) + "".join(texts)).encode("utf-8")
        return self._url_length_of(3 * len(raw) + floats * MAX_FLOAT_WIRE_CHARS)

    def _url_length_of(self, encoded_names_and_values: int) -> int:
        """The URL's length, given the encoded length of its parameter names and values."""
        separators = 2 * len(self.params) - 1  # one "=" per parameter, "&" between them
        return len(self.endpoint) + 1 + encoded_names_and_values + separators

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "endpoint": self.endpoint,
            "method": self.method,
            "params": self.params,
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())


@dataclass
class DeadLetter:
    """An input event that could not be delivered, and why (SPEC §9).

    Not frozen: a frozen class compiled by mypyc cannot be unpickled on a worker.
    """

    message_id: str | None
    stage: str
    reason: str
    detail: str
    event: Any = None
    status: int | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "status": self.status,
            "attempts": self.attempts,
            "event": self.event,
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())
