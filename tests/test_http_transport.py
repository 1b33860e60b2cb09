"""The libcurl transport: Retry-After, error texts, proxies, TLS and its kept-alive handles.

Every server here is on 127.0.0.1; the TLS ones use a throwaway CA made by `trustme`.
"""

from __future__ import annotations

import contextlib
import email.utils
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pycurl
import pytest
import trustme
from urllib3.util import make_headers

from pipeline.stub import WoopraStub
from tests.test_http_client import ScriptedServer, client, track
from transforms.core.records import RETRIES_EXHAUSTED, WoopraRequest
from transforms.delivery.http_transport import (
    ConnectError,
    ConnectionBrokenError,
    ConnectTimeoutError,
    CurlTransport,
    ReadTimeoutError,
    TLSError,
    TransportError,
)
from transforms.delivery.import_sink import IMPORT_PATH, NDJSON

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY")


class LoopbackServer:
    """A TCP server on 127.0.0.1 that serves each connection on its own thread (`_serve`)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        # A close alone does not wake the thread waiting in accept().
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


class RawListener(LoopbackServer):
    """A loopback TCP server that answers requests with kept-alive 200s (`answers` on each
    connection, then a reset for the next request) and records the requests it received and
    the bytes each connection sent first."""

    def __init__(self, answer: bool = True, answers: int | None = None) -> None:
        self._answer = answer
        self._answers = answers
        self.requests = 0
        self.first_bytes: list[bytes] = []
        self.closed_by_client = threading.Event()
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            data = connection.recv(65536)
            self.first_bytes.append(data)
            answered = 0
            while self._answer and data:
                self.requests += 1
                if answered == self._answers:
                    linger = struct.pack("ii", 1, 0)
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    return
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                answered += 1
                data = connection.recv(65536)
            if self._answer:
                self.closed_by_client.set()


class QuietListener(LoopbackServer):
    """A loopback TCP server that answers the first `answers` requests of each connection with
    a kept-alive 200, then reads on and never answers: a server that stopped mid-connection."""

    def __init__(self, answers: int = 0) -> None:
        self._answers = answers
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            answered = 0
            while connection.recv(65536):
                if answered < self._answers:
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    answered += 1


class FullListener:
    """A loopback port whose accept queue is full: the kernel drops every further SYN, so a
    connection to it is never made and a connect waits until its timeout."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self._socket.getsockname()[1]
        self._waiting: list[socket.socket] = []
        for _ in range(16):
            waiting = socket.socket()
            waiting.setblocking(False)
            waiting.connect_ex(("127.0.0.1", self.port))
            self._waiting.append(waiting)
            _, connected, _ = select.select([], [waiting], [], 0.2)
            if not connected:
                return  # this one's SYN was dropped: the queue is full
        self.close()
        raise AssertionError("the accept queue did not fill")

    def close(self) -> None:
        for waiting in self._waiting:
            waiting.close()
        self._socket.close()


def timeout_of(url: str, first_url: str | None = None) -> TransportError:
    """The error of an exchange with `url` (after one with `first_url`, on the same handle)."""
    transport = CurlTransport(timeout_seconds=0.3)
    try:
        if first_url is not None:
            assert transport.exchange("GET", first_url).status == 200
        with pytest.raises(TransportError) as raised:
            transport.exchange("GET", url)
    finally:
        transport.close()
    return raised.value


def test_spec_10_a_connection_never_made_is_a_retried_connect_timeout():
    with contextlib.closing(FullListener()) as server:
        error = timeout_of(f"http://127.0.0.1:{server.port}/track/ce")
    assert type(error) is ConnectTimeoutError
    assert error.retryable
    assert error.describe() == "ConnectTimeoutError: OPERATION_TIMEDOUT"


def test_a_tls_handshake_never_answered_is_a_connect_timeout():
    with contextlib.closing(QuietListener()) as server:
        error = timeout_of(f"https://127.0.0.1:{server.port}/track/ce")
    assert type(error) is ConnectTimeoutError


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "kept-alive connection"])
def test_spec_10_a_request_sent_but_never_answered_is_a_retried_read_timeout(reused):
    with contextlib.closing(QuietListener(answers=1 if reused else 0)) as server:
        url = f"http://127.0.0.1:{server.port}/track/ce"
        error = timeout_of(url, first_url=url if reused else None)
    assert type(error) is ReadTimeoutError
    assert error.retryable
    assert error.describe() == "ReadTimeoutError: OPERATION_TIMEDOUT"


@pytest.fixture
def listener():
    server = RawListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the throwaway CA's certificate, the stub's certificate chain and key) as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    ca_file, server_file = folder / "ca.pem", folder / "server.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_file))
    return ca_file, server_file


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (None, None),
        ("soon", None),
        ("0", None),
        # An HTTP-date (given here as its seconds from now, made when the test runs) in the past
        # is no wait; one in the future is read as seconds from now.
        (-60, None),
        (60, pytest.approx(60, abs=2)),
        # Capped at 6 hours, as urllib3's parser did.
        ("99999999", 21600.0),
    ],
)
def test_spec_10_retry_after_is_read_as_seconds_from_now(header, seconds):
    if isinstance(header, int):
        header = email.utils.formatdate(time.time() + header, usegmt=True)
    script = (503, {"Retry-After": header} if header else {})
    with ScriptedServer(script, script) as server:
        transport = CurlTransport(timeout_seconds=5)
        first = transport.exchange("GET", server.url + "/x")
        # The same handle again: nothing of the first answer carries over.
        second = transport.exchange("GET", server.url + "/x")
        transport.close()
    assert (first.status, first.retry_after) == (503, seconds)
    assert (second.status, second.retry_after) == (503, seconds)


def test_an_error_names_libcurl_s_error_never_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/track/ce?cookie=secret"
    plain = pycurl.Curl()
    plain.setopt(pycurl.URL, url)
    with pytest.raises(pycurl.error) as raw:
        plain.perform()
    plain.close()
    assert str(port) in str(raw.value)  # what libcurl's own message would have leaked
    transport = CurlTransport(timeout_seconds=5)
    with pytest.raises(ConnectError) as raised:
        transport.exchange("GET", url)
    transport.close()
    assert raised.value.retryable
    assert raised.value.describe() == "ConnectError: COULDNT_CONNECT"
    assert str(port) not in str(raised.value)
    assert raised.value.__cause__ is None


def test_what_goes_with_a_request_besides_its_url():
    with ScriptedServer() as server:
        transport = CurlTransport(timeout_seconds=5)
        with_credentials = server.url.replace("http://", "http://user:s3cret@")
        transport.exchange("GET", with_credentials + "/track/ce")
        transport.exchange("POST", server.url + "/x", b"{}", {"Authorization": "Basic b3du"})
        transport.close()
    (_, get), (_, post) = server.arrivals
    assert get["Authorization"] == "Basic dXNlcjpzM2NyZXQ="  # user:s3cret
    assert (get["Accept-Encoding"], get["User-Agent"]) == ("identity", "woopra-beam")
    assert (post["Authorization"], post["Content-Length"]) == ("Basic b3du", "2")
    assert "Expect" not in post


def test_only_http_and_https_are_followed():
    transport = CurlTransport(timeout_seconds=5)
    with pytest.raises(TransportError) as raised:
        transport.exchange("GET", "file:///etc/hostname")
    transport.close()
    assert not raised.value.retryable


def test_proxy_environment_variables_are_not_used(monkeypatch):
    with ScriptedServer() as proxy, WoopraStub() as stub:
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        # A handle left to libcurl's defaults would go through the proxy...
        plain = pycurl.Curl()
        plain.setopt(pycurl.URL, stub.url + "/track/ce?project=p")
        plain.setopt(pycurl.WRITEFUNCTION, len)
        plain.perform()
        plain.close()
        assert len(proxy.arrivals) == 1
        assert stub.records == []
        # ...the sink's goes straight to Woopra.
        with client() as sender:
            assert sender.send(track(stub.url)).delivered
        assert len(proxy.arrivals) == 1
        assert len(stub.records) == 1


def test_one_kept_alive_connection_per_thread_closed_by_close(listener):
    transport = CurlTransport(timeout_seconds=5)
    url = f"http://127.0.0.1:{listener.port}/track/ce"
    for _ in range(3):
        assert transport.exchange("GET", url).status == 200
    other = threading.Thread(target=transport.exchange, args=("GET", url))
    other.start()
    other.join()
    assert len(listener.first_bytes) == 2
    assert not listener.closed_by_client.is_set()
    transport.close()
    assert listener.closed_by_client.wait(5)
    # A closed transport opens anew when asked again.
    assert transport.exchange("GET", url).status == 200
    transport.close()


def test_a_kept_alive_connection_that_dies_is_not_resent_behind_the_client_s_back():
    server = RawListener(answers=1)
    transport = CurlTransport(timeout_seconds=5)
    url = f"http://127.0.0.1:{server.port}/track/ce"
    try:
        assert transport.exchange("GET", url).status == 200
        # libcurl would send this one again on a new connection, unpaced and uncounted.
        with pytest.raises(ConnectionBrokenError) as raised:
            transport.exchange("GET", url)
        assert server.requests == 2
        assert raised.value.retryable
        # The client's own retry goes out on a new connection.
        assert transport.exchange("GET", url).status == 200
        assert server.requests == 3
    finally:
        transport.close()
        server.close()


def test_a_request_over_https_is_delivered_when_its_ca_is_trusted(monkeypatch, tls_files):
    ca_file, server_file = tls_files
    # SSL_CERT_FILE / SSL_CERT_DIR: where Python's ssl module, and so the sink, looks for CAs.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    stub = WoopraStub(tls_cert=server_file, import_credentials="app:secret")
    with stub, client() as sender:
        assert stub.url.startswith("https://127.0.0.1:")
        outcome = sender.send(track(stub.url, 3))
        # An import POST, with its Basic auth and NDJSON body, over the same handle.
        body = b'{"visitor": {"cookie": "d"}}\n{"visitor": {"cookie": "e"}}'
        headers = {**make_headers(basic_auth="app:secret"), "Content-Type": NDJSON}
        posted = sender.send(WoopraRequest(None, stub.url + IMPORT_PATH, {}, "POST"), body, headers)
        tracked, imported = stub.records
    assert (outcome.delivered, outcome.attempts, outcome.status) == (True, 1, 200)
    assert tracked["params"]["ce_seq"] == "3"
    assert (posted.delivered, posted.status) == (True, 200)
    assert (imported["path"], imported["body_lines"]) == (IMPORT_PATH, 2)


def test_a_request_over_https_is_refused_once_when_the_certificate_is_not_trusted(tls_files):
    _, server_file = tls_files
    with WoopraStub(tls_cert=server_file) as stub, client(max_attempts=5) as sender:
        outcome = sender.send(track(stub.url))
        assert stub.records == []
    letter = outcome.dead_letter
    assert letter is not None
    assert (letter.reason, letter.attempts, letter.status) == (RETRIES_EXHAUSTED, 1, None)
    assert letter.detail == "TLSError: PEER_FAILED_VERIFICATION"


def test_an_https_request_is_never_sent_in_clear():
    server = RawListener(answer=False)
    transport = CurlTransport(timeout_seconds=5)
    try:
        with pytest.raises(TLSError) as raised:
            transport.exchange("GET", f"https://127.0.0.1:{server.port}/track/ce?cookie=secret")
    finally:
        transport.close()
        server.close()
    assert not raised.value.retryable
    (first,) = server.first_bytes
    assert first[:1] == b"\x16"  # a TLS handshake record: the ClientHello
    assert b"secret" not in first
    assert b"GET" not in first
