"""ReadEvents: raw event records from files or Pub/Sub, before any parsing."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.avroio import ReadAllFromAvro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.io.textio import ReadAllFromText

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
    with FileSystems.open(file_path, compression_type=CompressionTypes.AUTO) as handle:
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


def avro_record_to_json(record: dict[str, Any]) -> bytes:
    """An Avro (or Parquet) record as the JSON text of the event it holds."""
    return json.dumps(record, default=_json_default, separators=(",", ":")).encode("utf-8")


def _microsecond_timestamps(table: pa.Table) -> pa.Table:
    """The table with nanosecond timestamps cut to microseconds, which Python's datetime holds
    (pyarrow refuses to make a datetime of a nanosecond value without pandas)."""
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
            target = pa.timestamp("us", tz=column.type.tz)
            table = table.set_column(
                index, column.name, table.column(index).cast(target, safe=False)
            )
    return table


def parquet_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of one Parquet row group, as dicts of Python values."""
    columns = _microsecond_timestamps(table).to_pydict()
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        yield dict(zip(names, values, strict=True))


class ReadEventFiles(beam.PTransform):
    """Every record of the files matching a glob, as bytes, whatever their format.

    JSON lines go through ReadAllFromText, so large files are split across workers. With
    `with_filename`, each record comes as (file path, record), and Avro and Parquet records
    stay dicts of their values (warehouse rows, SPEC §12).
    """

    def __init__(
        self, file_pattern: str, input_format: str = "auto", with_filename: bool = False
    ) -> None:
        super().__init__()
        self.file_pattern = file_pattern
        self.input_format = input_format
        self.with_filename = with_filename

    def expand(self, pipeline):
        paths = (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(self.file_pattern)
            | "FilePaths" >> beam.Map(lambda metadata: metadata.path)
        )
        readers = self._row_readers() if self.with_filename else self._record_readers()
        formats = formats_matching(self.file_pattern, self.input_format)
        # A single format is read without a Flatten, which would keep the reader from fusing
        # with the stages after it: the runner would encode and hold every record.
        if len(formats) == 1:
            return readers[formats[0]](paths)
        input_format = self.input_format
        by_format = paths | "ByFormat" >> beam.Partition(
            lambda file_path, _: formats.index(format_of(file_path, input_format)), len(formats)
        )
        return [
            readers[file_format](files)
            for file_format, files in zip(formats, by_format, strict=True)
        ] | "AllRecords" >> beam.Flatten()

    @staticmethod
    def _record_readers():
        """Each format's reader of records as bytes (Avro and Parquet records as JSON)."""
        return {
            JSONL: lambda files: (
                files | "ReadJsonLines" >> ReadAllFromText(coder=coders.BytesCoder())
            ),
            JSON: lambda files: files | "ReadJsonFiles" >> beam.FlatMap(read_json_file),
            AVRO: lambda files: (
                files
                | "ReadAvro" >> ReadAllFromAvro()
                | "AvroToJson" >> beam.Map(avro_record_to_json)
            ),
            PARQUET: lambda files: (
                files
                | "ReadParquet" >> ReadAllFromParquetBatched()
                | "ParquetToJson"
                >> beam.FlatMap(lambda table: map(avro_record_to_json, parquet_rows(table)))
            ),
        }

    @staticmethod
    def _row_readers():
        """Each format's reader of (path, record): Avro and Parquet records stay dicts (rows,
        costly to encode between steps, so better fused with what turns them into events)."""
        return {
            JSONL: lambda files: (
                files
                | "ReadJsonLines" >> ReadAllFromText(coder=coders.BytesCoder(), with_filename=True)
            ),
            JSON: lambda files: (
                files
                | "ReadJsonFiles"
                >> beam.FlatMap(lambda path: ((path, record) for record in read_json_file(path)))
            ),
            AVRO: lambda files: files | "ReadAvro" >> ReadAllFromAvro(with_filename=True),
            PARQUET: lambda files: (
                files
                | "ReadParquet" >> ReadAllFromParquetBatched(with_filename=True)
                | "ParquetRows"
                >> beam.FlatMapTuple(lambda path, table: ((path, r) for r in parquet_rows(table)))
            ),
        }


def formats_matching(file_pattern: str, input_format: str = "auto") -> list[str]:
    """The formats of the files the glob matches now (all of them when it matches none)."""
    if input_format != "auto":
        return [input_format]
    matched = FileSystems.match([file_pattern])[0].metadata_list
    found = {format_of(meta.path) for meta in matched}
    return [file_format for file_format in FORMATS if file_format in found] or list(FORMATS)


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
