"""What the one shuffle by device groups: a device's events and small records of other kinds.

The batch GroupByKey by device brings together, per device, its PreparedEvents and what
earlier runs left about it (DeviceIdentity, SPEC §13) and what Woopra already accepted
(Delivered, the ledger's entries, SPEC §15), so that no side input has to hold
millions of devices. `DeviceRecord` is the type hint of those grouped values; its coder tags
each value with its kind in one byte and otherwise encodes it as a plain tuple. A new kind is
a NamedTuple added to RECORD_KINDS.

The coder decodes lazily: a grouped value stays its bytes until `split_by_kind`, after the
GroupByKey, decodes it. The local runner decodes every value it
shuffles to hold it until the group is complete, and encodes it again to hand it on; held
as bytes, a value costs there a fraction of the memory of its objects and no work at all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from transforms.core.mapping import PreparedEvent
from transforms.delivery.ledger import Delivered
from transforms.identity_state import DeviceIdentity

# Kinds besides PreparedEvent (tag 0); a kind's tag is its position here plus one. Appending a
# kind keeps the others' tags.
RECORD_KINDS: tuple[type, ...] = (DeviceIdentity, Delivered)


class DeviceRecord:
    """Type hint only: a PreparedEvent or one of RECORD_KINDS, grouped by device."""


class DeviceRecordCoder(beam.coders.Coder):
    """A kind tag byte, then the record's fields as a tuple (Beam's fast primitive coder);
    `decode` leaves the bytes as they are (bytes, unlike objects, cost the garbage collector
    nothing), `decode_record` decodes them."""

    _FIELDS = beam.coders.FastPrimitivesCoder()

    def __init__(self) -> None:
        self._events = beam.coders.registry.get_coder(PreparedEvent)  # identity.py's
        self._tags = {kind: bytes((tag,)) for tag, kind in enumerate(RECORD_KINDS, start=1)}

    def encode(self, value: Any) -> bytes:
        if type(value) is bytes:  # as `decode` left it
            return value
        if type(value) is PreparedEvent:
            return b"\x00" + self._events.encode(value)
        return self._tags[type(value)] + self._FIELDS.encode(tuple(value))

    def decode(self, encoded: bytes) -> bytes:
        return encoded

    def decode_record(self, encoded: bytes) -> Any:
        """The PreparedEvent or record of RECORD_KINDS that `encode` wrote."""
        tag = encoded[0]
        if tag == 0:
            return self._events.decode(encoded[1:])
        return RECORD_KINDS[tag - 1](*self._FIELDS.decode(encoded[1:]))

    def is_deterministic(self) -> bool:
        return False


beam.coders.registry.register_coder(DeviceRecord, DeviceRecordCoder)


@functools.cache
def _coder() -> DeviceRecordCoder:
    return DeviceRecordCoder()  # made on first use, once identity.py registered its coder


def split_by_kind(grouped: Iterable[Any]) -> tuple[list[PreparedEvent], dict[type, list[Any]]]:
    """A device's grouped values (decoded here when they are still bytes): its events, and
    its other records by kind."""
    events: list[PreparedEvent] = []
    others: dict[type, list[Any]] = {}
    for value in grouped:
        if type(value) is bytes:
            value = _coder().decode_record(value)
        if type(value) is PreparedEvent:
            events.append(value)
        else:
            others.setdefault(type(value), []).append(value)
    return events, others
