"""Reading event files of every supported format from real files (DESIGN.md "Interfaces")."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.options import LOCAL_BATCH_RUNNER
from pipeline.sources import RECORDS, ReadEventFiles, format_of, readers_matching
from tests.helpers import run_file_sink
from transforms.core.records import DEAD_LETTER_TAG

EVENTS = [
    {"type": "track", "event": "a", "anonymousId": "x", "messageId": "1"},
    {"type": "identify", "userId": "u", "anonymousId": "x", "messageId": "2"},
]


def _assert_reads_both_events(pattern: str) -> None:
    with beam.Pipeline(runner=LOCAL_BATCH_RUNNER) as pipeline:
        records = (pipeline | ReadEventFiles(pattern))[RECORDS]
        events = records | beam.Map(lambda record: json.loads(record)["messageId"])
        assert_that(events, equal_to(["1", "2"]))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("a.JSON", "json"),
        ("a.json.gz", "json"),
        ("a.avro", "avro"),
        ("a.snappy.parquet", "parquet"),
        ("a.txt", "jsonl"),
    ],
)
def test_format_follows_the_extension(name, expected):
    assert format_of(name) == expected


def test_configured_format_wins_over_the_extension():
    assert format_of("events.json", "jsonl") == "jsonl"


def _jsonl() -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in EVENTS)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("events.jsonl", _jsonl()),
        ("events.ndjson", _jsonl()),
        ("events.jsonl.gz", gzip.compress(_jsonl())),
        ("events.json", json.dumps(EVENTS).encode()),
        ("events.json.gz", gzip.compress(json.dumps(EVENTS).encode())),
        ("events.json", _jsonl()),  # BigQuery-style JSON lines named .json
    ],
)
def test_every_text_format_yields_each_event_once(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    _assert_reads_both_events(str(tmp_path / name))


def test_json_file_holding_one_object_is_one_event(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(EVENTS[0], indent=2))
    with beam.Pipeline(runner=LOCAL_BATCH_RUNNER) as pipeline:
        records = (pipeline | ReadEventFiles(str(tmp_path / "one.json")))[RECORDS]
        assert_that(records | beam.Map(lambda r: json.loads(r)["messageId"]), equal_to(["1"]))


def test_avro_records_are_read_as_events(tmp_path):
    schema = {
        "type": "record",
        "name": "Event",
        "fields": [
            {"name": "type", "type": "string"},
            {"name": "anonymousId", "type": "string"},
            {"name": "messageId", "type": "string"},
            {"name": "userId", "type": ["null", "string"], "default": None},
            {"name": "event", "type": ["null", "string"], "default": None},
        ],
    }
    with open(tmp_path / "events.avro", "wb") as handle:
        fastavro.writer(handle, schema, [{**e, "event": e.get("event")} for e in EVENTS])
    _assert_reads_both_events(str(tmp_path / "events.avro"))


def test_mixed_formats_in_one_glob_run_through_the_pipeline(tmp_path):
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    (input_dir / "a.jsonl").write_bytes(_jsonl())
    (input_dir / "b.json").write_text(json.dumps(EVENTS))
    (input_dir / "c.jsonl.gz").write_bytes(gzip.compress(_jsonl() + b"\n\nnot json\n"))
    report = run_file_sink(str(input_dir / "*"), tmp_path / "out", "--project_name", "p")
    assert report["input"] == 7
    # The three files hold the same two events: one of each is sent, the rest are duplicates.
    assert report["sent"] == 2
    assert report["filtered"] == 4
    assert report["dead_letter_reasons"] == {"invalid_json": 1}


def test_json_array_element_with_nan_is_dead_lettered_alone(tmp_path):
    (tmp_path / "a.json").write_text(
        '[{"type": "track", "anonymousId": "x", "properties": {"v": NaN}},'
        ' {"type": "track", "anonymousId": "y"}]'
    )
    report = run_file_sink(str(tmp_path / "a.json"), tmp_path / "out", "--project_name", "p")
    assert (report["input"], report["sent"]) == (2, 1)
    assert report["dead_letter_reasons"] == {"invalid_json": 1}


def test_spec_1_json_array_elements_keep_their_non_ascii_size(tmp_path):
    text = "日本語のテキスト" * 1200  # 28,800 bytes in UTF-8, 115,200 as \\u escapes
    event = {"type": "track", "anonymousId": "x", "properties": {"note": text}}
    (tmp_path / "a.json").write_text(json.dumps([event], ensure_ascii=False), encoding="utf-8")
    report = run_file_sink(str(tmp_path / "a.json"), tmp_path / "out", "--project_name", "p")
    assert report["dead_letter_reasons"] == {"request_too_large": 1}  # not too_large


def test_spec_1_json_file_that_is_not_utf8_is_invalid_json(tmp_path):
    (tmp_path / "a.json").write_bytes(json.dumps(EVENTS).encode("utf-16"))
    report = run_file_sink(str(tmp_path / "a.json"), tmp_path / "out", "--project_name", "p")
    assert report["sent"] == 0
    assert set(report["dead_letter_reasons"]) == {"invalid_json"}
    assert report["input"] == report["dead_lettered"]


def test_parquet_records_are_read_as_events(tmp_path):
    columns = {key: [event.get(key) for event in EVENTS] for key in ("type", "messageId")}
    columns["anonymousId"] = ["x", "x"]
    pq.write_table(pa.table(columns), tmp_path / "events.parquet")
    _assert_reads_both_events(str(tmp_path / "events.parquet"))


# The readers (pipeline.sources._reader_index): each format's index, plain JSON lines last.
COMPRESSED_JSONL, JSON_FILES, AVRO_FILES, PARQUET_FILES, PLAIN_JSONL = range(5)
ALL_READERS = list(range(5))


@pytest.mark.parametrize(
    ("pattern", "input_format", "readers"),
    [
        ("gs://bucket/exports/*.jsonl", "auto", [PLAIN_JSONL]),
        ("gs://bucket/exports/*.ndjson.gz", "auto", [COMPRESSED_JSONL]),
        ("gs://bucket/exports/tracks-*.avro", "auto", [AVRO_FILES]),
        ("gs://bucket/exports/part-[0-9]*.snappy.parquet", "auto", [PARQUET_FILES]),
        ("gs://bucket/exports/*.gz", "jsonl", [COMPRESSED_JSONL]),
        ("gs://bucket/exports/events.txt", "auto", [PLAIN_JSONL]),  # one file: its own reader
        ("gs://bucket/exports/*", "auto", ALL_READERS),  # remote: not listed
        ("gs://bucket/exports/*.gz", "auto", ALL_READERS),  # which format is gzipped?
        ("gs://bucket/exports/*.jsonl*", "auto", ALL_READERS),
    ],
)
def test_the_glob_names_the_readers_it_needs(pattern, input_format, readers):
    assert readers_matching(pattern, input_format) == readers


def test_a_local_glob_that_names_no_format_is_listed(tmp_path):
    assert readers_matching(str(tmp_path / "*")) == ALL_READERS  # nothing there yet
    (tmp_path / "a.jsonl").write_bytes(_jsonl())
    (tmp_path / "b.log").write_bytes(_jsonl())  # JSON lines by default
    assert readers_matching(str(tmp_path / "*")) == [PLAIN_JSONL]
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(_jsonl()))
    assert readers_matching(str(tmp_path / "*")) == [COMPRESSED_JSONL, PLAIN_JSONL]


def _read_steps(pattern: str) -> set[str]:
    with beam.Pipeline(runner=LOCAL_BATCH_RUNNER) as pipeline:
        _ = pipeline | "ReadEvents" >> ReadEventFiles(pattern)
        return {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}


def test_files_read_one_way_are_not_flattened(tmp_path):
    # A Flatten makes the local runner write every record out and read it back.
    (tmp_path / "a.jsonl").write_bytes(_jsonl())
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl()))
    assert "ReadEvents/AllRecords" not in _read_steps(str(tmp_path / "*.jsonl"))
    assert "ReadEvents/AllRecords" not in _read_steps(str(tmp_path / "*.gz"))
    assert "ReadEvents/AllRecords" in _read_steps(str(tmp_path / "*"))


def test_unreadable_plain_file_is_a_dead_letter_beside_the_records(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl())
    (tmp_path / "b.jsonl").symlink_to("/proc/self/mem")  # matched, and every read fails
    with beam.Pipeline(runner=LOCAL_BATCH_RUNNER) as pipeline:
        read = pipeline | ReadEventFiles(str(tmp_path / "*.jsonl"))
        ids = read[RECORDS] | beam.Map(lambda record: json.loads(record)["messageId"])
        assert_that(ids, equal_to(["1", "2"]), label="records")
        letters = read[DEAD_LETTER_TAG] | beam.Map(
            lambda letter: (letter.reason, letter.detail.split(":")[0])
        )
        assert_that(
            letters, equal_to([("unreadable_file", str(tmp_path / "b.jsonl"))]), label="letters"
        )
