"""Fail fast: the circuit breaker, a dead Woopra and a dead rate limit service (SPEC §10, §16)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from pipeline.cli import main
from pipeline.stub import WoopraStub
from tests.helpers import load_json_lines, write_lines
from tests.test_http_client import ScriptedServer, client, track
from tests.test_sink import FAST, devices, drive
from transforms.core.records import RETRIES_EXHAUSTED
from transforms.delivery.circuit import WOOPRA, CircuitBreaker, CircuitOpenError
from transforms.delivery.rate_limit import build_throttle
from transforms.delivery.sink import DeliverySettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    """A loopback port nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_circuit_opens_only_after_every_call_failed_for_the_whole_time():
    clock = Clock()
    breaker = CircuitBreaker(WOOPRA, 60, clock=clock)
    breaker.failed()
    clock.now = 59.9
    breaker.failed()
    assert not breaker.is_open
    breaker.succeeded()  # one answer resets the count of time
    clock.now = 61
    breaker.failed()
    assert not breaker.is_open
    clock.now = 121
    breaker.failed()
    assert breaker.is_open
    with pytest.raises(CircuitOpenError, match="Woopra unreachable for 60 s"):
        breaker.check()
    clock.now = 10_000
    assert breaker.is_open  # a batch run stops trying for good


def test_streaming_circuit_lets_calls_through_again_and_opens_at_the_next_failure():
    clock = Clock()
    breaker = CircuitBreaker(WOOPRA, 60, retry_after_seconds=60, clock=clock)
    breaker.trip()
    assert breaker.is_open
    clock.now = 60
    assert not breaker.is_open
    breaker.failed()
    assert breaker.is_open
    clock.now = 121
    breaker.succeeded()
    assert not breaker.is_open


def test_4xx_and_429_answers_keep_the_circuit_closed():
    breaker = CircuitBreaker(WOOPRA, 0.01)
    with ScriptedServer(400, 429, 400, 429) as server, client(max_attempts=1, breaker=breaker) as c:
        for n in range(4):
            c.send(track(server.url, n))
            time.sleep(0.01)
    assert not breaker.is_open


def test_5xx_for_the_whole_time_opens_the_circuit_and_the_rest_is_given_up_at_once():
    breaker = CircuitBreaker(WOOPRA, 0.2)
    with WoopraStub(fail_rate=1.0) as stub, client(max_attempts=3, breaker=breaker) as c:
        first = [c.send(track(stub.url, n)) for n in range(20)]
        time.sleep(0.25)
        c.send(track(stub.url, 98))
        attempts_before = len(stub.records)
        last = c.send(track(stub.url, 99))
        assert len(stub.records) == attempts_before  # not sent
    assert all(o.dead_letter.reason == RETRIES_EXHAUSTED for o in first)
    assert breaker.is_open
    assert last.dead_letter.reason == RETRIES_EXHAUSTED
    assert last.dead_letter.detail == "circuit open: Woopra unreachable for 0.2 s"
    assert last.dead_letter.event == {"messageId": "m99", "type": "track"}  # replayable
    assert last.circuit_open == WOOPRA


def test_spec_10_dead_server_every_event_dead_lettered_replayable_and_counted():
    base = f"http://127.0.0.1:{closed_port()}"
    settings = DeliverySettings(
        max_attempts=20,
        max_in_flight=16,
        timeout_seconds=5.0,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
        circuit_open_seconds=1.0,
    )
    started = time.monotonic()
    sent, dead = drive(settings, [devices(base, 200, 3)])
    elapsed = time.monotonic() - started
    assert sent == []
    assert len(dead) == 600
    assert {letter.reason for letter in dead} == {RETRIES_EXHAUSTED}
    assert all(letter.event["messageId"] == letter.message_id for letter in dead)
    given_up = [letter for letter in dead if letter.detail.startswith("circuit open")]
    assert len(given_up) > 500  # without the circuit, each would take its 20 attempts
    assert elapsed < 30


def test_unreachable_rate_limit_service_opens_its_circuit_when_the_worker_starts():
    throttle = build_throttle(
        rate_limit=0,
        num_workers=1,
        max_in_flight=4,
        rate_limit_service=f"127.0.0.1:{closed_port()}",
        rate_limit_service_breaker=CircuitBreaker("rate_limit_service", 0.5),
    )
    with pytest.raises(CircuitOpenError, match="rate limit service unreachable"):
        throttle.acquire(time.monotonic() + 5)


def _events_file(tmp_path, count: int):
    lines = [
        json.dumps({"type": "track", "anonymousId": f"d{n % 50}", "messageId": f"m{n}"})
        for n in range(count)
    ]
    return write_lines(tmp_path / "events.jsonl", lines)


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--woopra_base_url", "http://127.0.0.1:{port}"], "Woopra was unreachable for 1 s"),
        (
            ["--rate_limit_service", "127.0.0.1:{port}"],
            "the rate limit service was unreachable for 1 s",
        ),
    ],
)
def test_spec_16_unreachable_service_run_exits_1_with_one_line(tmp_path, capsys, flags, line):
    port = closed_port()
    events = _events_file(tmp_path, 100)
    code = main(
        [
            "--input", str(events),
            "--project_name", "p",
            "--output", str(tmp_path / "out"),
            "--circuit_open_seconds", "1",
            "--woopra_base_url", f"http://127.0.0.1:{port}",
            *[flag.format(port=port) for flag in flags],
        ]
    )  # fmt: skip
    assert code == 1
    errors = [row for row in capsys.readouterr().err.splitlines() if "unreachable" in row]
    assert len(errors) == 1
    assert line in errors[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dead_letter_reasons"] == {"retries_exhausted": 100}
    assert report["balanced"]
    assert report["unreachable"] == ["woopra" if "Woopra" in line else "rate_limit_service"]
    letters = load_json_lines(next((tmp_path / "out").glob("dead_letters-*.jsonl")))
    assert sorted(letter["event"]["messageId"] for letter in letters) == sorted(
        f"m{n}" for n in range(100)
    )


def test_fast_settings_keep_the_circuit_closed_while_woopra_answers():
    with WoopraStub() as stub:
        sent, dead = drive(FAST, [devices(stub.url, 5, 2)])
    assert (len(sent), dead) == (10, [])
