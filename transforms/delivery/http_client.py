"""Sends one Woopra request until it is delivered or dead-lettered (SPEC §10).

Shaped like Beam's `io/requestresponse.py` Caller (a context manager owning the client), but it
returns an `Outcome` instead of raising, because the sink dead-letters rather than fails.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from apache_beam.utils.retry import FuzzedExponentialIntervals

from transforms.core.records import (
    HTTP_4XX,
    INTERRUPTED,
    RETRIES_EXHAUSTED,
    STAGE_SEND,
    DeadLetter,
    WoopraRequest,
)
from transforms.delivery.circuit import CircuitBreaker, CircuitOpenError
from transforms.delivery.http_transport import Answer, CurlTransport, TransportError
from transforms.delivery.rate_limit import WorkerThrottle
from transforms.delivery.stop import stop_requested, wait_for_stop

_LOGGER = logging.getLogger(__name__)

# A backoff wait looks at the stop flag and the circuit at least this often.
_PAUSE_SLICE_SECONDS = 0.25
INTERRUPTED_DETAIL = "the run was stopped before this request was sent"


def is_retryable(status: int) -> bool:
    """Whether an HTTP status is worth another attempt: 408, 429, 5xx except 501 and 505."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


@dataclass(frozen=True)
class Outcome:
    """How one request ended, with what the sink counts about it."""

    request: WoopraRequest
    dead_letter: DeadLetter | None
    attempts: int
    status: int | None
    throttled_responses: int = 0
    latencies_ms: tuple[int, ...] = ()
    # The service whose open circuit ended the request, if one did.
    circuit_open: str | None = None
    # The answer to each attempt: its HTTP status, or None when no answer came (SPEC §16).
    statuses: tuple[int | None, ...] = ()

    @property
    def delivered(self) -> bool:
        return self.dead_letter is None


def dead_letter(
    request: WoopraRequest, reason: str, detail: str, status: int | None, attempts: int
) -> DeadLetter:
    """The dead letter for a request that could not be sent; it carries the original event."""
    return DeadLetter(
        message_id=request.message_id,
        stage=STAGE_SEND,
        reason=reason,
        detail=detail,
        event=request.event,
        status=status,
        attempts=attempts,
    )


class WoopraClient:
    """Sends requests with retries, backoff and the worker throttle, on one reused connection
    per thread.

    Every attempt waits on the throttle first, so retries count against the rate and in-flight
    caps. Backoff is exponential with full jitter (Beam's FuzzedExponentialIntervals with
    fuzz=1), at least the Retry-After; no attempt starts after `max_retry_seconds` from the
    first wait (an event can overrun that by one timeout). Each attempt is one exchange of the
    transport (`CurlTransport`: no retries, redirects or proxies of its own), classified and
    counted here.
    """

    def __init__(
        self,
        throttle: WorkerThrottle,
        *,
        max_attempts: int,
        max_retry_seconds: float,
        timeout_seconds: float,
        backoff_base_seconds: float,
        backoff_cap_seconds: float,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._throttle = throttle
        self._breaker = breaker
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._transport = CurlTransport(timeout_seconds)

    def __enter__(self) -> WoopraClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def send(
        self,
        request: WoopraRequest,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Outcome:
        """Delivers `request` (with `body` and `headers`, for a POST) or returns its dead
        letter; never raises for HTTP or I/O trouble.

        An open circuit (Woopra or the rate limit service unreachable) gives it up as
        `retries_exhausted`, a stop of the run as `interrupted`; both before an attempt or
        during a backoff wait, never during an attempt.
        """
        deadline = time.monotonic() + self._max_retry_seconds
        delays = iter(
            FuzzedExponentialIntervals(
                initial_delay_secs=self._backoff_base,
                num_retries=self._max_attempts - 1,
                fuzz=1.0,
                max_delay_secs=self._backoff_cap,
            )
        )
        attempts = throttled = 0
        latencies: list[int] = []
        statuses: list[int | None] = []
        status: int | None = None

        def outcome(
            reason: str | None = None, detail: str = "", circuit_open: str | None = None
        ) -> Outcome:
            letter = (
                None if reason is None else dead_letter(request, reason, detail, status, attempts)
            )
            return Outcome(
                request,
                letter,
                attempts,
                status,
                throttled,
                tuple(latencies),
                circuit_open=circuit_open,
                statuses=tuple(statuses),
            )

        while True:
            if stop_requested():
                return outcome(INTERRUPTED, INTERRUPTED_DETAIL)
            try:
                if self._breaker is not None:
                    self._breaker.check()
                acquired = self._throttle.acquire(deadline)
            except CircuitOpenError as error:
                return outcome(RETRIES_EXHAUSTED, error.detail, error.service)
            if not acquired:
                return outcome(RETRIES_EXHAUSTED, "rate limit wait exceeded the retry time budget")
            if stop_requested() or self._circuit_is_open():
                self._throttle.release()
                continue
            attempts += 1
            sent_at = time.monotonic()
            answer, error = self._attempt(request, body, headers)
            latencies.append(round((time.monotonic() - sent_at) * 1000))
            statuses.append(None if answer is None else answer.status)
            if answer is None:
                status = retry_after = None
                detail = error.describe()
                self._report_to_circuit(reachable=False)
                if not error.retryable:
                    return outcome(RETRIES_EXHAUSTED, detail)
            else:
                status = answer.status
                self._report_to_circuit(reachable=status < 500)
                detail = f"HTTP {status}"
                retry_after = answer.retry_after
                if status == 429:
                    throttled += 1
                    self._throttle.throttled(retry_after)
                else:
                    self._throttle.accepted()
                if 200 <= status < 300:
                    return outcome()
                if not is_retryable(status):
                    return outcome(HTTP_4XX, detail)
            _LOGGER.debug("Attempt %d for %s: %s", attempts, request.message_id, detail)
            delay = next(delays, None)
            if delay is None:
                return outcome(RETRIES_EXHAUSTED, detail)
            delay = max(delay, retry_after or 0.0)
            if time.monotonic() + delay >= deadline:
                return outcome(RETRIES_EXHAUSTED, detail)
            self._pause(delay)

    def _circuit_is_open(self) -> bool:
        return self._breaker is not None and self._breaker.is_open

    def _report_to_circuit(self, reachable: bool) -> None:
        """Connection errors and 5xx count against Woopra's circuit; any other answer for it."""
        if self._breaker is None:
            return
        if reachable:
            self._breaker.succeeded()
        else:
            self._breaker.failed()

    def _pause(self, seconds: float) -> None:
        """A backoff wait, cut short by a stop of the run or an open circuit."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0 and not self._circuit_is_open():
            if wait_for_stop(min(left, _PAUSE_SLICE_SECONDS)):
                return

    def _attempt(
        self, request: WoopraRequest, body: bytes | None, headers: dict[str, str] | None
    ) -> tuple[Answer, None] | tuple[None, TransportError]:
        """One HTTP exchange; the in-flight slot taken by the throttle is given back after it."""
        try:
            return self._transport.exchange(request.method, request.url(), body, headers), None
        except TransportError as error:
            return None, error
        finally:
            self._throttle.release()
