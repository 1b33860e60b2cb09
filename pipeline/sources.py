"""ReadEvents: raw event records from files or Pub/Sub, before any parsing."""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import json
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
from transforms.records import DeadLetter

JSONL, JSON, AVRO, PARQUET = "jsonl", "json", "avro", "parquet"
FORMATS = (JSONL, JSON, AVRO, PARQUET)
_EXTENSIONS = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".json": JSON,
    ".avro": AVRO,
    ".parquet": PARQUET,
}


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


class ReadEventFiles(beam.PTransform):
    """Every record of the files matching a glob, as bytes, whatever their format.

    Plain JSON lines go through ReadAllFromText, so large files are split across workers;
    compressed, JSON and Avro files are read whole by one worker each. A file that cannot be
    read to its end gives what it could, then its `unreadable_file` dead letter among the
    records (see pipeline/file_records.py). With `with_filename`, each record comes as
    (file path, record), and Avro and Parquet records stay dicts of their values (warehouse
    rows, SPEC §12); a damaged file's dead letter still comes alone. `avro_columns(path,
    names)`, with `with_filename`, names the columns of an Avro file to keep (None: all).
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
        paths = (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(self.file_pattern)
            | "FilePaths" >> beam.Map(lambda metadata: metadata.path)
        )
        if self.with_filename:
            return self._rows(paths)
        jsonl, json_files, avro, parquet, compressed_jsonl = paths | "ByFormat" >> beam.Partition(
            lambda file_path, _: _reader_index(file_path, input_format), len(FORMATS) + 1
        )
        plain_jsonl = jsonl | "CheckOpens" >> beam.ParDo(CheckOpensFn()).with_outputs(
            UNREADABLE_TAG, main="paths"
        )
        return (
            plain_jsonl.paths | "ReadJsonLines" >> ReadAllFromText(coder=coders.BytesCoder()),
            plain_jsonl[UNREADABLE_TAG],
            compressed_jsonl
            | "ReadCompressedJsonLines" >> beam.ParDo(ReadRecordsFn(read_json_lines)),
            json_files | "ReadJsonFiles" >> beam.ParDo(ReadRecordsFn(read_json_file)),
            avro
            | "ReadAvro" >> beam.ParDo(ReadRecordsFn(read_avro_records))
            | "AvroToJson" >> beam.Map(avro_record_to_json),
            parquet
            | "ReadParquet" >> beam.ParDo(ReadRecordsFn(read_parquet_records))
            | "ParquetToJson" >> beam.Map(avro_record_to_json),
        ) | "AllRecords" >> beam.Flatten()

    def _rows(self, paths):
        """(path, record) of every file; a single format of whole-file readers is read
        without a Flatten, which would make the runner encode each row between steps
        (costly for Avro and Parquet values)."""
        formats = formats_matching(self.file_pattern, self.input_format)
        readers = dict(_FILE_READERS)
        if self.avro_columns is not None:
            readers[AVRO] = functools.partial(read_avro_rows, columns=self.avro_columns)
        if len(formats) == 1 and formats[0] != JSONL:
            return _read_with_path(paths, formats[0], readers)
        input_format = self.input_format
        by_format = paths | "ByFormat" >> beam.Partition(
            lambda file_path, _: _reader_index(file_path, input_format), len(FORMATS) + 1
        )
        jsonl, compressed_jsonl = by_format[FORMATS.index(JSONL)], by_format[len(FORMATS)]
        plain_jsonl = jsonl | "CheckOpens" >> beam.ParDo(CheckOpensFn()).with_outputs(
            UNREADABLE_TAG, main="paths"
        )
        return (
            plain_jsonl.paths
            | "ReadJsonLines" >> ReadAllFromText(coder=coders.BytesCoder(), with_filename=True),
            plain_jsonl[UNREADABLE_TAG],
            _read_with_path(compressed_jsonl, JSONL, readers),
            *(
                _read_with_path(by_format[FORMATS.index(f)], f, readers)
                for f in (JSON, AVRO, PARQUET)
            ),
        ) | "AllRecords" >> beam.Flatten()


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


def _records_with_path(read: Callable[[str], Iterator[Any]], file_path: str) -> Iterator[Any]:
    for record in read(file_path):
        yield file_path, record


def _read_with_path(paths, file_format: str, readers: dict[str, Callable[[str], Iterator[Any]]]):
    read = functools.partial(_records_with_path, readers[file_format])
    return paths | _READ_LABELS[file_format] >> beam.ParDo(ReadRecordsFn(read))


def formats_matching(file_pattern: str, input_format: str = "auto") -> list[str]:
    """The formats of the files the glob matches now (all of them when it matches none)."""
    if input_format != "auto":
        return [input_format]
    matched = FileSystems.match([file_pattern])[0].metadata_list
    found = {format_of(meta.path) for meta in matched}
    return [file_format for file_format in FORMATS if file_format in found] or list(FORMATS)


def _reader_index(file_path: str, input_format: str) -> int:
    """The reader of a file: by format, and compressed JSON lines apart (read whole)."""
    file_format = format_of(file_path, input_format)
    if file_format == JSONL and is_compressed(file_path):
        return len(FORMATS)
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
