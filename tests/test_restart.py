"""Runs as a scheduler starts them (subprocesses): the Import acceptance run, and runs killed with
SIGKILL halfway and started again with the same ledger, for both sinks (SPEC §14, §15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.stub import WoopraStub
from tests.helpers import visitor_events, write_event_files
from tests.test_import import (
    APP_ID,
    SECRET,
    accepted_lines,
    import_stub,
    message_ids_of,
    windows_held,
)

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WOOPRA_APP_ID": APP_ID, "WOOPRA_SECRET_KEY": SECRET}

pytestmark = pytest.mark.slow


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILLs the run (its whole process group) once `ready()` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never got halfway"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_spec_14_acceptance_20000_events_of_1000_visitors_paced_and_planned(tmp_path):
    events = visitor_events(visitors=1000, visits=4, per_visit=5)
    glob = write_event_files(tmp_path / "in", events, files=4)
    limits = "20/10s,60/60s"
    ledger = tmp_path / "ledger"
    with import_stub(import_limits=limits) as stub:
        args = ["--input", glob, "--mode", "import", "--woopra_base_url", stub.url,
                "--import_limits", limits, "--import_batch_bytes", "33000",
                "--ledger", str(ledger)]  # fmt: skip
        code, output = finish(start([*args, "--output", str(tmp_path / "out1")]))
        assert code == 0, output[-3000:]
        records = stub.records
        code2, output2 = finish(start([*args, "--output", str(tmp_path / "out2")]))
        assert code2 == 0, output2[-3000:]
        assert stub.records == records  # the second run sent nothing
    plan = json.loads((tmp_path / "out1" / "plan.json").read_text())
    statuses = Counter(r["status"] for r in records)
    assert statuses[429] <= 1
    assert statuses[200] == plan["bodies"] >= 40
    assert windows_held(records, [(20, 10.0), (60, 60.0)])
    tracked = Counter(e["messageId"] for e in events if e["type"] != "identify")
    lines = accepted_lines(records)
    assert message_ids_of(lines, events) == tracked  # every action in exactly one body
    visits = Counter(line["visitor"]["cookie"] for line in lines)
    assert len(visits) == 1000
    assert set(visits.values()) == {4}
    assert all(line["visitor"]["id"].startswith("user-") for line in lines)
    report = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert (report["sent"], report["balanced"]) == (20000, True)
    measured = max(r["ts"] for r in records) - plan["created_ms"] / 1000
    assert plan["estimated_seconds"] >= 20
    assert abs(measured - plan["estimated_seconds"]) <= 0.1 * plan["estimated_seconds"]
    second = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert (second["sent"], second["filtered"]) == (0, 20000)


def test_spec_15_import_killed_halfway_and_restarted_repeats_at_most_one_body(tmp_path):
    events = visitor_events(visitors=60, visits=2, per_visit=5)
    glob = write_event_files(tmp_path / "in", events, files=2)
    limits = "2/1s"
    with import_stub(import_limits=limits) as stub:
        args = ["--input", glob, "--mode", "import", "--woopra_base_url", stub.url,
                "--import_limits", limits, "--import_batch_bytes", "2500",
                "--ledger", str(tmp_path / "ledger")]  # fmt: skip
        first = start([*args, "--output", str(tmp_path / "out1")])
        kill_when(first, lambda: sum(r["status"] == 200 for r in stub.records) >= 8)
        killed_records = stub.records
        code, output = finish(start([*args, "--output", str(tmp_path / "out2")]))
        records = stub.records
    assert code == 0, output[-3000:]
    tracked = {e["messageId"] for e in events if e["type"] != "identify"}
    first_bodies = [r for r in killed_records if r["status"] == 200]
    second_bodies = [r for r in records[len(killed_records) :] if r["status"] == 200]
    assert first_bodies
    assert second_bodies
    imported = message_ids_of(accepted_lines(records), events)
    assert set(imported) == tracked  # the rest was sent
    twice = {mid for mid, n in imported.items() if n > 1}
    before = set(message_ids_of(accepted_lines(first_bodies), events))
    repeated_bodies = [
        r for r in second_bodies
        if set(message_ids_of(accepted_lines([r]), events)) & before
    ]  # fmt: skip
    assert len(repeated_bodies) <= 1
    assert all(n <= 2 for n in imported.values())
    assert twice <= set(message_ids_of(accepted_lines(repeated_bodies), events))
    # the restarted run's windows held the killed run's requests too
    assert windows_held(records, [(2, 1.0)])
    assert Counter(r["status"] for r in records)[429] <= 1


def test_spec_15_tracking_killed_halfway_and_restarted_repeats_at_most_max_in_flight(tmp_path):
    events = visitor_events(visitors=40, visits=1, per_visit=10)
    by_request = {(e["anonymousId"], e["originalTimestamp"]): e["messageId"] for e in events}
    glob = write_event_files(tmp_path / "in", events, files=2)
    max_in_flight = 4
    with WoopraStub(latency_ms=20) as stub:
        args = ["--input", glob, "--woopra_base_url", stub.url, "--rate_limit", "40",
                "--max_in_flight", str(max_in_flight),
                "--ledger", str(tmp_path / "ledger")]  # fmt: skip
        first = start([*args, "--output", str(tmp_path / "out1")])
        kill_when(first, lambda: len(stub.records) >= len(events) // 2)
        killed = len(stub.records)
        code, output = finish(start([*args, "--output", str(tmp_path / "out2")]))
        records = stub.records
    assert code == 0, output[-3000:]
    delivered = Counter(
        by_request[(r["params"]["cookie"], int(r["params"]["timestamp"]))]
        for r in records
        if r["status"] == 200
    )
    assert set(delivered) == {e["messageId"] for e in events}  # the rest was sent
    twice = [mid for mid, n in delivered.items() if n > 1]
    assert len(twice) <= max_in_flight
    assert killed < len(events)
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert report["sent"] + report["filtered"] == len(events)
    assert report["filtered_reasons"]["already_delivered"] >= killed - max_in_flight


def test_spec_16_sigterm_stops_an_import_waiting_for_its_slot_with_the_rest_interrupted(
    tmp_path,
):
    events = visitor_events(visitors=30, visits=1, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    with import_stub() as stub:
        run = start(["--input", glob, "--mode", "import", "--woopra_base_url", stub.url,
                     "--import_limits", "1/30s", "--import_batch_bytes", "600",
                     "--output", str(tmp_path / "out")])  # fmt: skip
        deadline = time.monotonic() + 120
        while not stub.records:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1)  # the sender now waits 29 s for its next slot
        stopped_at = time.monotonic()
        run.send_signal(signal.SIGTERM)
        code, output = finish(run)
        assert time.monotonic() - stopped_at < 20
        assert len(stub.records) == 1
    assert code == 143, output[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sent"] == stub.records[0]["body_lines"] * 3
    assert report["dead_letter_reasons"] == {"interrupted": len(events) - report["sent"]}
    assert report["balanced"]
