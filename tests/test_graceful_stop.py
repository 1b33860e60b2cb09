"""SIGTERM and Ctrl-C during a batch run: in-flight requests finish, the rest are dead-lettered
`interrupted`, the report is written, the exit code is 130/143 (SPEC §16)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.stub import WoopraStub
from tests.helpers import load_json_lines, read_json_lines, write_lines
from tests.test_http_client import client, track
from transforms.core.records import INTERRUPTED
from transforms.core.timestamps import parse_timestamp_ms
from transforms.delivery import stop


@pytest.fixture
def stop_flag() -> Iterator[None]:
    stop.clear_stop()
    yield
    stop.clear_stop()


def test_a_stopped_run_sends_nothing_new(stop_flag):
    with WoopraStub() as stub, client() as sender:
        stop.request_stop()
        outcome = sender.send(track(stub.url))
        assert stub.records == []
    assert outcome.dead_letter.reason == INTERRUPTED
    assert outcome.dead_letter.stage == "send"
    assert outcome.dead_letter.event == {"messageId": "m0", "type": "track"}  # replayable
    assert outcome.attempts == 0


def test_a_request_waiting_to_retry_is_interrupted_without_waiting_out_its_backoff(stop_flag):
    with (
        WoopraStub(fail_rate=1.0) as stub,
        client(backoff_base_seconds=30, backoff_cap_seconds=30) as sender,
    ):
        started = time.monotonic()
        # The stop comes while the request waits out its first backoff (full jitter: 0-30 s),
        # as soon as the first attempt has been answered.
        watcher = threading.Thread(target=_stop_once_answered, args=(stub,), daemon=True)
        watcher.start()
        outcome = sender.send(track(stub.url))
        assert len(stub.records) == 1
    assert time.monotonic() - started < 5
    assert outcome.dead_letter.reason == INTERRUPTED
    assert (outcome.attempts, outcome.dead_letter.status) == (1, 503)


def _stop_once_answered(stub: WoopraStub, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while not stub.records and time.monotonic() < until:
        time.sleep(0.005)
    stop.request_stop()


def _events(tmp_path: Path, count: int) -> Path:
    lines = [
        json.dumps({"type": "track", "anonymousId": f"dev-{n % 300}", "messageId": f"m{n}",
                    "originalTimestamp": f"2024-06-01T10:{n // 300:02d}:00Z"})
        for n in range(count)
    ]  # fmt: skip
    return write_lines(tmp_path / "events.jsonl", lines)


def _run_and_stop(
    tmp_path: Path,
    base_url: str,
    count: int,
    after_seconds: float,
    signum: int,
    sending: Callable[[], bool],
    *flags: str,
) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs the CLI and signals it `after_seconds` after its start, once it is sending."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--input", str(_events(tmp_path, count)),
         "--project_name", "p", "--woopra_base_url", base_url,
         "--output", str(tmp_path / "out"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started = time.monotonic()
    try:
        while not sending() and time.monotonic() - started < 60:
            time.sleep(0.1)
        time.sleep(max(0.5, after_seconds - (time.monotonic() - started)))
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    return subprocess.CompletedProcess(process.args, process.returncode, output), report


def _check_every_event_accounted_for(tmp_path: Path, report: dict, count: int, stub_records):
    delivered = [r for r in stub_records if r["status"] is not None and 200 <= r["status"] < 300]
    assert report["sent"] == len(delivered)
    assert report["sent"] + report["filtered"] + report["dead_lettered"] == count
    assert report["balanced"]
    files = read_json_lines(tmp_path / "out", "dead_letters")
    letters = [letter for lines in files for letter in lines]
    assert {letter["reason"] for letter in letters} == {INTERRUPTED}
    assert len(letters) == report["dead_lettered"]
    # Each event once: delivered, or dead-lettered with the event to replay.
    delivered_ids = {(r["params"]["cookie"], int(r["params"]["timestamp"])) for r in delivered}
    interrupted_ids = {
        (letter["event"]["anonymousId"], parse_timestamp_ms(letter["event"]["originalTimestamp"]))
        for letter in letters
    }
    assert len(delivered_ids) == len(delivered)
    assert len(interrupted_ids) == len(letters)
    assert not delivered_ids & interrupted_ids


def test_spec_16_ctrl_c_stops_gracefully_with_exit_130(tmp_path):
    with WoopraStub() as stub:
        result, report = _run_and_stop(
            tmp_path, stub.url, 600, 4, signal.SIGINT, lambda: bool(stub.records),
            "--rate_limit", "50",
        )  # fmt: skip
        records = stub.records
    assert result.returncode == 130, result.stdout
    assert "Traceback" not in result.stdout
    assert 0 < report["sent"] < 600
    assert report["dead_letter_reasons"] == {INTERRUPTED: 600 - report["sent"]}
    assert report["interrupted"] == "SIGINT"
    assert "interrupted by SIGINT" in result.stdout
    _check_every_event_accounted_for(tmp_path, report, 600, records)


@pytest.mark.slow
def test_spec_16_sigterm_10_s_into_a_3000_event_run_against_the_recording_stub(tmp_path):
    record = tmp_path / "record.jsonl"
    stub = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stub", "--port", "0", "--latency-ms", "20",
         "--record", str(record)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = stub.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")

        def sending() -> bool:
            return record.exists() and record.stat().st_size > 0

        result, report = _run_and_stop(tmp_path, url, 3000, 10, signal.SIGTERM, sending)
    finally:
        stub.send_signal(signal.SIGTERM)
        stub.communicate(timeout=30)
    assert result.returncode == 143, result.stdout
    assert "Traceback" not in result.stdout
    assert 0 < report["sent"] < 3000
    _check_every_event_accounted_for(tmp_path, report, 3000, load_json_lines(record))
