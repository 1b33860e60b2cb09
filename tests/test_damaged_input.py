"""Damaged input is named, never silently lost, and fails the run (SPEC §9, §16)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import fastavro
import pytest

from pipeline.cli import main
from tests.helpers import read_json_lines, run_file_sink

GOOD_EVENTS = 10


def _event(n: int) -> dict:
    return {
        "type": "track",
        "event": "step",
        "anonymousId": f"dev-{n % 20}",
        "messageId": f"m{n}",
        "originalTimestamp": "2024-06-01T10:00:00Z",
    }


def _jsonl(count: int, start: int = 0) -> bytes:
    return b"".join(json.dumps(_event(n)).encode() + b"\n" for n in range(start, start + count))


def _input_dir(tmp_path: Path, damaged_name: str, damaged: bytes) -> Path:
    """A damaged file beside a good one."""
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    (input_dir / damaged_name).write_bytes(damaged)
    (input_dir / "good.jsonl").write_bytes(_jsonl(GOOD_EVENTS, start=10_000))
    return input_dir


def _truncated_gzip(data: bytes) -> bytes:
    compressed = gzip.compress(data)
    return compressed[: len(compressed) // 2]


def _corrupt_gzip(data: bytes) -> bytes:
    compressed = bytearray(gzip.compress(data))
    compressed[40:60] = bytes(20)
    return bytes(compressed)


def _read_before_damage(letter: dict) -> int:
    match = re.search(r"; (\d+) records read before the damage$", letter["detail"])
    assert match, letter["detail"]
    return int(match.group(1))


def _unreadable_letter(output: Path) -> dict:
    letters = [letter for lines in read_json_lines(output, "dead_letters") for letter in lines]
    damaged = [letter for letter in letters if letter["reason"] == "unreadable_file"]
    assert len(damaged) == 1
    return damaged[0]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("events.jsonl.gz", _truncated_gzip(_jsonl(300))),
        ("events.jsonl.gz", _corrupt_gzip(_jsonl(300))),
        ("events.json.gz", _truncated_gzip(json.dumps([_event(n) for n in range(300)]).encode())),
    ],
    ids=["truncated-jsonl-gz", "corrupt-jsonl-gz", "truncated-json-gz"],
)
def test_spec_9_damaged_compressed_file_keeps_what_was_read_and_names_the_damage(
    tmp_path, name, content
):
    input_dir = _input_dir(tmp_path, name, content)
    report = run_file_sink(str(input_dir / "*"), tmp_path / "out", "--project_name", "p")

    letter = _unreadable_letter(tmp_path / "out")
    assert (letter["stage"], letter["event"], letter["message_id"]) == ("read", None, None)
    assert letter["detail"].startswith(str(input_dir / name) + ": ")
    read = _read_before_damage(letter)
    assert read < 300
    # What was read went on (a line cut by the damage is not an event); the good file is whole.
    assert report["sent"] == read + GOOD_EVENTS
    assert report["damaged_files"] == [str(input_dir / name)]
    assert report["dead_letter_reasons"] == {"unreadable_file": 1}
    assert report["input"] == report["sent"] + 1
    assert report["balanced"]


def test_spec_9_truncated_gzip_of_300_events_is_not_silently_short(tmp_path):
    input_dir = _input_dir(tmp_path, "events.jsonl.gz", _truncated_gzip(_jsonl(300)))
    run_file_sink(str(input_dir / "*"), tmp_path / "out", "--project_name", "p")
    assert 0 < _read_before_damage(_unreadable_letter(tmp_path / "out")) < 300


def test_spec_9_truncated_avro_file_keeps_the_records_before_the_damage(tmp_path):
    schema = {
        "type": "record",
        "name": "Event",
        "fields": [{"name": key, "type": "string"} for key in ("type", "anonymousId", "messageId")],
    }
    avro = tmp_path / "whole.avro"
    with open(avro, "wb") as handle:
        records = [
            {"type": "track", "anonymousId": f"d{n}", "messageId": f"a{n}"} for n in range(5000)
        ]
        fastavro.writer(handle, schema, records, sync_interval=2000)
    data = avro.read_bytes()
    avro.unlink()
    input_dir = _input_dir(tmp_path, "events.avro", data[: len(data) * 2 // 3])
    report = run_file_sink(str(input_dir / "*"), tmp_path / "out", "--project_name", "p")
    read = _read_before_damage(_unreadable_letter(tmp_path / "out"))
    assert 0 < read < 5000
    assert report["sent"] == read + GOOD_EVENTS
    assert report["balanced"]


def test_spec_9_file_that_cannot_be_read_at_all_is_named_with_zero_records(tmp_path):
    input_dir = _input_dir(tmp_path, "placeholder", b"")
    (input_dir / "placeholder").unlink()
    (input_dir / "broken.jsonl").symlink_to("/proc/self/mem")  # every read fails with EIO
    report = run_file_sink(str(input_dir / "*"), tmp_path / "out", "--project_name", "p")
    letter = _unreadable_letter(tmp_path / "out")
    assert _read_before_damage(letter) == 0
    assert "OSError" in letter["detail"]
    assert report["sent"] == GOOD_EVENTS
    assert report["damaged_files"] == [str(input_dir / "broken.jsonl")]


def test_spec_16_damaged_input_exits_1_writes_the_report_and_leaves_no_temp_files(tmp_path, capsys):
    input_dir = _input_dir(tmp_path, "events.jsonl.gz", _corrupt_gzip(_jsonl(300)))
    output = tmp_path / "out"
    code = main(
        ["--input", str(input_dir / "*"), "--sink", "file", "--output", str(output),
         "--project_name", "p"]
    )  # fmt: skip
    assert code == 1
    errors = capsys.readouterr().err
    assert "could not be read to their end" in errors
    assert str(input_dir / "events.jsonl.gz") in errors
    report = json.loads((output / "report.json").read_text())
    assert report["damaged_files"] == [str(input_dir / "events.jsonl.gz")]
    assert not list(output.glob("beam-temp-*"))
    assert not list(tmp_path.glob("**/beam-temp-*"))


def test_spec_16_dead_letters_of_single_events_still_exit_0(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(_jsonl(5) + b"not json\n")
    code = main(
        ["--input", str(tmp_path / "events.jsonl"), "--sink", "file",
         "--output", str(tmp_path / "out"), "--project_name", "p"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["dead_letter_reasons"], report["damaged_files"]) == ({"invalid_json": 1}, [])


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("events.jsonl", BOM + _jsonl(3)),
        ("events.jsonl.gz", gzip.compress(BOM + _jsonl(3))),
        ("events.json", BOM + json.dumps([_event(n) for n in range(3)]).encode()),
        ("events.json", BOM + _jsonl(3)),
    ],
    ids=["jsonl", "jsonl-gz", "json-array", "json-lines-named-json"],
)
def test_spec_1_utf8_bom_at_the_start_of_a_file_loses_no_event(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    report = run_file_sink(str(tmp_path / name), tmp_path / "out", "--project_name", "p")
    assert (report["input"], report["sent"], report["dead_lettered"]) == (3, 3, 0)
    files = read_json_lines(tmp_path / "out", "requests")
    assert sorted(request["message_id"] for lines in files for request in lines) == [
        "m0",
        "m1",
        "m2",
    ]
