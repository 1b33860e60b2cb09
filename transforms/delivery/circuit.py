"""Fail fast: a circuit breaker that stops the sink once a service has been unreachable.

Hand-written rather than pybreaker: pybreaker opens after a number of consecutive failures,
where the rule here is time (every call failed for `open_after_seconds`, however many calls
that was at the rate allowed), and its half-open state admits one trial call from any thread,
while a batch run wants the circuit to stay open for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

_LOGGER = logging.getLogger(__name__)

WOOPRA = "woopra"
RATE_LIMIT_SERVICE = "rate_limit_service"
# What the circuit guards, in the order the report lists them.
UNREACHABLE_SERVICES = (WOOPRA, RATE_LIMIT_SERVICE)
_SERVICE_NAMES = {WOOPRA: "Woopra", RATE_LIMIT_SERVICE: "the rate limit service"}


def service_name(service: str) -> str:
    """The service as a sentence names it."""
    return _SERVICE_NAMES.get(service, service)


def circuit_open_metric(service: str) -> str:
    """The counter of requests given up because the service's circuit was open."""
    return "circuit_open_" + service


class CircuitOpenError(Exception):
    """A call was refused because its service's circuit is open."""

    def __init__(self, service: str, open_after_seconds: float) -> None:
        self.service = service
        self.detail = (
            f"circuit open: {service_name(service)} unreachable for {open_after_seconds:g} s"
        )
        super().__init__(self.detail)


class CircuitBreaker:
    """Opens once every call to `service` has failed for `open_after_seconds`.

    A failure is a connection error or a 5xx (what the caller reports as `failed()`); any
    other answer is `succeeded()` and closes the circuit. Open, it refuses every call: for
    good when `retry_after_seconds` is None (a batch run stops trying), else it lets calls
    through again that long after opening, and the first failure opens it again at once
    (a streaming run tries again from time to time).
    """

    def __init__(
        self,
        service: str,
        open_after_seconds: float,
        retry_after_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.open_after_seconds = open_after_seconds
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return False
            return self._retry_after is None or self._clock() - self._opened_at < self._retry_after

    def check(self) -> None:
        """Raises CircuitOpenError while the circuit is open."""
        if self.is_open:
            raise CircuitOpenError(self.service, self.open_after_seconds)

    def succeeded(self) -> None:
        with self._lock:
            self._failing_since = self._opened_at = None

    def failed(self) -> None:
        with self._lock:
            now = self._clock()
            if self._failing_since is None:
                self._failing_since = now
            elif now - self._failing_since >= self.open_after_seconds:
                self._open(now)

    def trip(self) -> None:
        """Opens the circuit now: the service was found unreachable for the whole time."""
        with self._lock:
            self._failing_since = self._failing_since or self._clock()
            self._open(self._clock())

    def _open(self, now: float) -> None:
        if self._opened_at is None:
            _LOGGER.error(
                "%s has been unreachable for %g s: the circuit is open, requests not sent "
                "are dead-lettered",
                service_name(self.service).capitalize(),
                self.open_after_seconds,
            )
        self._opened_at = now
