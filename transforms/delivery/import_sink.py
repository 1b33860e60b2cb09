"""SendImportBodies: POSTs each project's bodies to Woopra's Import API, paced to every window.

One element is one project's bodies in order (PackBodies), so one sender holds a project's
windows and they need no sharing between workers. A body is one request at a time: the next
starts only once the previous one's acceptance is in the ledger, so a crash repeats at most
one body. Retries, backoff and Retry-After are the tracking sink's (WoopraClient); each
attempt takes a slot of every window first and is logged at the time it ended, never earlier
than Woopra could have counted it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from urllib3.util import make_headers

from transforms.core.mapping import DEFAULT_BASE_URL
from transforms.core.records import (
    DEAD_LETTER_TAG,
    HTTP_4XX,
    METRICS_NAMESPACE,
    REQUEST_TOO_LARGE,
    STAGE_SEND,
    DeadLetter,
    WoopraRequest,
)
from transforms.core.visits import ImportBody
from transforms.delivery.http_client import Outcome, WoopraClient
from transforms.delivery.import_limits import DEFAULT_IMPORT_LIMITS, ImportWindows, parse_limits
from transforms.delivery.ledger import LedgerWriter, ledger_key, read_request_log, write_immutable
from transforms.delivery.rate_limit import HeldBackClock
from transforms.delivery.sink import THROTTLED_WALL_MS, OutcomeCounters
from transforms.delivery.stop import wait_for_stop

_LOGGER = logging.getLogger(__name__)

IMPORT_PATH = "/rest/3.0/import"
APP_ID_ENV = "WOOPRA_APP_ID"
SECRET_KEY_ENV = "WOOPRA_SECRET_KEY"
NDJSON = "application/x-ndjson"
# Longest single sleep while waiting for a slot, so that a stop is noticed soon.
_MAX_SLEEP_SECONDS = 1.0
# Runs stopped by the limits in this process (the marker file tells other workers).
_STOPPED_RUNS: set[str] = set()
_STOPPED_LOCK = threading.Lock()


def credentials_from_environment() -> tuple[str, str] | None:
    """(app id, secret key) from WOOPRA_APP_ID and WOOPRA_SECRET_KEY; None unless both set."""
    app_id, secret = os.environ.get(APP_ID_ENV), os.environ.get(SECRET_KEY_ENV)
    return (app_id, secret) if app_id and secret else None


@dataclass(frozen=True)
class ImportSettings:
    """How import bodies are sent (SPEC §14). No credentials here: the sender reads them from
    the environment where it runs, so that they never travel in the pipeline's graph."""

    base_url: str = DEFAULT_BASE_URL
    import_limits: str = DEFAULT_IMPORT_LIMITS
    max_wait_seconds: float = 600.0
    ledger_dir: str | None = None
    run_id: str = "run"
    max_attempts: int = 6
    max_retry_seconds: float = 300.0
    timeout_seconds: float = 60.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0


class ImportDeferredError(Exception):
    """The next slot lies beyond --max_wait_seconds: stop and leave the rest to the next run."""

    def __init__(self, next_slot_ms: int) -> None:
        super().__init__(f"the import limits allow the next request at {next_slot_ms} ms")
        self.next_slot_ms = next_slot_ms


def _now_ms() -> int:
    return int(time.time() * 1000)


class ImportThrottle:
    """What WoopraClient waits on before each attempt, for one project: a slot in every window.

    One attempt at a time (max_in_flight 1). A 429 pauses until its Retry-After. With a
    `max_wait_seconds`, a slot further away raises ImportDeferredError instead of waiting.
    """

    max_in_flight = 1

    def __init__(
        self,
        windows: ImportWindows,
        max_wait_seconds: float | None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.windows = windows
        self.max_wait_seconds = max_wait_seconds
        self._should_stop = should_stop
        self._paused_until_ms = 0
        self.ended_ms: list[int] = []
        # Wall time spent waiting for slots and 429 pauses (the report's throttled_seconds).
        self.held_back = HeldBackClock()

    def acquire(self, deadline: float) -> bool:
        now = _now_ms()
        earliest = max(now, self._paused_until_ms)
        if self.max_wait_seconds is not None:
            slot = self.windows.next_slot(earliest)
            if (slot - now) / 1000 > self.max_wait_seconds:
                raise ImportDeferredError(slot)
        slot = self.windows.reserve(earliest)
        with self.held_back:
            while (wait := (slot - _now_ms()) / 1000) > 0:
                if self._should_stop():
                    raise ImportDeferredError(slot)
                # A graceful stop of the run ends the wait; the client then sends nothing.
                if wait_for_stop(min(wait, _MAX_SLEEP_SECONDS)):
                    return True
        return True

    def release(self) -> None:
        """The attempt ended: its slot is logged at this time."""
        ended = _now_ms()
        self.windows.restamp(ended)
        self.ended_ms.append(ended)

    def accepted(self) -> None:
        """Nothing to learn from an answer other than 429."""

    def throttled(self, retry_after: float | None) -> None:
        if retry_after:
            self._paused_until_ms = max(self._paused_until_ms, _now_ms() + int(retry_after * 1000))

    def take_ended(self) -> list[int]:
        ended, self.ended_ms = self.ended_ms, []
        return ended


def body_digest(body: ImportBody) -> str:
    return hashlib.sha256(body.project.encode("utf-8") + b"\n" + body.text).hexdigest()


def body_dead_letters(
    body: ImportBody, reason: str, detail: str, status: int | None, attempts: int
) -> list[DeadLetter]:
    """One dead letter per event of a body that could not be imported."""
    return [
        DeadLetter(mid, STAGE_SEND, reason, detail, event, status, attempts)
        for _, mid, event in body.events
    ]


def _stop_marker(settings: ImportSettings) -> str | None:
    if not settings.ledger_dir:
        return None
    return FileSystems.join(settings.ledger_dir, f"stop-{settings.run_id}")


class _SendBodiesFn(beam.DoFn):
    """Sends one project's bodies in order; emits dead letters, counts the rest."""

    def __init__(self, settings: ImportSettings) -> None:
        self.settings = settings
        self._sent = Metrics.counter(METRICS_NAMESPACE, "sent")
        self._deferred = Metrics.counter(METRICS_NAMESPACE, "deferred")
        self._requests = Metrics.counter(METRICS_NAMESPACE, "import_requests")
        self._accepted_bodies = Metrics.counter(METRICS_NAMESPACE, "import_bodies_accepted")
        self._outcomes = OutcomeCounters()
        self._throttled_wall_ms = Metrics.counter(METRICS_NAMESPACE, THROTTLED_WALL_MS)
        self._next_run_after = Metrics.distribution(METRICS_NAMESPACE, "next_run_after_ms")

    def setup(self) -> None:
        credentials = credentials_from_environment()
        if credentials is None:
            raise RuntimeError(f"{APP_ID_ENV} and {SECRET_KEY_ENV} must be set to import")
        self._headers = {
            **make_headers(basic_auth=":".join(credentials)),
            "Content-Type": NDJSON,
        }
        self._endpoint = self.settings.base_url.rstrip("/") + IMPORT_PATH
        self._windows = parse_limits(self.settings.import_limits)
        self._ledger = LedgerWriter(self.settings.ledger_dir) if self.settings.ledger_dir else None

    def teardown(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def process(self, element: tuple[str, Iterable[ImportBody]], plan=None) -> Iterator:
        project, bodies = element
        settings = self.settings
        log = read_request_log(settings.ledger_dir)
        windows = ImportWindows(self._windows, log.sent_ms.get(project, ()))
        max_wait = settings.max_wait_seconds if self._ledger is not None else None
        throttle = ImportThrottle(windows, max_wait, self._stopped)
        client = WoopraClient(
            throttle,  # type: ignore[arg-type]  # the same interface as WorkerThrottle
            max_attempts=settings.max_attempts,
            max_retry_seconds=settings.max_retry_seconds,
            timeout_seconds=settings.timeout_seconds,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_cap_seconds=settings.backoff_cap_seconds,
        )
        pending = list(bodies)
        with client:
            while pending:
                body = pending.pop(0)
                if self._stopped():
                    self._defer([body, *pending])
                    return
                if body_digest(body) in log.accepted_bodies:
                    # Accepted by an earlier attempt of this bundle: only counted again.
                    self._sent.inc(body.event_count)
                    continue
                try:
                    outcome = client.send(
                        WoopraRequest(None, self._endpoint, {"project": project}, "POST"),
                        body=body.text,
                        headers=self._headers,
                    )
                except ImportDeferredError as deferred:
                    self._record_attempts(throttle, project)
                    self._stop(deferred.next_slot_ms)
                    self._defer([body, *pending])
                    return
                yield from self._settle(body, outcome, throttle, pending)

    def _settle(
        self, body: ImportBody, outcome: Outcome, throttle: ImportThrottle, pending: list
    ) -> Iterator:
        self._requests.inc(outcome.attempts)
        self._outcomes.count(outcome)
        self._throttled_wall_ms.inc(round(throttle.held_back.take_seconds() * 1000))
        if outcome.delivered:
            keys = [(device, ledger_key(mid, event)) for device, mid, event in body.events]
            self._record_attempts(throttle, body.project, keys, body_digest(body))
            self._accepted_bodies.inc()
            self._sent.inc(body.event_count)
            return
        self._record_attempts(throttle, body.project)
        if outcome.status == 413 and body.line_count > 1:
            pending[:0] = body.halves()
            return
        letter = outcome.dead_letter
        assert letter is not None
        if outcome.status == 413:
            reason, detail = REQUEST_TOO_LARGE, "HTTP 413 for a one-line body"
        else:
            reason, detail = letter.reason, letter.detail
        if reason in (HTTP_4XX, REQUEST_TOO_LARGE):
            _LOGGER.warning("import body of %d events refused: %s", body.event_count, detail)
        for dead in body_dead_letters(body, reason, detail, outcome.status, outcome.attempts):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead)

    def _record_attempts(
        self,
        throttle: ImportThrottle,
        project: str,
        keys: list[tuple[str, str]] | None = None,
        digest: str | None = None,
    ) -> None:
        """Makes the body's attempts (and, once accepted, its events) durable in the ledger."""
        ended = throttle.take_ended()
        if self._ledger is None:
            return
        requests = [{"project": project, "ms": ms, "body": None} for ms in ended]
        if digest is not None and requests:
            requests[-1]["body"] = digest
        self._ledger.commit(keys or (), requests)

    def _defer(self, bodies: list[ImportBody]) -> None:
        self._deferred.inc(sum(body.event_count for body in bodies))

    def _stopped(self) -> bool:
        run_id = self.settings.run_id
        with _STOPPED_LOCK:
            if run_id in _STOPPED_RUNS:
                return True
        marker = _stop_marker(self.settings)
        if marker is not None and FileSystems.exists(marker):
            with _STOPPED_LOCK:
                _STOPPED_RUNS.add(run_id)
            return True
        return False

    def _stop(self, next_slot_ms: int) -> None:
        """Stops every sender of this run: here at once, on other workers by the marker."""
        _LOGGER.warning(
            "import limits: the next slot is more than %s s away; stopping, the rest is deferred",
            self.settings.max_wait_seconds,
        )
        self._next_run_after.update(next_slot_ms)
        with _STOPPED_LOCK:
            _STOPPED_RUNS.add(self.settings.run_id)
        marker = _stop_marker(self.settings)
        if marker is not None:
            write_immutable(marker, str(next_slot_ms).encode("ascii"))


class SendImportBodies(beam.PTransform):
    """(project, [ImportBody]) to Woopra; returns the dead letters under DEAD_LETTER_TAG.

    `plan` (a singleton PCollection) is taken as a side input so that nothing is sent before
    the plan exists.
    """

    def __init__(self, settings: ImportSettings, plan: beam.PCollection | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.plan = plan

    def expand(self, bodies):
        side = () if self.plan is None else (beam.pvalue.AsSingleton(self.plan),)
        return bodies | "SendBodies" >> beam.ParDo(
            _SendBodiesFn(self.settings), *side
        ).with_outputs(DEAD_LETTER_TAG, main="sent")
