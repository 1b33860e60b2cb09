"""WriteToWoopra: the rate-limited, concurrent, per-device ordered HTTP sink (SPEC §10)."""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils import shared
from apache_beam.utils.windowed_value import WindowedValue

from transforms.core.records import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    RETRIES_EXHAUSTED,
    WoopraRequest,
)
from transforms.delivery.circuit import (
    RATE_LIMIT_SERVICE,
    UNREACHABLE_SERVICES,
    WOOPRA,
    CircuitBreaker,
    circuit_open_metric,
)
from transforms.delivery.http_client import Outcome, WoopraClient, dead_letter
from transforms.delivery.ledger import LedgerWriter, ledger_key
from transforms.delivery.rate_limit import build_throttle
from transforms.progress import ProgressCounter

_LOGGER = logging.getLogger(__name__)

# The counters of Woopra's answers are `http_<status>`; an attempt without one is this.
HTTP_STATUS_PREFIX = "http_"
DROPPED = "dropped"
# Wall time this worker's sender was held back by the rate cap or a 429 pause, in ms.
THROTTLED_WALL_MS = "throttled_wall_ms"


def http_status_metric(status: int | None) -> str:
    """The counter of one kind of answer: `http_200`, `http_429`, `http_dropped` (no answer)."""
    return HTTP_STATUS_PREFIX + (DROPPED if status is None else str(status))


class OutcomeCounters:
    """The report's delivery figures from each request's Outcome (retries, 429s, latency,
    answers by status), counted alike by both sinks. Made in a DoFn's constructor, counted on
    the bundle thread."""

    def __init__(self) -> None:
        self._retries = Metrics.counter(METRICS_NAMESPACE, "retries")
        self._throttled_responses = Metrics.counter(METRICS_NAMESPACE, "throttled_responses")
        self._latency_ms = Metrics.distribution(METRICS_NAMESPACE, "request_latency_ms")
        self._answers: dict[int | None, Any] = {}

    def count(self, outcome: Outcome) -> None:
        self._retries.inc(max(0, outcome.attempts - 1))
        self._throttled_responses.inc(outcome.throttled_responses)
        for latency in outcome.latencies_ms:
            self._latency_ms.update(latency)
        for status in outcome.statuses:
            self._answer_counter(status).inc()

    def _answer_counter(self, status: int | None) -> Any:
        counter = self._answers.get(status)
        if counter is None:
            counter = Metrics.counter(METRICS_NAMESPACE, http_status_metric(status))
            self._answers[status] = counter
        return counter


# Longest single wait of the bundle thread for the sending threads.
_WAIT_SLICE_SECONDS = 1.0
# Device lists allowed to wait per sending thread before process() blocks.
_PENDING_PER_THREAD = 4


@dataclass(frozen=True)
class DeliverySettings:
    """How the sink sends: rate and concurrency caps, retries, timeouts (SPEC §10).

    `num_workers` is the number of worker processes sharing `rate_limit` when no
    `rate_limit_service` (Envoy RLS "host:port") holds the global cap. Once every request
    failed for `circuit_open_seconds`, the sink stops trying; with `circuit_retry_seconds`
    (streaming) it tries again that long after.
    """

    rate_limit: float = 0.0
    max_in_flight: int = 32
    max_attempts: int = 6
    max_retry_seconds: float = 300.0
    timeout_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    num_workers: int = 1
    rate_limit_service: str | None = None
    circuit_open_seconds: float = 60.0
    circuit_retry_seconds: float | None = None
    # SPEC §15: each delivered request's event is recorded here before the device goes on.
    ledger_dir: str | None = None

    def __post_init__(self) -> None:
        if self.rate_limit < 0:
            raise ValueError(f"rate_limit must not be negative, got {self.rate_limit}")
        for name in ("max_in_flight", "max_attempts", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_retry_seconds", "timeout_seconds", "circuit_open_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("backoff_base_seconds", "backoff_cap_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


class WriteToWoopra(beam.PTransform):
    """Sends `(device_key, [WoopraRequest, ...])` lists, each in order, to Woopra.

    Returns the tagged outputs: `.sent` holds the delivered requests and
    `[DEAD_LETTER_TAG]` the dead letters of the ones that could not be delivered.
    """

    def __init__(self, settings: DeliverySettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, pcoll: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return pcoll | "SendRequests" >> beam.ParDo(_SendFn(self._settings)).with_outputs(
            DEAD_LETTER_TAG, main="sent"
        )


class _DeviceLanes:
    """The lanes of one worker process: a lane per device, run on a thread pool.

    A lane sends its device's lists one after the other, so one device never has two requests
    in flight, and a device seen again, in the same bundle or in another one running at the
    same time, joins the end of its running lane. All bundles of the sink share the lanes and
    the pool, so the `max_in_flight` threads serve whatever any bundle has queued instead of
    each small bundle waiting on its own few devices.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        deliver: Callable[[WoopraRequest], Outcome],
        on_delivered: Callable[[Any, WoopraRequest], None] | None = None,
    ) -> None:
        self._pool = pool
        self._deliver = deliver
        # Called on the lane's thread after each delivery; the lane waits for it.
        self._on_delivered = on_delivered
        self._lock = threading.Lock()
        self._lanes: dict[Any, deque[tuple[list[WoopraRequest], WindowedValue, _BundleSends]]]
        self._lanes = {}

    def submit(
        self, key: Any, requests: list[WoopraRequest], source: WindowedValue, bundle: _BundleSends
    ) -> None:
        """Queues a device's list behind the device's earlier ones; `bundle` gets the results."""
        bundle.queued()
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append((requests, source, bundle))
                return
            self._lanes[key] = deque([(requests, source, bundle)])
        self._pool.submit(self._run, key)

    def _run(self, key: Any) -> None:
        while True:
            with self._lock:
                lane = self._lanes[key]
                if not lane:
                    del self._lanes[key]
                    return
                requests, source, bundle = lane[0]
            try:
                for request in requests:
                    outcome = self._deliver_safely(request)
                    if outcome.delivered and self._on_delivered is not None:
                        self._on_delivered(key, request)
                    bundle.finished(source, outcome)
            except BaseException as error:  # a bug or the ledger: the bundle fails, is retried
                bundle.fail(error)
            with self._lock:
                lane.popleft()
            bundle.list_done()

    def _deliver_safely(self, request: WoopraRequest) -> Outcome:
        """Dead-letters a request whose sending raised, so the device and the bundle go on.

        Failing the bundle instead would make the runner retry it and re-send every request
        already delivered; a dead letter keeps the event for a replay once the bug is fixed.
        """
        try:
            return self._deliver(request)
        except Exception as error:
            name = type(error).__name__
            # Frames only: the message of an error can contain the request URL.
            frames = "".join(traceback.format_tb(error.__traceback__))
            _LOGGER.error("Sending a request raised %s; dead-lettering it.\n%s", name, frames)
            detail = f"internal error: {name}"
            letter = dead_letter(request, RETRIES_EXHAUSTED, detail, None, 0)
            return Outcome(request, letter, attempts=0, status=None)


class _BundleSends:
    """One bundle's share of the lanes: how many of its lists are unfinished, and its results.

    Results are handed back to the bundle thread, which alone may emit outputs and update
    metrics (Beam's metrics container is thread-local).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: list[tuple[WindowedValue, Outcome]] = []
        self._pending = 0
        self._failure: BaseException | None = None

    def queued(self) -> None:
        with self._cond:
            self._pending += 1

    def finished(self, source: WindowedValue, outcome: Outcome) -> None:
        with self._cond:
            self._done.append((source, outcome))

    def list_done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._failure = error
            self._cond.notify_all()

    def wait(self, max_pending: int, timeout: float) -> bool:
        """Waits up to `timeout` for at most `max_pending` lists to be unfinished; True if so."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._pending <= max_pending or self._failure is not None, timeout
            )
            if self._failure is not None:
                raise RuntimeError("a Woopra sending thread failed") from self._failure
            return self._pending <= max_pending

    def take(self) -> list[tuple[WindowedValue, Outcome]]:
        """The results finished since the last call, with the input element they came from."""
        with self._cond:
            done, self._done = self._done, []
        return done


class _Sender:
    """What the sink's DoFn instances in one process share: throttle, circuit breakers, client,
    pool and lanes (one `Shared` object, as `Shared` keeps only the latest acquired alive)."""

    def __init__(self, settings: DeliverySettings) -> None:
        def breaker(service: str) -> CircuitBreaker:
            return CircuitBreaker(
                service, settings.circuit_open_seconds, settings.circuit_retry_seconds
            )

        self.throttle = build_throttle(
            rate_limit=settings.rate_limit,
            num_workers=settings.num_workers,
            max_in_flight=settings.max_in_flight,
            rate_limit_service=settings.rate_limit_service,
            rate_limit_service_breaker=breaker(RATE_LIMIT_SERVICE),
        )
        self.breaker = breaker(WOOPRA)
        self.client = WoopraClient(
            self.throttle,
            max_attempts=settings.max_attempts,
            max_retry_seconds=settings.max_retry_seconds,
            timeout_seconds=settings.timeout_seconds,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_cap_seconds=settings.backoff_cap_seconds,
            breaker=self.breaker,
        )
        self.pool = ThreadPoolExecutor(
            max_workers=settings.max_in_flight, thread_name_prefix="woopra-send"
        )
        # One group-committing writer for the process, left open: bundles come and go.
        self.ledger = LedgerWriter(settings.ledger_dir) if settings.ledger_dir else None
        record = self._record_delivered if self.ledger is not None else None
        self.lanes = _DeviceLanes(self.pool, self.client.send, record)

    def _record_delivered(self, device: Any, request: WoopraRequest) -> None:
        """Makes a delivered request's event durable in the ledger before the lane goes on."""
        assert self.ledger is not None
        self.ledger.commit([(device, ledger_key(request.message_id, request.event))])


class _SendFn(beam.DoFn):
    """Sends each device's requests on a pool of `max_in_flight` threads and emits the results.

    process() returns as soon as the list is queued (blocking only while more than
    4 x max_in_flight lists of the bundle wait), emitting results that have finished
    meanwhile; finish_bundle() waits for the rest, so a bundle commits only after all its
    requests ended: a runner may take a committed bundle as done for good (acknowledge its
    input, never retry it), so nothing may still be on its way then. The pool and the
    per-device lanes belong to the process (`_Sender`, through `Shared`), not to a bundle:
    bundles that run at the same time share the threads and keep one device in order.
    """

    def __init__(self, settings: DeliverySettings) -> None:
        self._settings = settings
        self._shared_sender = shared.Shared()
        self._circuit_open = {
            service: Metrics.counter(METRICS_NAMESPACE, circuit_open_metric(service))
            for service in UNREACHABLE_SERVICES
        }
        self._sent = ProgressCounter("sent")
        self._send_failures = Metrics.counter(METRICS_NAMESPACE, "send_failures")
        self._throttled_wall_ms = Metrics.counter(METRICS_NAMESPACE, THROTTLED_WALL_MS)
        self._outcomes = OutcomeCounters()

    def setup(self) -> None:
        # Shared: the local streaming runner sets a copy of the DoFn up for every bundle.
        self._sender = self._shared_sender.acquire(lambda: _Sender(self._settings))
        self._max_pending = _PENDING_PER_THREAD * self._settings.max_in_flight

    def start_bundle(self) -> None:
        self._bundle = _BundleSends()

    def process(
        self,
        element: tuple[Any, Iterable[WoopraRequest]],
        source: WindowedValue = beam.DoFn.WindowedValueParam,
    ) -> Iterator[Any]:
        key, requests = element
        # A copy of the windowing only: the runner owns the element it passed in.
        self._sender.lanes.submit(key, list(requests), source.with_value(None), self._bundle)
        # Beam multiplies the windows of a WindowedValue emitted while processing an element
        # in several windows, so then results wait for a later element or finish_bundle().
        emit = len(source.windows) == 1
        while True:
            below_bound = self._bundle.wait(self._max_pending, _WAIT_SLICE_SECONDS)
            if emit:
                yield from self._emit(self._bundle.take())
            if below_bound:
                return

    def finish_bundle(self) -> Iterator[Any]:
        while not self._bundle.wait(0, _WAIT_SLICE_SECONDS):
            yield from self._emit(self._bundle.take())
        yield from self._emit(self._bundle.take())

    def _emit(self, results: list[tuple[WindowedValue, Outcome]]) -> Iterator[Any]:
        """Outputs and counts finished results, in the window and timestamp of their input."""
        self._throttled_wall_ms.inc(round(self._sender.throttle.held_back.take_seconds() * 1000))
        for source, outcome in results:
            self._outcomes.count(outcome)
            if outcome.dead_letter is None:
                self._sent.inc()
                yield source.with_value(outcome.request)
            else:
                self._send_failures.inc()
                if outcome.circuit_open is not None:
                    self._circuit_open[outcome.circuit_open].inc()
                yield TaggedOutput(DEAD_LETTER_TAG, source.with_value(outcome.dead_letter))
