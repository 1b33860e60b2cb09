"""An event object as compact bytes and back, exactly: what the shuffle by device carries.

Beam's own coder walks a nested dict value by value, tagging each with its type, and builds
it again the same way; orjson writes and reads the same object as JSON text in a fraction of
that time and space. JSON text keeps every value an event can hold after ParseEvents (or
RowsToEvents): objects in key order, strings, finite floats (written in their shortest form
that reads back to the same float), integers, booleans and null. What orjson cannot write as
such (an integer beyond 64 bits, a string with an unpaired surrogate, any other type) travels
pickled instead; the leading byte says which.
"""

from __future__ import annotations

import pickle
from typing import Any

import orjson

_JSON = b"j"
_PICKLE = b"p"


def event_to_bytes(event: dict[str, Any]) -> bytes:
    """The event as bytes that `event_from_bytes` turns back into an equal object."""
    try:
        return _JSON + orjson.dumps(event)
    except (orjson.JSONEncodeError, TypeError):
        return _PICKLE + pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)


def event_from_bytes(data: bytes) -> dict[str, Any]:
    """The event that `event_to_bytes` wrote."""
    if data[:1] == _JSON:
        return orjson.loads(memoryview(data)[1:])
    return pickle.loads(memoryview(data)[1:])
