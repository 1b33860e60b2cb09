"""The ledger on gs:// (SPEC §15), against a real GCS emulator (tests/gcs_emulator.py).

The lock goes through google-cloud-storage with generation preconditions, the ledger's files
through Beam's FileSystems (gcsio); both find the emulator as they would find GCS.
"""

from __future__ import annotations

import datetime
import json
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main
from pipeline.stub import WoopraStub
from tests.helpers import visitor_events, write_event_files
from tests.test_import import credentials, import_args, import_stub, report_of  # noqa: F401
from transforms.delivery.ledger import (
    Delivered,
    LedgerWriter,
    ReadLedgerKeys,
    read_keys,
    read_request_log,
)
from transforms.delivery.ledger_lock import LOCK_FILE, LedgerLock, LedgerLockedError


def _lock_blob(gcs_emulator, ledger: str):
    bucket, _, folder = ledger[len("gs://") :].partition("/")
    return gcs_emulator.client().bucket(bucket).get_blob(f"{folder}/{LOCK_FILE}")


def _lock_content(gcs_emulator, ledger: str) -> dict | None:
    blob = _lock_blob(gcs_emulator, ledger)
    return None if blob is None else json.loads(blob.download_as_bytes())


def _write_lock(gcs_emulator, ledger: str, heartbeat_age_seconds: float, owner: str = "x"):
    """A lock of another host's run, written unconditionally (as that run would have)."""
    beat = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=heartbeat_age_seconds
    )
    content = {"owner": owner, "host": "elsewhere", "pid": 1, "heartbeat": beat.isoformat()}
    bucket, _, folder = ledger[len("gs://") :].partition("/")
    blob = gcs_emulator.client().bucket(bucket).blob(f"{folder}/{LOCK_FILE}")
    blob.upload_from_string(json.dumps(content))
    return blob.generation


@pytest.fixture
def ledger(gcs_bucket) -> str:
    return f"{gcs_bucket}/ledger"


# The lock


def test_spec_15_gcs_a_second_holder_is_refused_until_the_first_releases(gcs_emulator, ledger):
    first = LedgerLock(ledger).acquire()
    assert _lock_content(gcs_emulator, ledger)["owner"] == first.owner
    with pytest.raises(LedgerLockedError, match="another run holds the ledger"):
        LedgerLock(ledger).acquire()
    assert _lock_content(gcs_emulator, ledger)["owner"] == first.owner  # not overwritten
    first.release()
    assert _lock_blob(gcs_emulator, ledger) is None
    second = LedgerLock(ledger).acquire()
    assert _lock_content(gcs_emulator, ledger)["owner"] == second.owner
    second.release()


def test_spec_15_gcs_a_run_is_refused_with_exit_2_while_another_holds_the_ledger(
    tmp_path, ledger, capsys
):
    glob = write_event_files(tmp_path / "in", visitor_events(1, 1, 1), files=1)
    with WoopraStub() as stub, LedgerLock(ledger):
        code = main(["--input", glob, "--ledger", ledger, "--woopra_base_url", stub.url,
                     "--output", str(tmp_path / "out")])  # fmt: skip
        assert stub.records == []
    assert code == 2
    assert f"another run holds the ledger {ledger}" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a bucket that does not exist", "a local path under a file"])
def test_spec_16_a_ledger_that_cannot_be_used_refuses_the_run_with_exit_2(
    where, tmp_path, request, capsys
):
    if where.startswith("a bucket"):
        request.getfixturevalue("gcs_bucket")  # the emulator, and the environment to reach it
        ledger = "gs://no-such-bucket-for-the-ledger/ledger"
    else:
        (tmp_path / "a-file").write_text("not a folder")
        ledger = str(tmp_path / "a-file" / "ledger")
    glob = write_event_files(tmp_path / "in", visitor_events(1, 1, 1), files=1)
    with WoopraStub() as stub:
        code = main(["--input", glob, "--ledger", ledger, "--woopra_base_url", stub.url,
                     "--output", str(tmp_path / "out")])  # fmt: skip
        assert stub.records == []
    assert code == 2
    err = capsys.readouterr().err
    assert f"the ledger {ledger} cannot be used" in err
    assert "Traceback" not in err


def test_spec_15_gcs_the_holder_rewrites_its_lock(gcs_emulator, ledger):
    lock = LedgerLock(ledger, heartbeat_seconds=0.05).acquire()
    try:
        created = _lock_blob(gcs_emulator, ledger).generation
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            blob = _lock_blob(gcs_emulator, ledger)
            if blob.generation != created:
                break
            time.sleep(0.02)
        assert blob.generation != created  # rewritten, conditionally on its own generation
        assert json.loads(blob.download_as_bytes())["owner"] == lock.owner
    finally:
        lock.release()


def test_spec_15_gcs_a_lock_older_than_ten_minutes_is_taken_over(gcs_emulator, ledger):
    _write_lock(gcs_emulator, ledger, heartbeat_age_seconds=601)
    lock = LedgerLock(ledger).acquire()
    assert _lock_content(gcs_emulator, ledger)["owner"] == lock.owner
    lock.release()
    assert _lock_blob(gcs_emulator, ledger) is None


def test_spec_15_gcs_a_fresh_lock_is_respected(gcs_emulator, ledger):
    generation = _write_lock(gcs_emulator, ledger, heartbeat_age_seconds=590)
    with pytest.raises(LedgerLockedError, match="host elsewhere"):
        LedgerLock(ledger).acquire()
    assert _lock_blob(gcs_emulator, ledger).generation == generation  # left as it was


def test_spec_15_gcs_of_two_runs_taking_over_one_stale_lock_only_one_wins(gcs_emulator, ledger):
    _write_lock(gcs_emulator, ledger, heartbeat_age_seconds=3600)
    first, second = LedgerLock(ledger), LedgerLock(ledger)
    # Both judge the same generation stale; the conditional writes let only one replace it.
    stale_first, stale_second = first._store.read(), second._store.read()
    assert first._store.take_over(stale_first, first.content())
    assert not second._store.take_over(stale_second, second.content())
    assert _lock_content(gcs_emulator, ledger)["owner"] == first.owner


def test_spec_15_gcs_a_lock_taken_over_is_neither_rewritten_nor_released_by_its_old_holder(
    gcs_emulator, ledger
):
    lock = LedgerLock(ledger, heartbeat_seconds=0.05).acquire()
    taken = _write_lock(gcs_emulator, ledger, heartbeat_age_seconds=0, owner="new-holder")
    time.sleep(0.5)  # several heartbeats: none may write over the new holder's lock
    assert _lock_blob(gcs_emulator, ledger).generation == taken
    lock.release()
    assert _lock_blob(gcs_emulator, ledger).generation == taken
    assert _lock_content(gcs_emulator, ledger)["owner"] == "new-holder"


def test_spec_15_gcs_the_heartbeat_goes_on_after_a_write_whose_answer_was_lost(
    gcs_emulator, ledger
):
    """The lock's generation changed under its own content (as when a rewrite reached GCS but
    its answer did not): the holder still keeps it fresh, and releases it."""
    lock = LedgerLock(ledger, heartbeat_seconds=0.05).acquire()
    blob = _lock_blob(gcs_emulator, ledger)
    blob.upload_from_string(blob.download_as_bytes())  # same content, a new generation
    changed = blob.generation
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _lock_blob(gcs_emulator, ledger).generation == changed:
        time.sleep(0.02)
    assert _lock_blob(gcs_emulator, ledger).generation != changed
    assert _lock_content(gcs_emulator, ledger)["owner"] == lock.owner
    lock.release()
    assert _lock_blob(gcs_emulator, ledger) is None


def test_spec_15_gcs_a_create_whose_answer_was_lost_still_takes_the_lock(gcs_emulator, ledger):
    """The client retries a create whose answer it did not get, and the retry's condition fails
    on the first attempt's success: the lock then holds this run's own owner."""
    lock = LedgerLock(ledger, heartbeat_seconds=0.05)
    bucket, _, folder = ledger[len("gs://") :].partition("/")
    blob = gcs_emulator.client().bucket(bucket).blob(f"{folder}/{LOCK_FILE}")
    blob.upload_from_string(lock.content(), if_generation_match=0)  # the lost first attempt
    lock.acquire()
    with pytest.raises(LedgerLockedError):
        LedgerLock(ledger).acquire()
    lock.release()
    assert _lock_blob(gcs_emulator, ledger) is None


# The ledger's files, through Beam's FileSystems


def test_spec_15_gcs_writer_and_readers_round_trip_keys_and_the_request_log(gcs_emulator, ledger):
    writer = LedgerWriter(ledger)
    writer.commit([("cookie:a", "m1"), ("cookie:a", "m2")])
    writer.commit([("cookie:b", "m1")], [{"project": "p", "ms": 5, "body": "digest-1"}])
    writer.commit(requests=[{"project": "p", "ms": 3, "body": None}])
    writer.close()
    assert read_keys(ledger) == {("cookie:a", "m1"), ("cookie:a", "m2"), ("cookie:b", "m1")}
    log = read_request_log(ledger)
    assert log.sent_ms == {"p": [3, 5]}
    assert log.accepted_bodies == frozenset({"digest-1"})
    with beam.Pipeline() as pipeline:
        keys = pipeline | ReadLedgerKeys(ledger)
        assert_that(
            keys,
            equal_to(
                [("cookie:a", Delivered("m1")), ("cookie:a", Delivered("m2")),
                 ("cookie:b", Delivered("m1"))]
            ),
        )  # fmt: skip
    assert gcs_emulator.token_requests > 0  # Beam's gcsio went the authenticated way


def test_spec_15_gcs_a_new_ledger_holds_nothing(gcs_bucket):
    ledger = f"{gcs_bucket}/never-written"
    assert read_keys(ledger) == set()
    assert read_request_log(ledger).sent_ms == {}
    with beam.Pipeline() as pipeline:
        assert_that(pipeline | ReadLedgerKeys(ledger), equal_to([]))


# End to end, against the loopback stub


def test_spec_15_gcs_a_second_tracking_run_with_the_same_ledger_sends_nothing(tmp_path, ledger):
    events = visitor_events(visitors=6, visits=1, per_visit=4)
    glob = write_event_files(tmp_path / "in", events, files=2)
    with WoopraStub() as stub:
        args = ["--input", glob, "--woopra_base_url", stub.url, "--ledger", ledger]
        assert main([*args, "--output", str(tmp_path / "out1")]) == 0
        assert len(stub.records) == len(events)
        assert main([*args, "--output", str(tmp_path / "out2")]) == 0
        assert len(stub.records) == len(events)
    expected_keys = {(f"cookie:{e['anonymousId']}", e["messageId"]) for e in events}
    assert read_keys(ledger) == expected_keys
    report = report_of(tmp_path / "out2")
    assert (report["sent"], report["filtered"]) == (0, len(events))
    assert report["filtered_reasons"] == {"already_delivered": len(events)}
    assert report["balanced"]


@pytest.mark.usefixtures("credentials")
def test_spec_15_gcs_a_second_import_with_the_same_ledger_sends_nothing(tmp_path, ledger):
    events = visitor_events(visitors=10, visits=2, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=2)
    with import_stub() as stub:
        args = ("--woopra_base_url", stub.url, "--ledger", ledger, "--import_batch_bytes", "900")
        assert main(import_args(glob, tmp_path / "out1", *args)) == 0
        bodies = len(stub.records)
        assert bodies > 1
        assert main(import_args(glob, tmp_path / "out2", *args)) == 0
        assert len(stub.records) == bodies
    assert {record["status"] for record in stub.records} == {200}
    assert len(read_keys(ledger)) == len(events)
    assert sum(len(times) for times in read_request_log(ledger).sent_ms.values()) == bodies
    first, second = report_of(tmp_path / "out1"), report_of(tmp_path / "out2")
    assert first["sent"] == len(events)
    assert second["sent"] == 0
    assert second["filtered_reasons"] == {"already_delivered": len(events)}
    plan = json.loads((tmp_path / "out2" / "plan.json").read_text())
    assert (plan["bodies"], plan["already_imported"]) == (0, len(events))


@pytest.mark.usefixtures("credentials")
def test_spec_14_15_gcs_a_deferred_import_carries_its_windows_over_in_the_ledger(
    gcs_emulator, tmp_path, ledger
):
    """Stopped by `--max_wait_seconds` (exit 3): the stop marker and the request times are in
    the gs:// ledger, and the next run, finding the window still full, sends nothing."""
    events = visitor_events(visitors=8, visits=1, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    flags = ("--import_batch_bytes", "500", "--import_limits", "2/60s",
             "--max_wait_seconds", "5", "--ledger", ledger)  # fmt: skip
    with import_stub(import_limits="2/60s") as stub:
        first = main(import_args(glob, tmp_path / "out1", "--woopra_base_url", stub.url, *flags))
        sent = list(stub.records)
        again = main(import_args(glob, tmp_path / "out2", "--woopra_base_url", stub.url, *flags))
        assert stub.records == sent
    assert (first, again) == (3, 3)
    assert [record["status"] for record in sent] == [200, 200]
    assert sum(len(times) for times in read_request_log(ledger).sent_ms.values()) == 2
    bucket, _, folder = ledger[len("gs://") :].partition("/")
    names = [blob.name for blob in gcs_emulator.client().list_blobs(bucket, prefix=folder)]
    assert len([name for name in names if name.startswith(f"{folder}/stop-")]) == 2
    report, report2 = report_of(tmp_path / "out1"), report_of(tmp_path / "out2")
    assert len(read_keys(ledger)) == report["sent"] > 0
    assert report["sent"] + report["deferred"] == len(events)
    assert report2["filtered_reasons"] == {"already_delivered": report["sent"]}
    assert (report2["sent"], report2["deferred"]) == (0, report["deferred"])
