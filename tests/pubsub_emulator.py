"""Run the real Google Cloud Pub/Sub emulator for tests.

The emulator comes from the Debian package ``google-cloud-cli-pubsub-emulator``
(a Java program; Java 17 is enough). It only ever listens on 127.0.0.1.

Fixtures (register them from ``tests/conftest.py``, e.g.
``pytest_plugins = ["tests.pubsub_emulator"]`` or by importing the names):

* ``pubsub_emulator`` (session): one running :class:`PubSubEmulator`;
  ``PUBSUB_EMULATOR_HOST`` is set for the whole session and restored afterwards,
  so ``google.cloud.pubsub`` clients (including the ones Beam creates) talk to it.
* ``pubsub_factory`` (function): a :class:`PubSubFactory` that creates topics and
  subscriptions with unique names and deletes them when the test ends.
* ``pubsub_pair`` (function): one fresh :class:`PubSubPair` (topic + subscription).
* ``direct_streaming`` (function): applies ``pipeline.local_runner.local_streaming_fixes``
  (the local runner's Pub/Sub pull and metrics fixes) and yields
  :func:`direct_streaming_options`.

Streaming pipelines: build them with :func:`direct_streaming_options` (never the
default DirectRunner, which tries to download the Prism runner), run them with
:func:`run_streaming` and poll for output; DoFns and functions must be defined at
module level to be pickled by reference (closures are pickled by value, so a local
list captured by a lambda is a copy).

The launcher is found via ``$PUBSUB_EMULATOR_LAUNCHER``, then ``dpkg -L
google-cloud-cli-pubsub-emulator``, then the well-known install path. If it
cannot be found the fixture skips the test (and fails it in CI, where it must exist).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import http.client
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping

import pytest

from pipeline.local_runner import local_streaming_fixes

LAUNCHER_ENV = "PUBSUB_EMULATOR_LAUNCHER"
DEB_PACKAGE = "google-cloud-cli-pubsub-emulator"
DEFAULT_LAUNCHER = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"
DEFAULT_PROJECT = "woopra-test"
LOOPBACK = "127.0.0.1"


def find_launcher() -> str | None:
    """Return the path of the ``cloud-pubsub-emulator`` launcher, or None."""
    override = os.environ.get(LAUNCHER_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    if shutil.which("dpkg"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listing = subprocess.run(
                ["dpkg", "-L", DEB_PACKAGE],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            for line in listing.splitlines():
                path = line.strip()
                if path.endswith("/bin/cloud-pubsub-emulator") and os.access(path, os.X_OK):
                    return path
    if os.access(DEFAULT_LAUNCHER, os.X_OK):
        return DEFAULT_LAUNCHER
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


class EmulatorError(RuntimeError):
    """The emulator could not be started."""


class PubSubEmulator:
    """A Pub/Sub emulator process on 127.0.0.1 plus small admin/data helpers.

    The helpers use their own insecure gRPC channel to the emulator, so they work
    whether or not ``PUBSUB_EMULATOR_HOST`` is set in the environment.
    """

    def __init__(
        self,
        launcher: str | None = None,
        startup_timeout: float = 60.0,
        start_attempts: int = 3,
    ) -> None:
        self.launcher = launcher or find_launcher()
        self.startup_timeout = startup_timeout
        self.start_attempts = start_attempts
        self.host = LOOPBACK
        self.port: int | None = None
        self.log_path: str | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._publisher = None
        self._subscriber = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def host_port(self) -> str:
        if self.port is None:
            raise EmulatorError("emulator is not running")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PubSubEmulator:
        """Start the emulator on a free port and wait until it answers."""
        if self.running:
            return self
        if not self.launcher:
            raise EmulatorError(
                f"Pub/Sub emulator launcher not found (install {DEB_PACKAGE} or set {LAUNCHER_ENV})"
            )
        last_error: EmulatorError | None = None
        for _ in range(max(1, self.start_attempts)):
            try:
                self._start_once()
                return self
            except EmulatorError as exc:
                # Most likely cause of an early exit: another process grabbed the
                # port between choosing it and the JVM binding it. Try a new port.
                last_error = exc
                self.stop()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        self.port = _free_port(self.host)
        fd, self.log_path = tempfile.mkstemp(prefix="pubsub-emulator-", suffix=".log")
        self._log_file = os.fdopen(fd, "wb")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                _WATCHDOG,
                self.launcher,
                str(os.getpid()),
                f"--host={self.host}",
                f"--port={self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() kills the JVM too
        )
        _LIVE.add(self)
        deadline = began + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmulatorError(
                    f"Pub/Sub emulator exited with code {self._proc.returncode} "
                    f"during startup; log tail:\n{self.log_tail()}"
                )
            if self._answers_http():
                self.startup_seconds = time.monotonic() - began
                return
            time.sleep(0.1)
        raise EmulatorError(
            f"Pub/Sub emulator did not answer on {self.host_port} within "
            f"{self.startup_timeout:.0f}s; log tail:\n{self.log_tail()}"
        )

    def _answers_http(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, keep_log: bool = False) -> None:
        """Stop the emulator (whole process group), release clients, drop the log."""
        for client in (self._publisher, self._subscriber):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.transport.close()
        self._publisher = self._subscriber = None
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate_group(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.log_path and not keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None
        _LIVE.discard(self)

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -----------------------------------------------------------

    def _channel(self):
        import grpc

        return grpc.insecure_channel(self.host_port)

    @property
    def publisher(self):
        """A ``google.pubsub_v1.PublisherClient`` bound to this emulator."""
        if self._publisher is None:
            from google.pubsub_v1 import PublisherClient
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            transport = PublisherGrpcTransport(channel=self._channel(), host=self.host_port)
            self._publisher = PublisherClient(transport=transport)
        return self._publisher

    @property
    def subscriber(self):
        """A ``google.pubsub_v1.SubscriberClient`` bound to this emulator."""
        if self._subscriber is None:
            from google.pubsub_v1 import SubscriberClient
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            transport = SubscriberGrpcTransport(channel=self._channel(), host=self.host_port)
            self._subscriber = SubscriberClient(transport=transport)
        return self._subscriber

    # -- helpers -----------------------------------------------------------

    def create_topic(self, project: str, topic: str) -> str:
        """Create a topic; return its full path ``projects/P/topics/T``."""
        path = topic_path(project, topic)
        self.publisher.create_topic(name=path, timeout=30)
        return path

    def create_subscription(
        self, project: str, topic: str, subscription: str, ack_deadline_seconds: int = 10
    ) -> str:
        """Create a pull subscription on ``topic``; return its full path."""
        path = subscription_path(project, subscription)
        self.subscriber.create_subscription(
            request={
                "name": path,
                "topic": topic_path(project, topic),
                "ack_deadline_seconds": ack_deadline_seconds,
            },
            timeout=30,
        )
        return path

    def delete_topic(self, project: str, topic: str) -> None:
        self.publisher.delete_topic(topic=topic_path(project, topic), timeout=30)

    def delete_subscription(self, project: str, subscription: str) -> None:
        self.subscriber.delete_subscription(
            subscription=subscription_path(project, subscription), timeout=30
        )

    def publish(
        self,
        project: str,
        topic: str,
        messages: Iterable[bytes],
        attributes: Mapping[str, str] | Iterable[Mapping[str, str] | None] | None = None,
    ) -> list[str]:
        """Publish ``messages`` synchronously; return the message ids.

        ``attributes`` is either one mapping applied to every message or a
        sequence with one mapping (or None) per message.
        """
        datas = list(messages)
        if attributes is None or isinstance(attributes, Mapping):
            attrs = [dict(attributes or {})] * len(datas)
        else:
            attrs = [dict(a or {}) for a in attributes]
            if len(attrs) != len(datas):
                raise ValueError("attributes must have one entry per message")
        if not datas:
            return []
        response = self.publisher.publish(
            topic=topic_path(project, topic),
            messages=[
                {"data": data, "attributes": attr} for data, attr in zip(datas, attrs, strict=True)
            ],
            timeout=30,
        )
        return list(response.message_ids)

    def pull(
        self, project: str, subscription: str, max_messages: int = 100, timeout: float = 10.0
    ) -> list:
        """Pull and acknowledge messages until ``max_messages`` arrived or ``timeout`` s.

        Returns ``google.pubsub_v1.types.PubsubMessage`` objects (``.data``,
        ``.attributes``, ``.message_id``, ``.publish_time``), possibly fewer than
        ``max_messages`` (or none) when the timeout expires.
        """
        from google.api_core import exceptions as gexc

        path = subscription_path(project, subscription)
        received: list = []
        deadline = time.monotonic() + timeout
        while len(received) < max_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                # The emulator answers at once when messages are available and
                # otherwise holds the call until ~1 s before its deadline; keep the
                # deadline short so the loop notices ``timeout`` promptly.
                response = self.subscriber.pull(
                    subscription=path,
                    max_messages=max_messages - len(received),
                    timeout=max(0.5, min(remaining, 2.0)),
                    retry=None,
                )
            except gexc.DeadlineExceeded:
                continue
            if response.received_messages:
                self.subscriber.acknowledge(
                    subscription=path,
                    ack_ids=[m.ack_id for m in response.received_messages],
                    timeout=30,
                )
                received.extend(m.message for m in response.received_messages)
            else:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return received


# Runs the launcher ("$0") as a child of a small shell that stops it when the test
# process ("$1") disappears without calling stop() (SIGKILL, os._exit, ...).
_WATCHDOG = """
parent=$1; shift
"$0" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT HUP
while kill -0 "$child" 2>/dev/null; do
    if ! kill -0 "$parent" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null
        break
    fi
    sleep 1
done
wait "$child"
"""


def _terminate_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``; SIGKILL it if it does not exit.

    ``proc`` is the watchdog shell, which only exits after the JVM has exited.
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        else:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


_LIVE: set[PubSubEmulator] = set()


@atexit.register
def _stop_leftovers() -> None:
    # Safety net for interrupted sessions: never leave a JVM behind.
    for emulator in list(_LIVE):
        with contextlib.suppress(Exception):
            emulator.stop()


# -- Beam BundleBasedDirectRunner helpers (apache-beam 2.77) -------------------
#
# Never use the default DirectRunner in tests: it first tries the PrismRunner, which
# downloads a binary. Streaming tests use the BundleBasedDirectRunner explicitly.


def direct_streaming_options(**options):
    """``PipelineOptions`` for a local streaming run on the BundleBasedDirectRunner.

    ``flags=[]`` stops Beam from parsing ``sys.argv`` (pytest's own arguments).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    opts = PipelineOptions(flags=[], runner="BundleBasedDirectRunner", **options)
    opts.view_as(StandardOptions).streaming = True
    return opts


@contextlib.contextmanager
def run_streaming(pipeline) -> Iterator:
    """Run a streaming ``pipeline`` in the background; cancel it on exit.

    The direct runner's ``wait_until_finish(duration=...)`` raises
    NotImplementedError and ``wait_until_finish()`` never returns for a streaming
    pipeline (not even after ``cancel()``), so poll for the expected output instead.
    """
    result = pipeline.run()
    try:
        yield result
    finally:
        with contextlib.suppress(Exception):
            result.cancel()


# -- pytest fixtures -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PubSubPair:
    """A topic and a subscription on it, with short names and full paths."""

    project: str
    topic: str
    subscription: str

    @property
    def topic_path(self) -> str:
        return topic_path(self.project, self.topic)

    @property
    def subscription_path(self) -> str:
        return subscription_path(self.project, self.subscription)


class PubSubFactory:
    """Creates uniquely named topics/subscriptions; deletes them in ``cleanup``."""

    _counter = itertools.count(1)

    def __init__(self, emulator: PubSubEmulator, project: str = DEFAULT_PROJECT) -> None:
        self.emulator = emulator
        self.project = project
        self._topics: list[str] = []
        self._subscriptions: list[str] = []

    def unique_name(self, hint: str = "t") -> str:
        return f"{hint}-{next(self._counter)}-{uuid.uuid4().hex[:10]}"

    def topic(self, hint: str = "topic") -> str:
        """Create a topic; return its short name."""
        name = self.unique_name(hint)
        self.emulator.create_topic(self.project, name)
        self._topics.append(name)
        return name

    def subscription(self, topic: str, hint: str = "sub") -> str:
        """Create a subscription on short-named ``topic``; return its short name."""
        name = self.unique_name(hint)
        self.emulator.create_subscription(self.project, topic, name)
        self._subscriptions.append(name)
        return name

    def pair(self, hint: str = "events") -> PubSubPair:
        topic = self.topic(f"{hint}-topic")
        return PubSubPair(self.project, topic, self.subscription(topic, f"{hint}-sub"))

    def publish(self, topic: str, messages: Iterable[bytes], attributes=None) -> list[str]:
        return self.emulator.publish(self.project, topic, messages, attributes)

    def pull(self, subscription: str, max_messages: int = 100, timeout: float = 10.0) -> list:
        return self.emulator.pull(self.project, subscription, max_messages, timeout)

    def cleanup(self) -> None:
        if not self.emulator.running:
            return
        for sub in reversed(self._subscriptions):
            with contextlib.suppress(Exception):
                self.emulator.delete_subscription(self.project, sub)
        for topic in reversed(self._topics):
            with contextlib.suppress(Exception):
                self.emulator.delete_topic(self.project, topic)
        self._subscriptions.clear()
        self._topics.clear()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """One emulator for the session, with ``PUBSUB_EMULATOR_HOST`` pointing at it."""
    if find_launcher() is None:
        missing = f"Pub/Sub emulator not installed ({DEB_PACKAGE}; or set {LAUNCHER_ENV})"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI's machine has it: a skip there would hide lost coverage
        pytest.skip(missing)
    emulator = PubSubEmulator()
    emulator.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(EMULATOR_HOST_ENV, emulator.host_port)
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def pubsub_factory(pubsub_emulator: PubSubEmulator) -> Iterator[PubSubFactory]:
    """Per-test factory for uniquely named topics/subscriptions (cleaned up after)."""
    factory = PubSubFactory(pubsub_emulator)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def pubsub_pair(pubsub_factory: PubSubFactory) -> PubSubPair:
    """A fresh topic + subscription for one test."""
    return pubsub_factory.pair()


@pytest.fixture
def direct_streaming() -> Iterator:
    """The local runner's Pub/Sub and metrics fixes (pipeline.local_runner) for one test;
    yields :func:`direct_streaming_options`."""
    with local_streaming_fixes():
        yield direct_streaming_options
