"""The Woopra stub answers, fails and records the way runs, tests and benchmarks rely on.

Everything goes over real HTTP on loopback with ``requests``; nothing is mocked.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from pipeline.stub import WoopraStub, main

TIMEOUT = 5
REPO = Path(__file__).resolve().parents[1]


def _outcomes(stub: WoopraStub, n: int) -> list[int | None]:
    """Send n requests one after another; a status, or None for a dropped connection."""
    seen: list[int | None] = []
    with requests.Session() as session:
        for i in range(n):
            try:
                resp = session.get(f"{stub.url}/track/ce", params={"i": str(i)}, timeout=TIMEOUT)
            except requests.ConnectionError:
                seen.append(None)
            else:
                seen.append(resp.status_code)
    return seen


@pytest.mark.parametrize(
    ("launcher", "signum"),
    [("module", signal.SIGTERM), ("script", signal.SIGINT)],
)
def test_cli_prints_listening_line_serves_and_exits_cleanly(
    tmp_path: Path, launcher: str, signum: int
) -> None:
    record = tmp_path / "requests.jsonl"
    if launcher == "module":
        command = [sys.executable, "-m", "pipeline.stub"]
    else:
        script = Path(sys.executable).with_name("woopra-stub")
        if not script.exists():
            pytest.skip("woopra-stub console script is not installed")
        command = [str(script)]
    proc = subprocess.Popen(
        [*command, "--port", "0", "--record", str(record)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        before = time.time()
        resp = requests.get(
            f"{match[1]}/track/ce", params={"project": "p", "event": "e"}, timeout=TIMEOUT
        )
        assert resp.status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert proc.stderr.read() == ""
    (line,) = record.read_text(encoding="utf-8").splitlines()
    recorded = json.loads(line)
    assert recorded.pop("ts") == pytest.approx(before, abs=2)
    assert recorded == {
        "path": "/track/ce",
        "params": {"project": "p", "event": "e"},
        "status": 200,
    }


def test_cli_rejects_a_rate_above_one() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--fail-rate", "1.5"])
    assert exited.value.code == 2


def test_params_are_recorded_exactly() -> None:
    pairs = [
        ("project", "p"),
        ("blank", ""),
        ("cv_name", "Jürgen ✓ 日本"),
        ("k", "1"),
        ("k", "2"),
        ("ce_q", "a b&c=d+e%"),
    ]
    with WoopraStub() as stub:
        before = time.time()
        url = f"{stub.url}/track/identify?{urlencode(pairs)}&flag"
        assert requests.get(url, timeout=TIMEOUT).status_code == 200
        after = time.time()
        (recorded,) = stub.records
    assert before <= recorded.pop("ts") <= after
    assert recorded == {
        "path": "/track/identify",
        "params": {
            "project": "p",
            "blank": "",
            "cv_name": "Jürgen ✓ 日本",
            "k": "2",
            "ce_q": "a b&c=d+e%",
            "flag": "",
        },
        "status": 200,
    }


def test_record_file_matches_records_after_stop(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": "line"}\n', encoding="utf-8")
    with WoopraStub(record=path, reset_rate=0.3, seed=3) as stub:
        _outcomes(stub, 50)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"earlier": "line"}'
    assert [json.loads(line) for line in lines[1:]] == stub.records
    assert len(stub.records) == 50


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({}, 200),
        ({"throttle_rate": 1.0, "retry_after": 3}, 429),
        ({"fail_rate": 1.0}, 503),
        ({"reject_rate": 1.0}, 400),
    ],
)
def test_each_answer_kind_keeps_the_connection_alive(kwargs: dict, status: int) -> None:
    with WoopraStub(**kwargs) as stub:
        host, port = urlsplit(stub.url).hostname, urlsplit(stub.url).port
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            sockets = []
            for _ in range(3):
                conn.request("GET", "/track/ce?event=e")
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == status
                assert resp.getheader("Content-Length") == str(len(body))
                assert resp.getheader("Retry-After") == ("3" if status == 429 else None)
                sockets.append(conn.sock)
            assert sockets[0] is not None
            assert sockets == [sockets[0]] * 3, "the server closed a keep-alive connection"
        finally:
            conn.close()
        assert [r["status"] for r in stub.records] == [status] * 3


def test_reset_drops_the_connection_without_a_byte() -> None:
    with WoopraStub(reset_rate=1.0) as stub:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{stub.url}/track/ce", params={"event": "e"}, timeout=TIMEOUT)
        parts = urlsplit(stub.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /track/ce?event=raw HTTP/1.1\r\nHost: stub\r\n\r\n")
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b""
        assert [(r["params"]["event"], r["status"]) for r in stub.records] == [
            ("e", None),
            ("raw", None),
        ]


def test_unknown_path_and_wrong_method_are_answered_and_recorded() -> None:
    with WoopraStub(fail_rate=1.0) as stub, requests.Session() as session:
        assert session.get(f"{stub.url}/track/other?x=1", timeout=TIMEOUT).status_code == 404
        resp = session.post(f"{stub.url}/track/ce", data=b"x", timeout=TIMEOUT)
        assert (resp.status_code, resp.headers["Allow"]) == (405, "GET")
        assert [(r["path"], r["params"], r["status"]) for r in stub.records] == [
            ("/track/other", {"x": "1"}, 404),
            ("/track/ce", {}, 405),
        ]


def test_rates_are_roughly_honoured_and_match_the_records() -> None:
    rates = {"reset_rate": 0.1, "throttle_rate": 0.1, "fail_rate": 0.1, "reject_rate": 0.1}
    n = 2000
    with WoopraStub(seed=11, **rates) as stub:
        seen = _outcomes(stub, n)
        recorded = [r["status"] for r in stub.records]
    assert seen == recorded
    counts = Counter(seen)
    expected = {None: 0.1, 429: 0.1, 503: 0.1, 400: 0.1, 200: 0.6}
    for status, rate in expected.items():
        assert abs(counts[status] / n - rate) < 0.03, (status, counts)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"reset_rate": 1.0, "throttle_rate": 1.0}, None),
        ({"throttle_rate": 1.0, "fail_rate": 1.0}, 429),
        ({"fail_rate": 1.0, "reject_rate": 1.0}, 503),
    ],
)
def test_fault_kinds_take_precedence_in_order(kwargs: dict, status: int | None) -> None:
    with WoopraStub(**kwargs) as stub:
        assert _outcomes(stub, 3) == [status] * 3


def test_same_seed_gives_the_same_outcome_sequence() -> None:
    rates = {"reset_rate": 0.2, "throttle_rate": 0.2, "fail_rate": 0.2, "reject_rate": 0.2}
    runs = []
    for seed in (42, 42, 43):
        with WoopraStub(seed=seed, **rates) as stub:
            runs.append(_outcomes(stub, 150))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(set(runs[0])) == 5


@pytest.mark.parametrize("kwargs", [{}, {"fail_rate": 1.0}, {"reset_rate": 1.0}])
def test_latency_is_applied_before_every_outcome(kwargs: dict) -> None:
    with WoopraStub(latency_ms=100, **kwargs) as stub:
        start = time.monotonic()
        _outcomes(stub, 1)
        assert time.monotonic() - start >= 0.09


def test_many_concurrent_keep_alive_clients_are_all_answered_and_recorded() -> None:
    clients, each = 32, 20

    def client(c: int) -> list[int]:
        with requests.Session() as session:
            return [
                session.get(
                    f"{stub.url}/track/ce", params={"c": str(c), "i": str(i)}, timeout=TIMEOUT
                ).status_code
                for i in range(each)
            ]

    with WoopraStub(latency_ms=10) as stub, ThreadPoolExecutor(clients) as pool:
        statuses = [s for result in pool.map(client, range(clients)) for s in result]
        records = stub.records
    assert statuses == [200] * clients * each
    assert sorted((int(r["params"]["c"]), int(r["params"]["i"])) for r in records) == [
        (c, i) for c in range(clients) for i in range(each)
    ]


def test_import_records_body_lines_and_keeps_the_connection_usable() -> None:
    body = (
        b'{"visitor": {"email": "a@b.c"}}\n\n{"visitor": {}, "actions": []}\n   \n{"visitor": {}}'
    )
    with WoopraStub() as stub, requests.Session() as session:
        url = f"{stub.url}/rest/3.0/import"
        assert session.post(url, params={"project": "p"}, data=body, timeout=TIMEOUT).ok
        chunked = iter([b'{"visitor": {}}\n{"vis', b'itor": {}}\n'])
        assert session.post(url, params={"project": "p"}, data=chunked, timeout=TIMEOUT).ok
        assert session.get(f"{stub.url}/track/ce", timeout=TIMEOUT).ok
        records = stub.records
    assert [(r["path"], r["params"], r["status"], r.get("body_lines")) for r in records] == [
        ("/rest/3.0/import", {"project": "p"}, 200, 3),
        ("/rest/3.0/import", {"project": "p"}, 200, 2),
        ("/track/ce", {}, 200, None),
    ]


def test_clear_forgets_records() -> None:
    with WoopraStub() as stub, requests.Session() as session:
        assert session.get(f"{stub.url}/track/ce", timeout=TIMEOUT).ok
        stub.clear()
        assert stub.records == []
        assert session.get(f"{stub.url}/track/identify", timeout=TIMEOUT).ok
        assert [r["path"] for r in stub.records] == ["/track/identify"]


def test_stop_answers_requests_in_flight_then_closes_idle_connections(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    stub = WoopraStub(latency_ms=300, record=record).start()
    parts = urlsplit(stub.url)
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as idle,
        ThreadPoolExecutor(1) as pool,
    ):
        in_flight = pool.submit(requests.get, f"{stub.url}/track/ce?late=1", timeout=TIMEOUT)
        time.sleep(0.1)
        stub.stop()
        assert in_flight.result().status_code == 200
        assert idle.recv(1024) == b"", "an idle keep-alive connection outlived stop()"
    (line,) = record.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["params"] == {"late": "1"}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stub.url}/track/ce", timeout=TIMEOUT)


def test_import_records_the_body_and_requires_the_credentials_given() -> None:
    body = '{"visitor":{"cookie":"é"}}\n{"visitor":{"cookie":"b"}}'
    with WoopraStub(import_credentials="app:secret") as stub, requests.Session() as session:
        url = f"{stub.url}/rest/3.0/import"
        post = {"params": {"project": "p"}, "data": body.encode(), "timeout": TIMEOUT}
        unauthorized = session.post(url, **post)
        wrong = session.post(url, auth=("app", "other"), **post)
        accepted = session.post(url, auth=("app", "secret"), **post)
        tracking = session.get(f"{stub.url}/track/ce", timeout=TIMEOUT)  # needs no credentials
        records = stub.records
    assert (unauthorized.status_code, wrong.status_code, accepted.status_code) == (401, 401, 200)
    assert unauthorized.headers["WWW-Authenticate"].startswith("Basic")
    assert tracking.ok
    assert [r["body"] for r in records[:3]] == [body] * 3
    assert "body" not in records[3]


def test_import_limits_answer_429_with_retry_after_while_a_window_is_full() -> None:
    with WoopraStub(import_limits="2/3s,3/60s") as stub, requests.Session() as session:
        url = f"{stub.url}/rest/3.0/import"

        def post(project: str) -> requests.Response:
            return session.post(url, params={"project": project}, data=b"{}", timeout=TIMEOUT)

        first = [post("p").status_code for _ in range(3)]
        refused = post("p")
        other = post("q")  # every project has its own windows
        time.sleep(3.1)
        after_short_window = post("p").status_code
        long_window_full = post("p")
    assert first == [200, 200, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3
    assert other.status_code == 200
    assert after_short_window == 200
    assert long_window_full.status_code == 429
    assert int(long_window_full.headers["Retry-After"]) > 50


def test_cli_takes_the_import_options() -> None:
    with pytest.raises(SystemExit):
        main(["--import-limits", "nonsense", "--port", "0"])


def test_cli_tls_key_needs_a_certificate() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--tls-key", "key.pem", "--port", "0"])
    assert exited.value.code == 2


def test_cli_names_a_certificate_it_cannot_load(tmp_path: Path, capsys) -> None:
    assert main(["--tls-cert", str(tmp_path / "missing.pem"), "--port", "0"]) == 1
    assert "cannot load the TLS certificate" in capsys.readouterr().err


def _raw_exchange(stub: WoopraStub, data: bytes) -> bytes:
    """Sends raw bytes on a fresh connection and reads until the stub closes it."""
    parts = urlsplit(stub.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            # Closing with bytes of ours still unread resets the connection after the answer.
            if not received:
                raise
    return received


def test_headers_are_read_without_regard_to_case_and_the_first_of_a_repeat_counts() -> None:
    with WoopraStub(import_credentials="app:secret") as stub:
        body = b'{"event": "e"}\n'
        request = (
            b"POST /rest/3.0/import?project=p HTTP/1.1\r\nHost: stub\r\n"
            b"authorization: Basic YXBwOnNlY3JldA==\r\nAUTHORIZATION: Basic bm8=\r\n"
            b"content-LENGTH: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        answer = _raw_exchange(stub, request)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [(r["status"], r["body_lines"]) for r in stub.records] == [(200, 1)]


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /track/ce", b"400"),
        (b"GET /track/ce HTTP/x", b"400"),
        (b"GET /track/ce extra HTTP/1.1", b"400"),
        (b"GET /track/ce HTTP/2.0", b"505"),
    ],
)
def test_a_malformed_request_line_is_answered_and_not_recorded(
    request_line: bytes, status: bytes
) -> None:
    with WoopraStub() as stub:
        answer = _raw_exchange(stub, request_line + b"\r\nHost: stub\r\n\r\n")
        # Without a version the answer has no status line (HTTP/0.9), only the error page.
        assert b"Error code: " + status in answer
        assert stub.records == []


def test_too_many_or_too_long_header_lines_are_answered_431() -> None:
    def lines(n: int) -> bytes:
        return b"".join(b"X-%d: v\r\n" % i for i in range(n))

    long = b"X-Long: " + b"v" * 70_000 + b"\r\n"
    with WoopraStub() as stub:
        for headers in (lines(100), long):
            answer = _raw_exchange(stub, b"GET /track/ce HTTP/1.1\r\n" + headers + b"\r\n")
            assert answer.split(b" ")[1] == b"431"
        assert stub.records == []
        request = b"GET /track/ce HTTP/1.1\r\n" + lines(98) + b"Connection: close\r\n\r\n"
        assert _raw_exchange(stub, request).startswith(b"HTTP/1.1 200 ")
        assert len(stub.records) == 1


def test_a_folded_header_line_continues_its_value_and_a_doubled_slash_path_is_one() -> None:
    with WoopraStub() as stub:
        body = b'{"event": "e"}\n'
        request = (
            b"POST //rest/3.0/import?project=p HTTP/1.1\r\nHost: stub\r\nContent-Length:\r\n"
            b" " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        assert _raw_exchange(stub, request).startswith(b"HTTP/1.1 200 ")
    assert [(r["path"], r["body_lines"]) for r in stub.records] == [("/rest/3.0/import", 1)]


def test_http_1_0_closes_after_the_answer_unless_kept_alive_and_100_continue_is_answered() -> None:
    with WoopraStub() as stub:
        closed = _raw_exchange(stub, b"GET /track/ce?n=1 HTTP/1.0\r\n\r\n")
        assert closed.startswith(b"HTTP/1.1 200 ")
        parts = urlsplit(stub.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
            sock.sendall(
                b"POST /rest/3.0/import?project=p HTTP/1.1\r\nHost: stub\r\n"
                b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
            sock.sendall(b"{}")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
        kept = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        kept._http_vsn, kept._http_vsn_str = 10, "HTTP/1.0"
        try:
            for n in (2, 3):
                kept.request("GET", f"/track/ce?n={n}", headers={"Connection": "keep-alive"})
                assert kept.getresponse().read() == b"ok\n"
                assert kept.sock is not None, "the stub closed a kept-alive HTTP/1.0 connection"
        finally:
            kept.close()
        assert [r["params"].get("n") for r in stub.records] == ["1", None, "2", "3"]
