"""Identities kept across scheduled batch runs with --identity_state (SPEC §13)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from pipeline.cli import main
from tests.helpers import read_json_lines, requests_by_device, run_file_sink, write_lines
from tests.warehouse_tables import write_avro
from transforms.identity_state import (
    COMPLETE_MARKER,
    DeviceIdentity,
    complete_generations,
    newest_generation_files,
)


def _track(device: str, n: int, day: int, **fields) -> dict:
    return {
        "type": "track",
        "event": f"step {n}",
        "anonymousId": device,
        "messageId": f"{device}-{n}",
        "originalTimestamp": f"2024-05-{day:02d}T10:{n:02d}:00Z",
        **fields,
    }


def _identify(device: str, n: int, day: int, user: str, email: str | None = None) -> dict:
    traits = {"email": email} if email else {}
    return {**_track(device, n, day, userId=user, traits=traits), "type": "identify"}


FIRST_HALF = [
    _identify("known-early", 0, 1, "u-early", "early@example.com"),  # identify in 1st half only
    _track("known-early", 1, 1),
    _identify("moves", 0, 2, "u-moves", "old@example.com"),
    _track("gone", 0, 1, userId="u-gone"),  # no event in the 2nd half: kept for the next run
    _track("nobody", 0, 2),
    {"type": "track", "userId": "u-cookieless", "messageId": "c-0", "timestamp": 5},
]
SECOND_HALF = [
    _track("known-early", 2, 10),
    _track("known-early", 3, 11),
    _track("late", 1, 10),
    _identify("late", 2, 10, "u-late"),  # anonymous then identified, both in this half
    _track("late", 3, 11),
    _track("moves", 1, 10),
    _identify("moves", 2, 11, "u-moves", "new@example.com"),
    _track("moves", 3, 12),
    _track("nobody", 1, 12),
    {"type": "track", "userId": "u-cookieless", "messageId": "c-1", "timestamp": 6},
]


def _run(tmp_path: Path, name: str, events: list[dict], *flags: str) -> tuple[int, Path]:
    path = write_lines(tmp_path / f"{name}.jsonl", [json.dumps(e) for e in events])
    output = tmp_path / f"out-{name}"
    argv = ["--input", str(path), "--sink", "file", "--output", str(output), "--project_name"]
    return main([*argv, "p", *flags]), output


def _requests(output: Path) -> dict[str, list[dict]]:
    return requests_by_device(read_json_lines(output, "requests"))


def _state(state_dir: Path) -> dict[str, DeviceIdentity]:
    records = []
    for path in newest_generation_files(str(state_dir)):
        records += [DeviceIdentity.from_json(line) for line in Path(path).read_text().splitlines()]
    return {record.cookie: record for record in records}


def test_spec_13_two_runs_over_two_halves_send_what_one_run_over_all_sends(tmp_path):
    state = ["--identity_state", str(tmp_path / "state")]
    code, whole = _run(tmp_path, "whole", FIRST_HALF + SECOND_HALF)
    assert code == 0
    assert _run(tmp_path, "first", FIRST_HALF, *state)[0] == 0
    code, second = _run(tmp_path, "second", SECOND_HALF, *state)
    assert code == 0

    in_two_runs = _requests(tmp_path / "out-first")
    for device, requests in _requests(second).items():
        in_two_runs.setdefault(device, []).extend(requests)
    assert in_two_runs == _requests(whole)
    known_early = _requests(second)["cookie:known-early"]
    assert {r["params"]["cv_id"] for r in known_early} == {"u-early"}
    assert {r["params"]["cv_email"] for r in known_early} == {"early@example.com"}

    remembered = _state(tmp_path / "state")
    assert set(remembered) == {"known-early", "late", "moves", "gone"}
    assert remembered["moves"].cv_email == "new@example.com"
    assert remembered["gone"].cv_id == "u-gone"
    newest = datetime.datetime(2024, 5, 11, 10, 3, tzinfo=datetime.timezone.utc)
    assert remembered["known-early"].last_event_ms == newest.timestamp() * 1000


def test_spec_13_devices_older_than_the_ttl_are_forgotten(tmp_path):
    state = ["--identity_state", str(tmp_path / "state"), "--identity_ttl", "5d"]
    _run(tmp_path, "first", FIRST_HALF, *state)
    _run(tmp_path, "second", SECOND_HALF, *state)
    # The second run's newest event is on the 12th: "gone" (last seen on the 1st) is dropped;
    # "known-early" (the 11th) is kept.
    assert set(_state(tmp_path / "state")) == {"known-early", "late", "moves"}


def test_spec_13_a_failed_run_leaves_the_state_the_next_run_uses_unchanged(tmp_path):
    state_dir = tmp_path / "state"
    state = ["--identity_state", str(state_dir)]
    _run(tmp_path, "first", FIRST_HALF, *state)
    (published,) = complete_generations(str(state_dir))
    before = _state(state_dir)

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    write_lines(damaged / "a.jsonl", [json.dumps(e) for e in SECOND_HALF])
    good = write_avro(damaged / "b.avro", [{"id": "x", "anonymous_id": "late"}])
    (damaged / "c.avro").write_bytes(good.read_bytes()[:-40])  # cut short: the read fails
    argv = ["--input", str(damaged / "*"), "--sink", "file", "--output", str(tmp_path / "o")]
    assert main([*argv, "--project_name", "p", *state]) == 1  # damaged input: not its job

    assert complete_generations(str(state_dir)) == [published]
    assert _state(state_dir) == before

    # The pipeline ran to its end, but its launcher died before publishing the generation.
    path = write_lines(tmp_path / "other.jsonl", [json.dumps(_identify("known-early", 9, 20, "x"))])
    run_file_sink(str(path), tmp_path / "o2", "--project_name", "p", *state)
    assert len(list(state_dir.iterdir())) == 3  # two unpublished generations beside the first
    assert complete_generations(str(state_dir)) == [published]
    assert _state(state_dir) == before

    code, second = _run(tmp_path, "second", SECOND_HALF, *state)
    assert code == 0
    assert {r["params"]["cv_id"] for r in _requests(second)["cookie:known-early"]} == {"u-early"}
    assert len(list(state_dir.iterdir())) == 2  # the unpublished ones are cleared away


def test_spec_13_the_two_newest_generations_are_kept(tmp_path):
    state_dir = tmp_path / "state"
    state = ["--identity_state", str(state_dir)]
    for n in range(3):
        assert _run(tmp_path, f"run{n}", FIRST_HALF, *state)[0] == 0
    generations = complete_generations(str(state_dir))
    assert len(generations) == 2
    assert sorted(p.name for p in state_dir.iterdir()) == sorted(Path(g).name for g in generations)
    assert all((Path(g) / COMPLETE_MARKER).exists() for g in generations)


def test_spec_13_identity_state_needs_stitching_and_a_batch_input(tmp_path):
    args = ["--sink", "file", "--project_name", "p", "--identity_state", str(tmp_path)]
    assert main(["--input", str(tmp_path / "x.jsonl"), *args, "--no_stitch_identity"]) == 2
    assert main(["--input_subscription", "projects/p/subscriptions/s", *args]) == 2
