"""The HTTP client: classification, retries, backoff, Retry-After, timeouts (SPEC §10)."""

from __future__ import annotations

import email.utils
import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.stub import WoopraStub
from transforms.core.records import HTTP_4XX, RETRIES_EXHAUSTED, STAGE_SEND, WoopraRequest
from transforms.delivery.http_client import WoopraClient, is_retryable
from transforms.delivery.rate_limit import AdaptiveRateLimiter, WorkerThrottle


class ScriptedServer:
    """A loopback server answering from a script of (status, headers[, body]); then 200."""

    def __init__(self, *script: int | tuple) -> None:
        self.script = deque(s if isinstance(s, tuple) else (s, {}) for s in script)
        self.arrivals: list[tuple[float, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.arrivals.append((time.monotonic(), dict(self.headers)))
                status, headers, *body = server.script.popleft() if server.script else (200, {})
                payload = body[0] if body else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        serve = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        serve.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class CountingLimiter(AdaptiveRateLimiter):
    def __init__(self) -> None:
        super().__init__(0.0)
        self.acquired = 0

    def acquire(self, deadline: float) -> bool:
        self.acquired += 1
        return super().acquire(deadline)


def client(limiter: AdaptiveRateLimiter | None = None, **overrides: float) -> WoopraClient:
    settings = {
        "max_attempts": 6,
        "max_retry_seconds": 30.0,
        "timeout_seconds": 5.0,
        "backoff_base_seconds": 0.001,
        "backoff_cap_seconds": 0.01,
        **overrides,
    }
    throttle = WorkerThrottle(limiter or AdaptiveRateLimiter(0.0), max_in_flight=4)
    return WoopraClient(throttle, **settings)


def track(base: str, n: int = 0, path: str = "/track/ce") -> WoopraRequest:
    return WoopraRequest(
        message_id=f"m{n}",
        endpoint=base + path,
        params={"project": "p", "cookie": "dev", "event": "e", "ce_seq": n},
        event={"messageId": f"m{n}", "type": "track"},
    )


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retried_statuses(status):
    assert is_retryable(status)


@pytest.mark.parametrize("status", [200, 301, 304, 400, 401, 403, 404, 413, 501, 505])
def test_statuses_not_retried(status):
    assert not is_retryable(status)


def test_success_is_any_2xx_in_one_attempt():
    with ScriptedServer(204) as server, client() as sender:
        outcome = sender.send(track(server.url))
    assert outcome.delivered
    assert (outcome.attempts, outcome.status, outcome.dead_letter) == (1, 204, None)
    assert len(outcome.latencies_ms) == 1


def test_400_is_dead_lettered_after_one_attempt():
    with WoopraStub(reject_rate=1.0) as stub, client() as sender:
        request = track(stub.url, 7)
        outcome = sender.send(request)
        assert len(stub.records) == 1
    letter = outcome.dead_letter
    assert letter is not None
    assert (letter.reason, letter.status, letter.attempts) == (HTTP_4XX, 400, 1)
    assert (letter.stage, letter.message_id, letter.event) == (STAGE_SEND, "m7", request.event)
    assert letter.detail == "HTTP 400"


@pytest.mark.parametrize("status", [301, 404, 501, 505])
def test_other_statuses_are_dead_lettered_after_one_attempt(status):
    with ScriptedServer((status, {"Location": "/elsewhere"})) as server, client() as sender:
        outcome = sender.send(track(server.url))
        assert len(server.arrivals) == 1
    assert outcome.dead_letter is not None
    assert (outcome.dead_letter.reason, outcome.dead_letter.status) == (HTTP_4XX, status)


def test_retryable_errors_are_retried_until_success():
    script = (503, (429, {"Retry-After": "0"}), 408, 500)
    limiter = CountingLimiter()
    with ScriptedServer(*script) as server, client(limiter) as sender:
        outcome = sender.send(track(server.url))
    assert outcome.delivered
    assert (outcome.attempts, outcome.status, outcome.throttled_responses) == (5, 200, 1)
    # The limiter is passed before every attempt, retries included.
    assert limiter.acquired == 5


def test_retries_exhausted_after_max_attempts():
    with WoopraStub(fail_rate=1.0) as stub, client(max_attempts=3) as sender:
        outcome = sender.send(track(stub.url))
        assert len(stub.records) == 3
    letter = outcome.dead_letter
    assert letter is not None
    assert (letter.reason, letter.status, letter.attempts) == (RETRIES_EXHAUSTED, 503, 3)
    assert letter.detail == "HTTP 503"


def test_dropped_connections_are_retried_then_dead_lettered_without_the_url():
    with WoopraStub(reset_rate=1.0) as stub, client(max_attempts=2) as sender:
        outcome = sender.send(track(stub.url))
        assert [r["status"] for r in stub.records] == [None, None]
    letter = outcome.dead_letter
    assert letter is not None
    assert (letter.reason, letter.status, letter.attempts) == (RETRIES_EXHAUSTED, None, 2)
    assert letter.detail == "ConnectionBrokenError: RECV_ERROR"
    assert "127.0.0.1" not in letter.detail
    assert "cookie" not in letter.detail


def test_timeouts_are_retried():
    with WoopraStub(latency_ms=800) as stub, client(max_attempts=2, timeout_seconds=0.25) as sender:
        outcome = sender.send(track(stub.url))
    assert outcome.dead_letter is not None
    assert (outcome.dead_letter.reason, outcome.attempts) == (RETRIES_EXHAUSTED, 2)
    assert outcome.dead_letter.detail == "ReadTimeoutError: OPERATION_TIMEDOUT"


def test_connection_refused_detail_has_no_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with client(max_attempts=2) as sender:
        outcome = sender.send(track(f"http://127.0.0.1:{port}"))
    assert outcome.dead_letter is not None
    assert outcome.dead_letter.detail == "ConnectError: COULDNT_CONNECT"
    assert "?" not in outcome.dead_letter.detail
    assert str(port) not in outcome.dead_letter.detail


def test_retry_after_is_honoured():
    with ScriptedServer((429, {"Retry-After": "1"})) as server, client() as sender:
        outcome = sender.send(track(server.url))
    assert outcome.delivered
    (first, _), (second, _) = server.arrivals
    assert second - first >= 1.0


def test_retry_after_as_http_date_is_honoured():
    # HTTP dates have whole seconds: two seconds on is at least one second away.
    later = email.utils.formatdate(time.time() + 2, usegmt=True)
    with ScriptedServer((503, {"Retry-After": later})) as server, client() as sender:
        outcome = sender.send(track(server.url))
    assert outcome.delivered
    (first, _), (second, _) = server.arrivals
    assert second - first >= 1.0


def test_retry_after_beyond_the_time_budget_gives_up_at_once():
    with (
        ScriptedServer((429, {"Retry-After": "30"})) as server,
        client(max_retry_seconds=2.0) as sender,
    ):
        started = time.monotonic()
        outcome = sender.send(track(server.url))
    assert time.monotonic() - started < 1.0
    assert outcome.dead_letter is not None
    assert (outcome.dead_letter.reason, outcome.attempts) == (RETRIES_EXHAUSTED, 1)
    assert outcome.dead_letter.status == 429


def test_a_429_pauses_the_whole_worker():
    limiter = AdaptiveRateLimiter(0.0)
    with (
        ScriptedServer((429, {"Retry-After": "5"})) as server,
        client(limiter, max_attempts=1) as sender,
    ):
        before = time.monotonic()
        sender.send(track(server.url, path="/first"))
    assert limiter.paused_until >= before + 5


def test_cookies_set_by_woopra_do_not_travel_to_the_next_request():
    with ScriptedServer((200, {"Set-Cookie": "wooTracker=visitor1; Path=/"})) as server:
        with client() as sender:
            assert sender.send(track(server.url, 1)).delivered
            assert sender.send(track(server.url, 2)).delivered
        assert "Cookie" not in server.arrivals[1][1]


def test_no_url_is_logged_at_info_or_above(caplog):
    with (
        WoopraStub(fail_rate=1.0) as stub,
        client(max_attempts=3) as sender,
        caplog.at_level(logging.INFO),
    ):
        sender.send(track(stub.url))
    assert not [r for r in caplog.records if "cookie" in r.getMessage()]


def test_spec_10_a_2xx_with_an_undecodable_body_is_still_delivered():
    broken_gzip = (200, {"Content-Encoding": "gzip"}, b"this is not gzip")
    with ScriptedServer(broken_gzip) as server, client() as sender:
        outcome = sender.send(track(server.url))
    assert outcome.delivered
    assert (outcome.attempts, outcome.status) == (1, 200)
