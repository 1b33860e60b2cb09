"""Event files read to their end, or named with how far they got (SPEC §9 `unreadable_file`).

Beam's text source stops silently at a gzip stream that ends early and fails the whole run,
naming no file, on a corrupt one. Here a compressed, JSON or Avro file is read by one worker
with the standard library's decompressors, which raise on both; what was read before the
damage goes on, and the damage becomes one dead letter. Plain JSON-lines files stay with
Beam's splittable reader (a plain file cannot end early), after a check that they open.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
from collections.abc import Callable, Collection, Iterator
from typing import IO, Any

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.core.avro_rows import flat_record_decoder
from transforms.core.records import METRICS_NAMESPACE, STAGE_READ, UNREADABLE_FILE, DeadLetter
from transforms.parse import UTF8_BOM
from transforms.progress import ProgressCounter

# The report's list of damaged files is this string-set metric.
DAMAGED_FILES_METRIC = "damaged_files"
UNREADABLE_TAG = "unreadable"

_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, mode="rb"),
}


def is_compressed(file_path: str) -> bool:
    return CompressionTypes.detect_compression_type(file_path) != CompressionTypes.UNCOMPRESSED


@contextlib.contextmanager
def open_event_file(file_path: str) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed by its extension, without a leading UTF-8 BOM.

    gzip and bzip2 raise when the data ends early or is corrupt; other compressions go
    through Beam's own decompressors.
    """
    compression = CompressionTypes.detect_compression_type(file_path)
    decompress = _DECOMPRESSORS.get(compression)
    if decompress is None:
        handle = FileSystems.open(file_path, compression_type=compression)
    else:
        handle = decompress(
            FileSystems.open(file_path, compression_type=CompressionTypes.UNCOMPRESSED)
        )
    with handle:
        peek = getattr(handle, "peek", None)
        if peek is not None and peek(len(UTF8_BOM))[: len(UTF8_BOM)] == UTF8_BOM:
            handle.read(len(UTF8_BOM))
        yield handle


def read_json_lines(file_path: str) -> Iterator[bytes]:
    """The lines of a JSON-lines file, line ends removed."""
    with open_event_file(file_path) as handle:
        for line in handle:
            yield line.rstrip(b"\r\n")


def read_avro_records(file_path: str) -> Iterator[dict[str, Any]]:
    """The records of an Avro file (compressed inside, by its codec)."""
    with FileSystems.open(file_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield from fastavro.reader(handle)


def read_avro_rows(
    file_path: str, columns: Callable[[str, list[str]], Collection[str] | None]
) -> Iterator[dict[str, Any]]:
    """The rows of an Avro warehouse table, keeping the columns that `columns(path, names)`
    names (all of them when it gives None).

    Flat records (warehouse tables are) are read by transforms/core/avro_rows.py, several times
    faster than fastavro's general reader; fastavro still reads the file's header and blocks,
    and any other schema. A block that the fast decoder cannot read is read again by
    fastavro, so that the records before the damage and the error are fastavro's own.
    """
    with FileSystems.open(file_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        blocks = fastavro.block_reader(handle)
        schema = blocks.writer_schema
        kept, decoder = None, None
        if isinstance(schema, dict) and isinstance(schema.get("fields"), list):
            kept = columns(file_path, [field["name"] for field in schema["fields"]])
            decoder = flat_record_decoder(schema, None if kept is None else frozenset(kept))
        for block in blocks:
            if decoder is None:
                yield from block
                continue
            rows: list[dict[str, Any]] = []
            try:
                decoder.decode_block(block.bytes_.getvalue(), block.num_records, rows)
            except Exception:  # fastavro says what is wrong, below
                yield from rows
                yield from _refused_block(block, len(rows), kept)
                continue
            yield from rows


def _refused_block(block: Any, decoded: int, kept: Collection[str] | None) -> Iterator[Any]:
    """The records of a block the fast decoder refused, after its first `decoded`, as fastavro
    reads them (it raises where the block is damaged)."""
    data = io.BytesIO(block.bytes_.getvalue())
    for number in range(block.num_records):
        record = fastavro.schemaless_reader(data, block.writer_schema, None)
        if number >= decoded:
            yield record if kept is None else {k: v for k, v in record.items() if k in kept}


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


def read_parquet_records(file_path: str) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file as dicts of Python values, one row group at a time."""
    with FileSystems.open(file_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            columns = _microsecond_timestamps(parquet.read_row_group(group)).to_pydict()
            names = list(columns)
            for values in zip(*columns.values(), strict=True):
                yield dict(zip(names, values, strict=True))


def unreadable_file(file_path: str, error: BaseException, records_read: int) -> DeadLetter:
    """The dead letter of a file that could not be read to its end."""
    kind = type(error)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    cause = f"{name}: {error}".rstrip(": ")[:300]
    detail = f"{file_path}: {cause}; {records_read} records read before the damage"
    return DeadLetter(None, STAGE_READ, UNREADABLE_FILE, detail, event=None)


class ReadRecordsFn(beam.DoFn):
    """Each file's records from `read(path)`; a file that breaks off adds its dead letter.

    The dead letter travels among the records (ParseEvents passes it on and counts it as
    one input), so every reader, whatever its output, can report damage the same way.
    """

    def __init__(self, read: Callable[[str], Iterator[Any]]) -> None:
        self._read = read
        self._damaged_files = Metrics.string_set(METRICS_NAMESPACE, DAMAGED_FILES_METRIC)

    def process(self, file_path: str) -> Iterator[Any]:
        records_read = 0
        try:
            for record in self._read(file_path):
                records_read += 1
                yield record
        except Exception as error:  # any failure to read is this file's damage, not the run's
            self._damaged_files.add(file_path)
            yield unreadable_file(file_path, error, records_read)


class CheckOpensFn(beam.DoFn):
    """Passes on the files that open and give their first byte; the dead letters of the others
    leave under UNREADABLE_TAG, each counted as one input (nothing after counts them)."""

    def __init__(self) -> None:
        self._damaged_files = Metrics.string_set(METRICS_NAMESPACE, DAMAGED_FILES_METRIC)
        self._input = ProgressCounter("input")

    def process(self, file_path: str) -> Iterator[Any]:
        try:
            with FileSystems.open(
                file_path, compression_type=CompressionTypes.UNCOMPRESSED
            ) as handle:
                handle.read(1)
        except Exception as error:
            self._damaged_files.add(file_path)
            self._input.inc()
            yield beam.pvalue.TaggedOutput(UNREADABLE_TAG, unreadable_file(file_path, error, 0))
        else:
            yield file_path
