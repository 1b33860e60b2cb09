"""One HTTP exchange through libcurl (pycurl), on a handle that each thread keeps and reuses.

libcurl rather than urllib3: an exchange costs about a quarter of the CPU (the pipeline's
process is bound by the GIL, and the request was its largest cost per event), and pycurl
releases the GIL for the whole exchange. What the handles do, each on purpose:

- One handle, so one kept-alive connection, per thread: the sink has one thread per request in
  flight. HTTP/1.1 only, as before; only http and https URLs are followed.
- No redirects followed, and no body decoded (`Accept-Encoding: identity` asks for none, as
  urllib3 did): the answer's status is all that counts, and a body Woopra did not need to
  send must not fail a delivery.
- Credentials in the URL (`https://user:password@host`) go as Basic auth, unless the request
  has its own Authorization header (the import requests).
- No cookie engine: a cookie Woopra sets for one visitor must not travel with the next
  visitor's request on the same handle.
- No proxy: the proxy environment variables (http_proxy, https_proxy, ALL_PROXY), which
  libcurl would otherwise honour, are overridden, as the urllib3 pool used before ignored them.
- Certificates are verified against the store Python's own `ssl` module trusts
  (`ssl.get_default_verify_paths()`: the system store, or the SSL_CERT_FILE / SSL_CERT_DIR
  environment variables): the store the sink trusted through urllib3, and the one an operator
  already knows how to change. The libcurl bundled in pycurl's wheels would look for the
  bundle where its build system keeps it, which is not where Debian or Dataflow's images do.
- `timeout_seconds` bounds the connection (TLS handshake included) and, separately, the whole
  exchange, so no attempt outlives it.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import pycurl

USER_AGENT = "woopra-beam"
# Sent with every request; an empty Expect is added to those with a body, so that a large
# body goes at once rather than after a wait for 100 Continue.
_HEADERS = ["Accept-Encoding: identity"]
_BODY_HEADERS = [*_HEADERS, "Expect:"]


class TransportError(Exception):
    """An exchange that ended without an answer. Its text is libcurl's error name only: libcurl's
    own message names the host and the URL, and the URL holds the event."""

    retryable = False

    def __init__(self, curl_error: str) -> None:
        super().__init__(curl_error)
        self.curl_error = curl_error

    def describe(self) -> str:
        return f"{type(self).__name__}: {self.curl_error}"


class ConnectError(TransportError):
    """No connection could be made (name not resolved, refused, unreachable)."""

    retryable = True


class ConnectTimeoutError(TransportError):
    """The connection was not made within the timeout."""

    retryable = True


class ReadTimeoutError(TransportError):
    """Connected, but the exchange did not end within the timeout."""

    retryable = True


class ConnectionBrokenError(TransportError):
    """The connection broke, or the answer was empty, cut short or not HTTP."""

    retryable = True


class TLSError(TransportError):
    """The TLS handshake failed or the certificate was not trusted: not retried, and nothing
    was sent."""


_ErrorTable = dict[int, tuple[type[TransportError], str]]


def _errors(kind: type[TransportError], **codes: int) -> _ErrorTable:
    return {code: (kind, name) for name, code in codes.items()}


# libcurl's error codes by the class of outcome they stand for; any other code is a plain,
# not retried TransportError (a malformed URL, an unsupported protocol, ...).
_CURL_ERRORS = {
    **_errors(
        ConnectError,
        COULDNT_RESOLVE_HOST=pycurl.E_COULDNT_RESOLVE_HOST,
        COULDNT_CONNECT=pycurl.E_COULDNT_CONNECT,
    ),
    **_errors(
        ConnectionBrokenError,
        WEIRD_SERVER_REPLY=pycurl.E_FTP_WEIRD_SERVER_REPLY,
        PARTIAL_FILE=pycurl.E_PARTIAL_FILE,
        GOT_NOTHING=pycurl.E_GOT_NOTHING,
        SEND_ERROR=pycurl.E_SEND_ERROR,
        RECV_ERROR=pycurl.E_RECV_ERROR,
        # Only _OneSend aborts: a kept-alive connection died before any answer.
        CONNECTION_DIED=pycurl.E_ABORTED_BY_CALLBACK,
    ),
    **_errors(
        TLSError,
        SSL_CONNECT_ERROR=pycurl.E_SSL_CONNECT_ERROR,
        SSL_ENGINE_NOTFOUND=pycurl.E_SSL_ENGINE_NOTFOUND,
        SSL_ENGINE_SETFAILED=pycurl.E_SSL_ENGINE_SETFAILED,
        SSL_CERTPROBLEM=pycurl.E_SSL_CERTPROBLEM,
        SSL_CIPHER=pycurl.E_SSL_CIPHER,
        PEER_FAILED_VERIFICATION=pycurl.E_PEER_FAILED_VERIFICATION,
        USE_SSL_FAILED=pycurl.E_USE_SSL_FAILED,
        SSL_ENGINE_INITFAILED=pycurl.E_SSL_ENGINE_INITFAILED,
        SSL_CACERT_BADFILE=pycurl.E_SSL_CACERT_BADFILE,
        SSL_SHUTDOWN_FAILED=pycurl.E_SSL_SHUTDOWN_FAILED,
        SSL_CRL_BADFILE=pycurl.E_SSL_CRL_BADFILE,
        SSL_ISSUER_ERROR=pycurl.E_SSL_ISSUER_ERROR,
        SSL_PINNEDPUBKEYNOTMATCH=pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
        SSL_INVALIDCERTSTATUS=pycurl.E_SSL_INVALIDCERTSTATUS,
    ),
}


@dataclass(frozen=True)
class Answer:
    """What an exchange that got an answer tells the sender."""

    status: int
    # The Retry-After header in seconds from now, as libcurl reads it (delay-seconds or an
    # HTTP-date, capped at 6 hours); None when absent, unreadable or already past.
    retry_after: float | None


class _OneSend:
    """libcurl's PREREQFUNCTION: lets one request out per exchange.

    When a kept-alive connection dies before any answer, libcurl sends the request again by
    itself on a new connection. That second send would skip the throttle, the rate limits and
    the count of attempts, so it is stopped here, and the exchange ends in a retryable
    ConnectionBrokenError that the client retries as its own, counted and paced.
    """

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, *connection: object) -> int:
        self.sent += 1
        return pycurl.PREREQFUNC_OK if self.sent == 1 else pycurl.PREREQFUNC_ABORT


class CurlTransport:
    """Sends one request at a time per thread, each thread on its own reused libcurl handle."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout_ms = max(1, round(timeout_seconds * 1000))
        verify_paths = ssl.get_default_verify_paths()
        self._ca_file, self._ca_dir = verify_paths.cafile, verify_paths.capath
        self._local = threading.local()
        self._handles: list[pycurl.Curl] = []
        self._handles_lock = threading.Lock()

    def close(self) -> None:
        """Closes every thread's handle and its connection; a later exchange opens anew."""
        with self._handles_lock:
            handles, self._handles = self._handles, []
            self._local = threading.local()
        for handle in handles:
            handle.close()

    def exchange(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Sends one GET or POST and returns its answer; raises TransportError when none came."""
        handle, one_send = self._handle()
        one_send.sent = 0
        handle.setopt(pycurl.URL, url)
        if method == "GET":
            handle.setopt(pycurl.HTTPGET, 1)
        elif method == "POST":
            handle.setopt(pycurl.POSTFIELDS, body or b"")
        else:
            raise ValueError(f"unsupported method {method}")
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        handle.setopt(pycurl.HTTPHEADER, [*(_BODY_HEADERS if body else _HEADERS), *lines])
        try:
            handle.perform()
        except pycurl.error as error:
            raise _transport_error(handle, error.args[0]) from None
        retry_after = handle.getinfo(pycurl.RETRY_AFTER)
        return Answer(handle.getinfo(pycurl.RESPONSE_CODE), retry_after or None)

    def _handle(self) -> tuple[pycurl.Curl, _OneSend]:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._new_handle()
            with self._handles_lock:
                self._handles.append(handle[0])
                self._local.handle = handle
        return handle

    def _new_handle(self) -> tuple[pycurl.Curl, _OneSend]:
        handle, one_send = pycurl.Curl(), _OneSend()
        handle.setopt(pycurl.PREREQFUNCTION, one_send)
        # No signals: libcurl's name-resolution timeout would use SIGALRM, unsafe in threads.
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.PROXY, "")
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        handle.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        handle.setopt(pycurl.USERAGENT, USER_AGENT)
        # The body is taken whole and dropped: `len` tells libcurl every byte was consumed.
        handle.setopt(pycurl.WRITEFUNCTION, len)
        if self._ca_file or self._ca_dir:
            _set_or_unset(handle, pycurl.CAINFO, self._ca_file)
            _set_or_unset(handle, pycurl.CAPATH, self._ca_dir)
        return handle, one_send


def _set_or_unset(handle: pycurl.Curl, option: int, value: str | None) -> None:
    if value is None:
        handle.unsetopt(option)
    else:
        handle.setopt(option, value)


def _transport_error(handle: pycurl.Curl, code: int) -> TransportError:
    if code == pycurl.E_OPERATION_TIMEDOUT:
        # Connected (TLS included) once any of the request went out, on a reused connection
        # too. Neither timing tells: libcurl sets the pre-transfer time when it gives up
        # connecting, and leaves the connect time at 0 on a reused connection.
        connected = handle.getinfo(pycurl.REQUEST_SIZE) > 0
        return (ReadTimeoutError if connected else ConnectTimeoutError)("OPERATION_TIMEDOUT")
    kind, name = _CURL_ERRORS.get(code, (TransportError, f"error {code}"))
    return kind(name)
