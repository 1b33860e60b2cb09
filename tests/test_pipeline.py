"""The batch pipeline end to end on real files, with the dry-run sink (SPEC §1-§9)."""

from __future__ import annotations

import json
import random

import pytest

from tests.helpers import (
    SAMPLE_FLAGS,
    TESTDATA,
    load_json_lines,
    read_json_lines,
    requests_by_device,
    run_file_sink,
    write_lines,
)


def _expected_requests_by_device():
    expected = load_json_lines(TESTDATA / "expected_requests.jsonl")
    return requests_by_device([expected])


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("sample")
    report = run_file_sink(str(TESTDATA / "events.jsonl"), output, *SAMPLE_FLAGS)
    return output, report


def test_spec_8_sample_requests_match_golden_file_in_send_order_per_device(sample_run):
    output, _ = sample_run
    assert requests_by_device(read_json_lines(output, "requests")) == (
        _expected_requests_by_device()
    )


def test_spec_9_sample_dead_letters_match_golden_file(sample_run):
    output, _ = sample_run
    actual = [line for lines in read_json_lines(output, "dead_letters") for line in lines]
    expected = load_json_lines(TESTDATA / "expected_dead_letters.jsonl")

    def key(dead_letter):
        return json.dumps(dead_letter, sort_keys=True)

    assert sorted(actual, key=key) == sorted(expected, key=key)


def test_spec_10_sample_report_counts_add_up_to_input(sample_run):
    _, report = sample_run
    expected = json.loads((TESTDATA / "expected_report.json").read_text())
    assert {key: report[key] for key in expected} == expected
    lines = (TESTDATA / "events.jsonl").read_bytes().splitlines()
    non_blank_lines = sum(1 for line in lines if line.strip())
    assert report["input"] == non_blank_lines
    assert report["sent"] + report["filtered"] + report["dead_lettered"] == report["input"]
    assert report["balanced"]


def _device_events(device: int, count: int) -> list[dict]:
    """One device's events: identity only on the middle one, timestamps one minute apart."""
    events = []
    for n in range(count):
        event = {
            "type": "track",
            "event": f"step {n}",
            "anonymousId": f"anon-{device}",
            "messageId": f"d{device}-{n:02d}",
            "originalTimestamp": f"2024-05-01T10:{n:02d}:00Z",
        }
        if n == count // 2:
            event["userId"] = f"user-{device}"
            event["traits"] = {"email": f"user-{device}@example.com"}
        events.append(event)
    return events


def test_spec_4_stitching_and_order_hold_across_shuffled_input_in_many_files(tmp_path):
    devices, per_device = 40, 9
    events = [e for device in range(devices) for e in _device_events(device, per_device)]
    random.Random(3).shuffle(events)
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    for part in range(4):
        write_lines(input_dir / f"part-{part}.jsonl", [json.dumps(e) for e in events[part::4]])

    report = run_file_sink(str(input_dir / "*.jsonl"), tmp_path / "out", "--project_name", "p")

    assert report["sent"] == devices * per_device
    by_device = requests_by_device(read_json_lines(tmp_path / "out", "requests"))
    assert len(by_device) == devices
    for device in range(devices):
        requests = by_device[f"cookie:anon-{device}"]
        assert [r["message_id"] for r in requests] == [
            f"d{device}-{n:02d}" for n in range(per_device)
        ]
        assert {r["params"]["cv_id"] for r in requests} == {f"user-{device}"}
        assert {r["params"]["cv_email"] for r in requests} == {f"user-{device}@example.com"}


def test_spec_4_no_stitch_identity_leaves_events_as_they_came(tmp_path):
    write_lines(tmp_path / "in.jsonl", [json.dumps(e) for e in _device_events(1, 3)])
    run_file_sink(
        str(tmp_path / "in.jsonl"), tmp_path / "out", "--project_name", "p", "--no_stitch_identity"
    )
    (requests,) = requests_by_device(read_json_lines(tmp_path / "out", "requests")).values()
    assert ["cv_id" in r["params"] for r in requests] == [False, True, False]


def test_spec_4_events_without_timestamp_come_last_and_ties_break_by_message_id(tmp_path):
    events = [
        {"type": "track", "anonymousId": "a", "messageId": "c", "timestamp": 5},
        {"type": "track", "anonymousId": "a", "messageId": "z"},
        {"type": "track", "anonymousId": "a", "messageId": "b", "timestamp": 5},
        {"type": "track", "anonymousId": "a", "messageId": "a", "timestamp": 9},
        {"type": "track", "anonymousId": "a", "messageId": "y"},
    ]
    write_lines(tmp_path / "in.jsonl", [json.dumps(e) for e in events])
    run_file_sink(str(tmp_path / "in.jsonl"), tmp_path / "out", "--project_name", "p")
    (requests,) = requests_by_device(read_json_lines(tmp_path / "out", "requests")).values()
    assert [r["message_id"] for r in requests] == ["b", "c", "a", "y", "z"]


def test_spec_1_hostile_input_never_fails_the_run_and_every_line_is_accounted_for(tmp_path):
    good = json.dumps({"type": "track", "event": "ok", "anonymousId": "a", "messageId": "ok"})
    lines: list[str | bytes] = [
        good,
        b'{"type": "track", "anonymousId": "a", "event": "caf\xc3',  # cut mid-character
        b"\xff\xfe\x00\x00",  # not UTF-8
        b'{"type": "track", "anonymousId": "nul\x00inside"}',  # raw NUL: invalid JSON
        json.dumps({"type": "track", "anonymousId": "a", "event": "nul\u0000escaped"}),
        '{"type": "track", "anonymousId": "a", "properties": {"x": NaN}}',
        '{"type": "track", "anonymousId": "a", "properties": {"x": -Infinity}}',
        '{"type": "track", "anonymousId": "a", "properties": {"x": 1e400}}',
        '{"type": "track", "anonymousId": "a", "properties": {"x": "\\ud800"}}',
        "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        json.dumps({"type": "track", "anonymousId": "a", "properties": {"x": "y" * 2_000_000}}),
        "z" * 3_000_000,
        json.dumps({"type": 7, "anonymousId": ["a"], "userId": {"x": 1}, "traits": "t"}),
        json.dumps({"type": "page", "anonymousId": True, "userId": False, "context": []}),
        json.dumps({"type": "identify", "userId": 12.5, "context": {"externalId": "woopraId"}}),
        json.dumps({"type": "track", "anonymousId": "a", "originalTimestamp": {"t": 1}}),
        json.dumps({"type": "track", "anonymousId": "a", "originalTimestamp": True}),
        json.dumps({"type": "screen", "anonymousId": "a", "properties": {"": 1, "a": {}}}),
        '"just a string"',
        "12345",
        "null",
        "{}",
        "   ",
        "",
        '{"type": "track", "anonymousId": "a"}\r',
    ]
    path = write_lines(tmp_path / "hostile.jsonl", lines)
    report = run_file_sink(str(path), tmp_path / "out", "--project_name", "p")

    non_blank = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    assert report["input"] == len(non_blank)
    assert report["sent"] + report["filtered"] + report["dead_lettered"] == report["input"]
    reasons = report["dead_letter_reasons"]
    assert reasons["invalid_json"] == 9
    assert reasons["too_large"] == 2
    assert reasons["not_an_object"] == 3
    sent_ids = {
        r["message_id"] for lines_ in read_json_lines(tmp_path / "out", "requests") for r in lines_
    }
    assert "ok" in sent_ids
    dead_letters = [d for f in read_json_lines(tmp_path / "out", "dead_letters") for d in f]
    assert len(dead_letters) == report["dead_lettered"]
