"""ReadEvents: raw event records from files or Pub/Sub, before any parsing."""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import json
import os
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.textio import ReadAllFromText

from pipeline.file_records import (
    UNREADABLE_TAG,
    CheckOpensFn,
    ReadRecordsFn,
    is_compressed,
    open_event_file,
    read_avro_records,
    read_avro_rows,
    read_json_lines,
    read_parquet_records,
)
from transforms.core.records import DEAD_LETTER_TAG, DeadLetter

JSONL, JSON, AVRO, PARQUET = "jsonl", "json", "avro", "parquet"
FORMATS = (JSONL, JSON, AVRO, PARQUET)
_EXTENSIONS = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".json": JSON,
    ".avro": AVRO,
    ".parquet": PARQUET,
}
_GLOB_CHARACTERS = re.compile(r"[*?\[\]]")


def format_of(file_path: str, input_format: str = "auto") -> str:
    """The file's format: as configured, else by its extension (a `.gz` is looked through)."""
    if input_format != "auto":
        return input_format
    name = file_path.lower().removesuffix(".gz")
    for extension, file_format in _EXTENSIONS.items():
        if name.endswith(extension):
            return file_format
    return JSONL


def read_json_file(file_path: str) -> Iterator[bytes]:
    """The events of a `.json` file, one record each.

    An array gives its elements (re-serialized compactly, non-ASCII kept, so their size is
    close to the original's); a first line that is a whole JSON object means JSON lines, as
    BigQuery and many tools write `.json` exports, which are then streamed line by line;
    anything else is one record. NaN and Infinity are let through here so that ParseEvents
    dead-letters exactly the element that has them; so is text that is not UTF-8.
    """
    with open_event_file(file_path) as handle:
        first = handle.readline()
        while first and first.isspace():
            first = handle.readline()
        if first.lstrip().startswith(b"[") or not _is_json_object(first):
            yield from _whole_document(first + handle.read())
            return
        yield first.rstrip(b"\r\n")
        for line in handle:
            yield line.rstrip(b"\r\n")


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        return False


def _whole_document(data: bytes) -> Iterator[bytes]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, list):
        for element in document:
            yield json.dumps(element, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "surrogatepass"
            )
    elif document is None:
        yield from data.splitlines()
    else:
        yield data


def _json_default(value: Any) -> Any:
    """Avro values that JSON lacks: bytes, dates and times, decimals, UUIDs."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def avro_record_to_json(record: dict[str, Any] | DeadLetter) -> bytes | DeadLetter:
    """An Avro (or Parquet) record as the JSON text of the event it holds (a damaged file's
    dead letter passes through)."""
    if isinstance(record, DeadLetter):
        return record
    return json.dumps(record, default=_json_default, separators=(",", ":")).encode("utf-8")


# The key of ReadEventFiles' main output, beside DEAD_LETTER_TAG.
RECORDS = "records"
# How each file is read: plain JSON lines by Beam's splittable reader, the rest whole.
_PLAIN_JSONL = len(FORMATS)  # a reader index past the formats' own (see _reader_index)


class ReadEventFiles(beam.PTransform):
    """Every record of the files matching a glob, as bytes, whatever their format.

    Plain JSON lines go through ReadAllFromText, so large files are split across workers;
    compressed, JSON and Avro files are read whole by one worker each. With `with_filename`,
    each record comes as (file path, record), and Avro and Parquet records stay dicts of
    their values (warehouse rows, SPEC §12); `avro_columns(path, names)` then names the columns
    of an Avro file to keep (None: all).

    Returns {RECORDS: the records, DEAD_LETTER_TAG: the `unreadable_file` dead letters of
    files that do not open, each counted as one input}. A file that breaks off later gives
    what it could, then its dead letter among the records (see pipeline/file_records.py).
    When the files are all read one way, as they usually are, the records are that reader's
    output as it is: a Flatten of several readers makes the local runner write every record
    out and read it back.
    """

    def __init__(
        self,
        file_pattern: str,
        input_format: str = "auto",
        with_filename: bool = False,
        avro_columns: Callable[[str, list[str]], Collection[str] | None] | None = None,
    ) -> None:
        super().__init__()
        self.file_pattern = file_pattern
        self.input_format = input_format
        self.with_filename = with_filename
        self.avro_columns = avro_columns

    def expand(self, pipeline):
        input_format = self.input_format
        checked = (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(self.file_pattern)
            | "FilePaths" >> beam.Map(lambda metadata: metadata.path)
            | "CheckOpens" >> beam.ParDo(CheckOpensFn()).with_outputs(UNREADABLE_TAG, main="paths")
        )
        readers = readers_matching(self.file_pattern, input_format)
        if len(readers) == 1:
            outputs = [self._read(checked.paths, readers[0])]
        else:
            by_reader = checked.paths | "ByFormat" >> beam.Partition(
                lambda file_path, _: _reader_index(file_path, input_format), len(FORMATS) + 1
            )
            outputs = [self._read(by_reader[reader], reader) for reader in readers]
        records = outputs[0] if len(outputs) == 1 else outputs | "AllRecords" >> beam.Flatten()
        return {RECORDS: records, DEAD_LETTER_TAG: checked[UNREADABLE_TAG]}

    def _read(self, paths, reader: int):
        """The records of the files of one reader (see _reader_index)."""
        if reader == _PLAIN_JSONL:
            return paths | "ReadJsonLines" >> ReadAllFromText(
                coder=coders.BytesCoder(), with_filename=self.with_filename
            )
        file_format = FORMATS[reader]
        label, read = _READ_LABELS[file_format], _FILE_READERS[file_format]
        if file_format == AVRO and self.with_filename and self.avro_columns is not None:
            read = functools.partial(read_avro_rows, columns=self.avro_columns)
        if self.with_filename:
            read = functools.partial(_records_with_path, read)
        records = paths | label >> beam.ParDo(ReadRecordsFn(read))
        if file_format in (AVRO, PARQUET) and not self.with_filename:
            return records | _TO_JSON_LABELS[file_format] >> beam.Map(avro_record_to_json)
        return records


# The whole-file reader of each format.
_FILE_READERS: dict[str, Callable[[str], Iterator[Any]]] = {
    JSONL: read_json_lines,
    JSON: read_json_file,
    AVRO: read_avro_records,
    PARQUET: read_parquet_records,
}
_READ_LABELS = {
    JSONL: "ReadCompressedJsonLines",
    JSON: "ReadJsonFiles",
    AVRO: "ReadAvro",
    PARQUET: "ReadParquet",
}
_TO_JSON_LABELS = {AVRO: "AvroToJson", PARQUET: "ParquetToJson"}


def _records_with_path(read: Callable[[str], Iterator[Any]], file_path: str) -> Iterator[Any]:
    for record in read(file_path):
        yield file_path, record


def readers_matching(file_pattern: str, input_format: str = "auto") -> list[int]:
    """The readers (see _reader_index) that the glob's files need.

    Told by the glob itself where its last part names them (`exports/*.jsonl`, or one
    file's path), else by the files a local glob matches now. A remote glob is not listed
    while the graph is built (Dataflow's Flatten of all the readers costs nothing), nor is
    a glob that matches nothing yet.
    """
    tail = _GLOB_CHARACTERS.split(file_pattern)[-1]
    if tail == file_pattern or _names_one_reader(tail, input_format):
        return [_reader_index(tail, input_format)]
    if FileSystems.get_scheme(file_pattern) is None:
        matched = FileSystems.match([file_pattern])[0].metadata_list
        found = {_reader_index(meta.path, input_format) for meta in matched}
        if found:
            return sorted(found)
    return list(range(len(FORMATS) + 1))


def _names_one_reader(tail: str, input_format: str) -> bool:
    """Whether every path ending with `tail` has the same reader: the format and whether it
    is compressed are both in its extensions."""
    name = tail.lower()
    if is_compressed(name):
        if input_format != "auto":
            return True
        name = os.path.splitext(name)[0]
    return name.endswith(tuple(_EXTENSIONS))


def _reader_index(file_path: str, input_format: str) -> int:
    """The reader of a file: compressed JSON lines are read whole like the other formats (at
    their format's index), plain JSON lines by Beam's splittable reader (_PLAIN_JSONL)."""
    file_format = format_of(file_path, input_format)
    if file_format == JSONL and not is_compressed(file_path):
        return _PLAIN_JSONL
    return FORMATS.index(file_format)


class ReadPubSubMessages(beam.PTransform):
    """Message payloads from a Pub/Sub subscription or topic (streaming)."""

    def __init__(self, subscription: str | None = None, topic: str | None = None) -> None:
        super().__init__()
        self.subscription = subscription
        self.topic = topic

    def expand(self, pipeline):
        return pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=self.subscription, topic=self.topic
        )
