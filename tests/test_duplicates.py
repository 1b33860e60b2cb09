"""One event per (device, messageId) in batch runs, decided before stitching (SPEC §13)."""

from __future__ import annotations

import json

from tests.helpers import read_json_lines, requests_by_device, run_file_sink, write_lines
from transforms.core.duplicates import drop_duplicates, leaf_count
from transforms.core.mapping import MappingSettings, PreparedEvent, prepare_event

SETTINGS = MappingSettings(project_name="p")


def _prepared(**fields) -> PreparedEvent:
    event = {"type": "track", "anonymousId": "a", "messageId": "m", **fields}
    prepared = prepare_event(event, SETTINGS)
    assert isinstance(prepared, PreparedEvent)
    return prepared


def test_spec_13_leaves_are_what_section_7_makes_parameters():
    assert leaf_count({}) == 0
    assert (
        leaf_count({"a": 1, "b": None, "": 2, "c": {}, "d": [], "e": {"f": {"g": 1, "": 3}}}) == 4
    )


def test_spec_13_the_richest_copy_wins():
    poor = _prepared(properties={"a": 1}, traits={"t": 1}, timestamp=1)
    rich = _prepared(properties={"a": 1, "b": {"c": 2, "d": 3}}, timestamp=2)
    kept, dropped = drop_duplicates([poor, rich])
    assert (kept, dropped) == ([rich], 1)


def test_spec_13_then_the_earliest_in_send_order_then_the_sorted_json_that_sorts_first():
    late = _prepared(properties={"a": 1}, timestamp=9)
    early = _prepared(properties={"b": 1}, timestamp=5)
    assert drop_duplicates([late, early])[0] == [early]
    b = _prepared(properties={"b": 1}, timestamp=5)
    a = _prepared(properties={"a": 1}, timestamp=5)
    assert drop_duplicates([b, a])[0] == [a]
    assert drop_duplicates([a, b])[0] == [a]
    untimed = _prepared(properties={"a": 1})
    assert drop_duplicates([untimed, late])[0] == [late]


def test_spec_13_events_without_a_message_id_are_never_duplicates():
    events = [_prepared(messageId=None), _prepared(messageId=None), _prepared()]
    assert drop_duplicates(events) == (events, 0)


def test_spec_13_a_dropped_copy_takes_no_part_in_stitching(tmp_path):
    events = [
        {"type": "track", "anonymousId": "a", "messageId": "m", "timestamp": 1,
         "properties": {"x": 1, "y": 2}},
        {"type": "track", "anonymousId": "a", "messageId": "m", "timestamp": 1,
         "userId": "only-on-the-copy"},
        {"type": "track", "anonymousId": "a", "messageId": "n", "timestamp": 2},
        {"type": "track", "anonymousId": "b", "messageId": "m", "timestamp": 3},
    ]  # fmt: skip
    write_lines(tmp_path / "in.jsonl", [json.dumps(e) for e in events])
    report = run_file_sink(str(tmp_path / "in.jsonl"), tmp_path / "out", "--project_name", "p")
    assert (report["sent"], report["filtered"]) == (3, 1)
    assert report["filtered_reasons"] == {"duplicate": 1}
    devices = requests_by_device(read_json_lines(tmp_path / "out", "requests"))
    assert [r["params"].get("cv_id") for r in devices["cookie:a"]] == [None, None]
    assert devices["cookie:a"][0]["params"]["ce_y"] == 2
    assert len(devices["cookie:b"]) == 1  # the same messageId on another device is its own
