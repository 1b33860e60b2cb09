"""What the one shuffle by device groups: a device's events and small records of other kinds.

The batch GroupByKey by device brings together, per device, its PreparedEvents and what
earlier runs left about it (DeviceIdentity, SPEC §13) and what Woopra already accepted
(Delivered, the ledger's entries, SPEC §15), so that no side input has to hold
millions of devices. `DeviceRecord` is the type hint of those grouped values; its coder tags
each value with its kind in one byte and otherwise encodes it as a plain tuple. A new kind is
a NamedTuple added to RECORD_KINDS.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from transforms.identity_state import DeviceIdentity
from transforms.ledger import Delivered
from transforms.mapping import PreparedEvent

# Kinds besides PreparedEvent (tag 0); a kind's tag is its position here plus one. Appending a
# kind keeps the others' tags.
RECORD_KINDS: tuple[type, ...] = (DeviceIdentity, Delivered)


class DeviceRecord:
    """Type hint only: a PreparedEvent or one of RECORD_KINDS, grouped by device."""


class DeviceRecordCoder(beam.coders.Coder):
    """A kind tag byte, then the record's fields as a tuple (Beam's fast primitive coder)."""

    _FIELDS = beam.coders.FastPrimitivesCoder()

    def __init__(self) -> None:
        self._events = beam.coders.registry.get_coder(PreparedEvent)  # identity.py's
        self._tags = {kind: bytes((tag,)) for tag, kind in enumerate(RECORD_KINDS, start=1)}

    def encode(self, value: Any) -> bytes:
        if type(value) is PreparedEvent:
            return b"\x00" + self._events.encode(value)
        return self._tags[type(value)] + self._FIELDS.encode(tuple(value))

    def decode(self, encoded: bytes) -> Any:
        tag = encoded[0]
        if tag == 0:
            return self._events.decode(encoded[1:])
        return RECORD_KINDS[tag - 1](*self._FIELDS.decode(encoded[1:]))

    def is_deterministic(self) -> bool:
        return False


beam.coders.registry.register_coder(DeviceRecord, DeviceRecordCoder)


def split_by_kind(grouped: Iterable[Any]) -> tuple[list[PreparedEvent], dict[type, list[Any]]]:
    """A device's grouped values: its events, and its other records by kind."""
    events: list[PreparedEvent] = []
    others: dict[type, list[Any]] = {}
    for value in grouped:
        if type(value) is PreparedEvent:
            events.append(value)
        else:
            others.setdefault(type(value), []).append(value)
    return events, others
