"""Flat Avro records decoded from a block's bytes, only the columns asked for (SPEC §12 rows).

Warehouse exports are flat records: every column a primitive, or a primitive or null, some
timestamps. fastavro's general reader looks up each value's type in the schema as it goes,
which for rows of 50 columns costs about twice what parsing the same event from JSON does.
The decoder here reads such records with a plan made once per file (compiled, about five
times faster), and leaves out of each row the columns that are not asked for. The values
are fastavro's own (same types, same timestamps); a schema with any other type gets no
decoder, and any failure to decode is left to fastavro to report (pipeline/file_records.py).
"""

from __future__ import annotations

import datetime
import struct
from typing import Any, Final

# The kind of a column's value (or of one branch of its union).
NULL: Final = 0
BOOLEAN: Final = 1
LONG: Final = 2  # Avro's int and long alike
FLOAT: Final = 3
DOUBLE: Final = 4
BYTES: Final = 5
STRING: Final = 6
TIMESTAMP_MILLIS: Final = 7
TIMESTAMP_MICROS: Final = 8
LOCAL_TIMESTAMP_MILLIS: Final = 9
LOCAL_TIMESTAMP_MICROS: Final = 10

_PRIMITIVES: Final = {
    "null": NULL,
    "boolean": BOOLEAN,
    "int": LONG,
    "long": LONG,
    "float": FLOAT,
    "double": DOUBLE,
    "bytes": BYTES,
    "string": STRING,
}
_TIMESTAMPS: Final = {
    "timestamp-millis": TIMESTAMP_MILLIS,
    "timestamp-micros": TIMESTAMP_MICROS,
    "local-timestamp-millis": LOCAL_TIMESTAMP_MILLIS,
    "local-timestamp-micros": LOCAL_TIMESTAMP_MICROS,
}
# fastavro's timestamps: the epoch plus a timedelta (datetime.fromtimestamp differs at the edges).
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_EPOCH_NAIVE: Final = datetime.datetime(1970, 1, 1)
# A varint of a 64-bit long takes at most 10 bytes.
_MAX_VARINT_BYTES: Final = 10
_FLOAT: Final = struct.Struct("<f")
_DOUBLE: Final = struct.Struct("<d")


class NotDecodedError(Exception):
    """The bytes are not records of this schema (ended early, or a value out of range)."""


def _kind(schema: Any) -> int:
    """The kind of a (non-union) type, or -1 when this decoder does not read it."""
    if isinstance(schema, str):
        return _PRIMITIVES.get(schema, -1)
    if not isinstance(schema, dict):
        return -1
    base = schema.get("type")
    if not isinstance(base, str) or base not in _PRIMITIVES:
        return -1
    logical = schema.get("logicalType")
    if logical is None:
        return _PRIMITIVES[base]
    if base == "long" and isinstance(logical, str) and logical in _TIMESTAMPS:
        return _TIMESTAMPS[logical]
    return -1  # other logical types (dates, decimals, UUIDs, ...) are fastavro's to read


def _branches(schema: Any) -> list[int] | None:
    """The kinds of a column's type: one, or each branch of its union; None if not flat."""
    types = schema if isinstance(schema, list) else [schema]
    kinds = [_kind(branch) for branch in types]
    return None if not kinds or -1 in kinds else kinds


def flat_record_decoder(
    writer_schema: Any, columns: frozenset[str] | None
) -> FlatRecordDecoder | None:
    """A decoder of the schema's records keeping `columns` (all when None), or None when the
    schema is not a record of flat columns."""
    if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
        return None
    fields = writer_schema.get("fields")
    if not isinstance(fields, list):
        return None
    names: list[str] = []
    branches: list[list[int]] = []
    keep: list[bool] = []
    for field in fields:
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            return None
        kinds = _branches(field.get("type"))
        if kinds is None:
            return None
        name: str = field["name"]
        names.append(name)
        branches.append(kinds)
        keep.append(columns is None or name in columns)
    return FlatRecordDecoder(names, branches, keep)


class FlatRecordDecoder:
    """Reads a block's records into dicts of the kept columns (null ones included)."""

    def __init__(self, names: list[str], branches: list[list[int]], keep: list[bool]) -> None:
        self.names = names
        self.branches = branches
        self.keep = keep
        self.pos = 0

    def decode_block(self, data: bytes, count: int, rows: list[dict[str, Any]]) -> None:
        """Appends the block's `count` records to `rows`; raises NotDecodedError (or the
        error of a value, e.g. text that is not UTF-8) at the first that cannot be read,
        the records before it appended."""
        self.pos = 0
        columns = len(self.names)
        for _ in range(count):
            row: dict[str, Any] = {}
            for index in range(columns):
                kinds = self.branches[index]
                if len(kinds) == 1:
                    kind = kinds[0]
                else:
                    branch = self._long(data)
                    if branch < 0 or branch >= len(kinds):
                        raise NotDecodedError(f"union index {branch} out of range")
                    kind = kinds[branch]
                if self.keep[index]:
                    row[self.names[index]] = self._value(data, kind)
                else:
                    self._skip(data, kind)
            rows.append(row)

    def _long(self, data: bytes) -> int:
        """A zig-zag varint."""
        pos = self.pos
        end = len(data)
        if pos >= end:
            raise NotDecodedError("the block ended early")
        byte = data[pos]
        pos += 1
        value = byte & 0x7F
        shift = 7
        while byte & 0x80:
            if pos >= end or shift >= 7 * _MAX_VARINT_BYTES:
                raise NotDecodedError("a long runs past the block or 64 bits")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
        self.pos = pos
        return (value >> 1) ^ -(value & 1)

    def _span(self, data: bytes, size: int) -> int:
        """Moves past `size` bytes; where they start."""
        start = self.pos
        if size < 0 or start + size > len(data):
            raise NotDecodedError("a value runs past the block")
        self.pos = start + size
        return start

    def _value(self, data: bytes, kind: int) -> Any:
        if kind == STRING:
            size = self._long(data)
            start = self._span(data, size)
            return data[start : start + size].decode("utf-8")
        if kind == NULL:
            return None
        if kind == LONG:
            return self._long(data)
        if kind == TIMESTAMP_MICROS:
            return _EPOCH + datetime.timedelta(microseconds=self._long(data))
        if kind == DOUBLE:
            return _DOUBLE.unpack_from(data, self._span(data, 8))[0]
        if kind == BOOLEAN:
            return data[self._span(data, 1)] != 0
        if kind == BYTES:
            size = self._long(data)
            start = self._span(data, size)
            return data[start : start + size]
        if kind == FLOAT:
            return _FLOAT.unpack_from(data, self._span(data, 4))[0]
        if kind == TIMESTAMP_MILLIS:
            return _EPOCH + datetime.timedelta(microseconds=self._long(data) * 1000)
        if kind == LOCAL_TIMESTAMP_MICROS:
            return _EPOCH_NAIVE + datetime.timedelta(microseconds=self._long(data))
        return _EPOCH_NAIVE + datetime.timedelta(microseconds=self._long(data) * 1000)

    def _skip(self, data: bytes, kind: int) -> None:
        """Moves past a value not asked for. Text is still decoded and timestamps still made,
        so that a file fastavro refuses (bad UTF-8, a date beyond year 9999) is refused."""
        if kind == STRING or kind >= TIMESTAMP_MILLIS:
            self._value(data, kind)
        elif kind == BYTES:
            self._span(data, self._long(data))
        elif kind == DOUBLE:
            self._span(data, 8)
        elif kind == FLOAT:
            self._span(data, 4)
        elif kind == BOOLEAN:
            self._span(data, 1)
        elif kind == LONG:
            self._long(data)
