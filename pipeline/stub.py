"""A local Woopra-compatible HTTP server ("woopra-stub") for runs, tests and benchmarks.

It answers Woopra's tracking endpoints (``GET /track/ce``, ``GET /track/identify``) and the bulk
import endpoint (``POST /rest/3.0/import``) on loopback, injects latency and faults at given
rates, and records every request, so that the sink can be exercised and checked without network.

Choices worth knowing:

- Faults: one draw per Woopra request from ``random.Random(seed)``, mapped onto bands laid out in
  the order reset, throttle (429), fail (503), reject (400); the rest is answered 200. Rates that
  add up to more than 1 therefore squeeze the later kinds out.
- Latency is applied to every request before it is answered, whatever the outcome, a dropped
  connection included (a reset then costs the client as much time as an answer would).
- Unknown paths get 404, a known path with the wrong method 405; neither draws a fault, so they
  do not shift a seeded sequence. Both are recorded.
- A dropped connection is closed with SO_LINGER 0: the client gets a TCP reset and not a byte.
- Import API: with credentials given, a request without that Basic auth is answered 401; with
  limits, a request arriving while a window of its project is full is answered 429 with the
  Retry-After that frees it, and does not count; every other request counts in the windows,
  whatever its answer. Checked in that order, before the fault draw (401 and 429 draw none).
- TLS (``--tls-cert``/``--tls-key``): the stub serves https only. Each connection's handshake
  runs in its own thread, so a client that fails it (an untrusted certificate) or never
  finishes it holds up no other; it is closed unrecorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyrate_limiter import InMemoryBucket, Rate, RateItem
from urllib3.util import make_headers

from transforms.delivery.import_limits import parse_limits

IMPORT_PATH = "/rest/3.0/import"
# Path -> the one method Woopra accepts there.
ROUTES = {"/track/ce": "GET", "/track/identify": "GET", IMPORT_PATH: "POST"}

_BODIES = {
    200: b"ok\n",
    400: b"rejected\n",
    401: b"unauthorized\n",
    413: b"request entity too large\n",
    404: b"not found\n",
    405: b"method not allowed\n",
    429: b"throttled\n",
    503: b"unavailable\n",
}


class _Server(ThreadingHTTPServer):
    """Thread-per-connection server that can close its open keep-alive connections on stop."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], stub: WoopraStub, tls: ssl.SSLContext | None = None
    ) -> None:
        self.stub = stub
        self._tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which may query DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[Any, Any]:
        connection, address = super().get_request()
        if self._tls is not None:
            # The handshake is left to the connection's own thread (_Handler.setup).
            connection = self._tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake idle keep-alive handlers so that they end instead of serving after stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer are routine under fault injection; stay quiet about them.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


# At most 99 header lines (http.client counts the blank one towards its 100), 64 KiB each.
_MAX_HEADER_LINES = 100
_MAX_LINE = 65536
_HTTP_VERSION = re.compile(r"HTTP/\d{1,10}\.\d{1,10}")


class _Headers(dict):
    """A request's headers by lower-cased name (the first of a repeated one), looked up
    without regard to case as `email.message.Message` does."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


def _read_headers(rfile: Any) -> _Headers | None:
    """The header lines up to the blank one; None when there are too many or one is too long.

    A folded line (one starting with a space or tab) continues the value before it.
    """
    headers = _Headers()
    folding: str | None = None  # the header a folded line would continue
    for _ in range(_MAX_HEADER_LINES):
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            return None
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            if folding is not None:
                headers[folding] = f"{headers[folding]} {text.strip()}".strip()
            continue
        field, colon, value = text.partition(":")
        name, folding = field.strip().lower(), None
        if colon and name not in headers:
            headers[name] = value.strip()
            folding = name
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; with Nagle on, delayed ACKs add ~40 ms to each answer.
    disable_nagle_algorithm = True
    server: _Server

    def parse_request(self) -> bool:
        """The request line and headers, checked as BaseHTTPRequestHandler checks them but read
        into a plain mapping: its email parser was a quarter to a third of the stub's CPU,
        which on a small machine a benchmark's pipeline and the stub share. Unlike it, a
        request line without a version (HTTP/0.9) is answered 400."""
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or not _HTTP_VERSION.fullmatch(words[2]):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request ({self.requestline!r})")
            return False
        command, path, version = words
        major, minor = (int(part) for part in version[5:].split("."))
        if major >= 2:
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid version {version}")
            return False
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        self.command, self.path, self.request_version = command, path, version
        self.close_connection = (major, minor) < (1, 1)
        headers = _read_headers(self.rfile)
        if headers is None:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Headers too large")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = headers.get("Expect", "").lower()
        if expect == "100-continue" and (major, minor) >= (1, 1):
            return self.handle_expect_100()
        return True

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, *args: Any) -> None:
        """No per-request logging: it would cost more than the answer itself."""

    def _serve(self) -> None:
        arrived = time.time()
        stub = self.server.stub
        if not stub._begin():
            self.close_connection = True
            return
        try:
            self._answer_request(stub, arrived)
        finally:
            stub._end()

    def _answer_request(self, stub: WoopraStub, arrived: float) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._answer(400)
            return
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        method = ROUTES.get(url.path)
        importing = url.path == IMPORT_PATH and self.command == "POST"
        retry_after = stub.retry_after
        if method is None:
            status: int | None = 404
        elif method != self.command:
            status = 405
        elif importing:
            status, retry_after = stub._admit_import(
                self.headers.get("Authorization"), params.get("project", ""), len(body), arrived
            )
        else:
            status = stub._draw()
        record: dict[str, Any] = {
            "path": url.path,
            "params": params,
            "status": status,
            "ts": arrived,
        }
        if importing:
            record["body_lines"] = sum(1 for line in body.splitlines() if line.strip())
            record["body"] = body.decode("utf-8", errors="replace")
        if stub.latency_ms > 0:
            time.sleep(stub.latency_ms / 1000)
        stub._record(record)
        if status is None:
            self._drop()
        else:
            self._answer(status, retry_after)

    def _read_body(self) -> bytes:
        """Read the whole body, so that the next request on a keep-alive connection parses."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, status: int, retry_after: int | None = None) -> None:
        body = _BODIES[status]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", str(retry_after or self.server.stub.retry_after))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="woopra"')
        if status == 405:
            self.send_header("Allow", ROUTES[urlsplit(self.path).path])
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        """Reset the connection without writing anything, as a crashed server would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        # The descriptor really closes (sending RST) once finish() has closed rfile.
        self.connection.close()


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


class WoopraStub:
    """A Woopra stand-in on loopback with latency, faults and a record of every request."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        fail_rate: float = 0.0,
        throttle_rate: float = 0.0,
        reset_rate: float = 0.0,
        reject_rate: float = 0.0,
        retry_after: int = 1,
        seed: int | None = None,
        record: str | os.PathLike[str] | None = None,
        *,
        keep_records: bool = True,
        import_credentials: str | None = None,
        import_limits: str | None = None,
        import_max_bytes: int | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {latency_ms}")
        if retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {retry_after}")
        self.host = host
        self.port = port
        self.latency_ms = latency_ms
        self.retry_after = int(retry_after)
        self.record_path = record
        # keep_records=False spares memory in long CLI runs, where only the file matters.
        self.keep_records = keep_records
        # Import API: Basic auth expected ("APP_ID:SECRET"), windows per project, body cap.
        self._import_authorization = (
            make_headers(basic_auth=import_credentials)["authorization"]
            if import_credentials
            else None
        )
        self._import_rates = (
            [Rate(w.count, round(w.seconds * 1000)) for w in parse_limits(import_limits)]
            if import_limits
            else None
        )
        self._import_windows: dict[str, InMemoryBucket] = {}
        self._import_lock = threading.Lock()
        self.import_max_bytes = import_max_bytes
        # https with this certificate chain and key (PEM files) instead of http.
        self._tls: ssl.SSLContext | None = None
        if tls_cert is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(tls_cert, tls_key)
        bands: list[tuple[float, int | None]] = []
        edge = 0.0
        for name, rate, status in (
            ("reset_rate", reset_rate, None),
            ("throttle_rate", throttle_rate, 429),
            ("fail_rate", fail_rate, 503),
            ("reject_rate", reject_rate, 400),
        ):
            edge += _check_rate(name, rate)
            bands.append((edge, status))
        self._bands = bands
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._records_lock = threading.Lock()
        self._file: Any = None
        self._idle = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    def start(self) -> WoopraStub:
        """Bind and serve in background threads; the port is known once this returns."""
        if self._server is not None or self._stopping:
            raise RuntimeError("a WoopraStub can be started only once")
        if self.record_path is not None:
            self._file = open(self.record_path, "a", encoding="utf-8")  # noqa: SIM115
        try:
            self._server = _Server((self.host, self.port), self, self._tls)
        except BaseException:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise
        self._address = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="woopra-stub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, close every socket and the record.

        A request that arrives on a kept-alive connection while this runs is dropped unrecorded.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._idle:
            self._stopping = True
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=self.latency_ms / 1000 + 5)
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._records_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> WoopraStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to point the sink at, e.g. ``http://127.0.0.1:PORT`` (https with TLS)."""
        if self._address is None:
            raise RuntimeError("the stub has not been started")
        host, port = self._address
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def records(self) -> list[dict[str, Any]]:
        """A snapshot of the requests so far, in the order they were answered."""
        with self._records_lock:
            return list(self._records)

    @property
    def in_flight(self) -> int:
        """Requests being answered now (a request is recorded once its answer is due)."""
        with self._idle:
            return self._in_flight

    def clear(self) -> None:
        """Forget the records kept in memory (the record file is left as it is)."""
        with self._records_lock:
            self._records.clear()

    def _draw(self) -> int | None:
        with self._rng_lock:
            x = self._rng.random()
        for edge, status in self._bands:
            if x < edge:
                return status
        return 200

    def _admit_import(
        self, authorization: str | None, project: str, body_bytes: int, arrived: float
    ) -> tuple[int | None, int | None]:
        """An import request's status (and Retry-After): 401 without the credentials, 429 while
        a window of the project is full, 413 over the body cap, else the drawn fault or 200.
        Every request let through the windows counts in them, whatever its answer."""
        if self._import_authorization is not None and authorization != self._import_authorization:
            return 401, None
        if self._import_rates is not None:
            with self._import_lock:
                bucket = self._import_windows.get(project)
                if bucket is None:
                    bucket = self._import_windows[project] = InMemoryBucket(self._import_rates)
                item = RateItem(project, int(arrived * 1000))
                if not bucket.put(item):
                    return 429, max(1, math.ceil(bucket.waiting(item) / 1000))
        if self.import_max_bytes is not None and body_bytes > self.import_max_bytes:
            return 413, None
        return self._draw(), None

    def _record(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n" if self._file is not None else ""
        with self._records_lock:
            if self.keep_records:
                self._records.append(record)
            if self._file is not None:
                self._file.write(line)
                self._file.flush()

    def _begin(self) -> bool:
        with self._idle:
            if self._stopping:
                return False
            self._in_flight += 1
            return True

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _rate(text: str) -> float:
    try:
        return _check_rate("rate", float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def _limits(text: str) -> str:
    try:
        parse_limits(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="woopra-stub",
        description="Local Woopra-compatible HTTP server with latency and fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_non_negative(int), default=0, help="0 = any free port")
    parser.add_argument("--latency-ms", type=_non_negative(float), default=0.0)
    parser.add_argument("--fail-rate", type=_rate, default=0.0, help="fraction answered 503")
    parser.add_argument(
        "--throttle-rate", type=_rate, default=0.0, help="fraction answered 429 with Retry-After"
    )
    parser.add_argument(
        "--retry-after", type=_non_negative(int), default=1, help="Retry-After seconds"
    )
    parser.add_argument(
        "--reset-rate", type=_rate, default=0.0, help="fraction dropped without an answer"
    )
    parser.add_argument("--reject-rate", type=_rate, default=0.0, help="fraction answered 400")
    parser.add_argument("--seed", type=int, default=None, help="makes the fault choice repeatable")
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per request")
    parser.add_argument(
        "--import-credentials",
        metavar="APP_ID:SECRET",
        help="Basic auth the import endpoint requires (401 without it)",
    )
    parser.add_argument(
        "--import-limits",
        type=_limits,
        metavar="LIMITS",
        help="import windows per project, e.g. 300/60s,600/3600s (429 when one is full)",
    )
    parser.add_argument(
        "--import-max-bytes",
        type=_non_negative(int),
        help="import bodies larger than this are answered 413",
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="serve https with this certificate chain file"
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly and return 0."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    try:
        stub = WoopraStub(
            host=args.host,
            port=args.port,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            throttle_rate=args.throttle_rate,
            reset_rate=args.reset_rate,
            reject_rate=args.reject_rate,
            retry_after=args.retry_after,
            seed=args.seed,
            record=args.record,
            keep_records=False,
            import_credentials=args.import_credentials,
            import_limits=args.import_limits,
            import_max_bytes=args.import_max_bytes,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except OSError as exc:  # ssl.SSLError included
        print(f"woopra-stub: cannot load the TLS certificate or key: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        stub.start()
    except OSError as exc:
        print(f"woopra-stub: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"listening on {stub.url}", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
