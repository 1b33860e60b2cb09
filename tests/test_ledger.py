"""The ledger (SPEC §15): keys, group commit, compaction, the lock, the skip in the shuffle."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.core.mapping import MappingSettings, PreparedEvent, prepare_event
from transforms.delivery import ledger as ledger_module
from transforms.delivery.ledger import (
    Delivered,
    LedgerWriter,
    ReadLedgerKeys,
    compact,
    ledger_key,
    read_keys,
    read_request_log,
)
from transforms.delivery.ledger_lock import LedgerLock, LedgerLockedError
from transforms.identity import ResolveIdentity


def test_spec_15_key_is_the_message_id_else_a_hash_of_the_event_as_read():
    assert ledger_key("m-1", {"any": 1}) == "m-1"
    first = ledger_key(None, {"b": 1, "a": [1, 2]})
    assert first == ledger_key(None, {"a": [1, 2], "b": 1})  # key order does not matter
    assert first.startswith("sha256:")
    assert first != ledger_key(None, {"a": [1, 2], "b": 2})
    assert ledger_key(None, {"big": 10**30}).startswith("sha256:")


def test_spec_15_commit_returns_once_the_keys_are_on_disk(tmp_path):
    writer = LedgerWriter(str(tmp_path))
    writer.commit([("cookie:a", "m1"), ("cookie:a", "m2")])
    assert read_keys(str(tmp_path)) == {("cookie:a", "m1"), ("cookie:a", "m2")}
    writer.commit(requests=[{"project": "p", "ms": 5, "body": "digest"}])
    log = read_request_log(str(tmp_path))
    assert log.sent_ms == {"p": [5]}
    assert log.accepted_bodies == frozenset({"digest"})
    writer.close()


def test_spec_15_concurrent_commits_are_grouped_and_all_durable(tmp_path):
    writer = LedgerWriter(str(tmp_path), interval_seconds=0.05)
    threads = [threading.Thread(target=writer.commit, args=([("d", f"m{n}")],)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert read_keys(str(tmp_path)) == {("d", f"m{n}") for n in range(40)}
    files = os.listdir(tmp_path / "keys")
    assert len(files) < 40  # grouped
    assert not [name for name in files if not name.endswith(".jsonl")]  # no temporary left


def test_spec_15_a_failed_write_fails_the_commit(tmp_path):
    (tmp_path / "keys").write_text("a file where the folder should be")
    writer = LedgerWriter(str(tmp_path))
    with pytest.raises(OSError, match="ledger"):
        writer.commit([("d", "m")])
    writer.close()


def test_spec_15_compaction_folds_files_and_drops_old_request_times(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "COMPACT_MIN_FILES", 3)
    writer = LedgerWriter(str(tmp_path), interval_seconds=0)
    for n in range(5):
        writer.commit([("d", f"m{n}")], [{"project": "p", "ms": 1000 * n, "body": None}])
    writer.close()
    compact(str(tmp_path), keep_requests_seconds=2, now_ms=5000)
    assert len(os.listdir(tmp_path / "keys")) == 1
    assert len(os.listdir(tmp_path / "requests")) == 1
    assert read_keys(str(tmp_path)) == {("d", f"m{n}") for n in range(5)}
    assert read_request_log(str(tmp_path)).sent_ms == {"p": [3000, 4000]}


def test_spec_15_ledger_keys_join_the_shuffle_and_delivered_events_are_left_out(tmp_path):
    settings = MappingSettings(project_name="p")
    raw = [
        {"type": "identify", "anonymousId": "a", "messageId": "m1", "userId": "u1",
         "originalTimestamp": 1},
        {"type": "track", "event": "x", "anonymousId": "a", "messageId": "m2",
         "originalTimestamp": 2},
        {"type": "track", "event": "y", "anonymousId": "a", "originalTimestamp": 3},
        {"type": "track", "event": "z", "anonymousId": "b", "messageId": "m1",
         "originalTimestamp": 1},
    ]  # fmt: skip
    events = [prepare_event(event, settings) for event in raw]
    writer = LedgerWriter(str(tmp_path))
    writer.commit([("cookie:a", "m1"), ("cookie:a", ledger_key(None, raw[2]))])
    writer.close()

    def summary(element):
        device, kept = element
        return device, [(e.message_id, e.cv_id) for e in kept]

    with beam.Pipeline() as pipeline:
        resolve = ResolveIdentity(ledger_keys=pipeline | "Ledger" >> ReadLedgerKeys(str(tmp_path)))
        devices = pipeline | beam.Create(events) | resolve
        # m2 keeps the identity the delivered identify m1 gave it: stitching saw every event
        assert_that(
            devices | beam.Map(summary),
            equal_to([("cookie:a", [("m2", "u1")]), ("cookie:b", [("m1", None)])]),
        )
        assert_that(
            resolve.already_delivered | beam.CombineGlobally(sum),
            equal_to([2]),
            label="Skipped",
        )
    assert isinstance(events[0], PreparedEvent)


def test_spec_15_an_empty_ledger_reads_no_keys(tmp_path):
    with beam.Pipeline() as pipeline:
        keys = pipeline | ReadLedgerKeys(str(tmp_path / "new"))
        assert_that(keys, equal_to([]))


def test_delivered_entries_survive_the_shuffle_coder():
    from transforms.device_records import DeviceRecordCoder

    coder = DeviceRecordCoder()
    event = prepare_event(
        {"type": "track", "event": "x", "anonymousId": "a", "messageId": "m"},
        MappingSettings(project_name="p"),
    )
    assert coder.decode_record(coder.encode(Delivered("k"))) == Delivered("k")
    assert coder.decode_record(coder.encode(event)) == event


# The lock


def test_spec_15_a_second_run_is_refused_while_the_lock_is_held(tmp_path):
    first = LedgerLock(str(tmp_path)).acquire()
    with pytest.raises(LedgerLockedError, match="another run holds the ledger"):
        LedgerLock(str(tmp_path)).acquire()
    first.release()
    LedgerLock(str(tmp_path)).acquire().release()
    assert not (tmp_path / "lock").exists()


def _write_lock(path, **content):
    base = {"owner": "x", "host": "elsewhere", "pid": 1, "heartbeat": _ago(0)}
    path.write_text(json.dumps({**base, **content}))


def _ago(seconds: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (now - datetime.timedelta(seconds=seconds)).isoformat()


def test_spec_15_a_lock_older_than_ten_minutes_is_taken_over(tmp_path):
    _write_lock(tmp_path / "lock", heartbeat=_ago(601))
    lock = LedgerLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / "lock").read_text())["owner"] == lock.owner
    lock.release()


def test_spec_15_a_fresh_lock_of_another_host_is_respected(tmp_path):
    _write_lock(tmp_path / "lock", heartbeat=_ago(590))
    with pytest.raises(LedgerLockedError):
        LedgerLock(str(tmp_path)).acquire()


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over(tmp_path):
    import socket

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    _write_lock(tmp_path / "lock", host=socket.gethostname(), pid=int(ended.stdout))
    LedgerLock(str(tmp_path)).acquire().release()
    _write_lock(tmp_path / "lock", host=socket.gethostname(), pid=os.getpid())
    with pytest.raises(LedgerLockedError):
        LedgerLock(str(tmp_path)).acquire()


def test_spec_15_the_holder_rewrites_its_time(tmp_path):
    lock = LedgerLock(str(tmp_path), heartbeat_seconds=0.05).acquire()
    first = json.loads((tmp_path / "lock").read_text())
    first["heartbeat"] = _ago(3600)
    (tmp_path / "lock").write_text(json.dumps(first))
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=5)
    while datetime.datetime.now() < deadline:
        current = json.loads((tmp_path / "lock").read_text())
        if current["heartbeat"] != first["heartbeat"]:
            break
    lock.release()
    assert current["owner"] == lock.owner
    assert current["heartbeat"] != first["heartbeat"]


# Compaction around a run (pipeline/cli.py hold_ledger)


def _ledger_with_an_unreadable_file(ledger_dir) -> None:
    """As many request files as start a compaction, one of them damaged: reading it fails."""
    requests = ledger_dir / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    for n in range(ledger_module.COMPACT_MIN_FILES - 1):
        (requests / f"{n:03d}.jsonl").write_text('{"project": "p", "ms": 1}\n')
    (requests / "999.jsonl").write_text('{"project": "p", "ms"\n')


def test_spec_16_a_ledger_that_cannot_be_compacted_at_the_start_is_one_line_and_exit_2(tmp_path):
    ledger_dir = tmp_path / "ledger"
    _ledger_with_an_unreadable_file(ledger_dir)
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "track", "event": "e", "anonymousId": "a", "messageId": "m"}\n')
    command = [sys.executable, "-m", "pipeline", "--input", str(events), "--ledger",
               str(ledger_dir), "--project_name", "p.example", "--woopra_base_url",
               "http://127.0.0.1:9", "--output", str(tmp_path / "out")]  # fmt: skip
    for _ in range(2):  # the lock was released: the second run meets the same error
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 2, completed.stderr
        assert "could not be compacted before the run (JSONDecodeError" in completed.stderr
        assert "Traceback" not in completed.stderr
    assert not (ledger_dir / "lock").exists()
    assert len(list((ledger_dir / "requests").iterdir())) == ledger_module.COMPACT_MIN_FILES


def test_a_compaction_failing_after_the_run_is_a_warning_and_releases_the_lock(tmp_path, caplog):
    from pipeline.cli import hold_ledger
    from pipeline.options import WoopraOptions

    ledger_dir = tmp_path / "ledger"
    options = WoopraOptions(["--input", "x", "--ledger", str(ledger_dir), "--project_name", "p"])
    with caplog.at_level("WARNING", logger="woopra"), hold_ledger(options):
        assert (ledger_dir / "lock").exists()
        _ledger_with_an_unreadable_file(ledger_dir)
    assert "was not compacted after the run (JSONDecodeError" in caplog.text
    assert not (ledger_dir / "lock").exists()
