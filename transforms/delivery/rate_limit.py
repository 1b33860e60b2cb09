"""Worker-wide throttling for the Woopra sink: a paced rate cap, a 429 pause, an in-flight cap.

One `WorkerThrottle` serves every sending thread of a worker process (the sink shares it across
DoFn instances with `apache_beam.utils.shared.Shared`), so the caps hold per process, not per
thread or per bundle.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

import grpc
from apache_beam.io.components.rate_limiter import EnvoyRateLimiter
from apache_beam.io.components.util import MovingSum

from transforms.core.records import METRICS_NAMESPACE
from transforms.delivery.circuit import CircuitBreaker

# The longest single sleep, so that a new pause is noticed within a second; also how long a
# request held back by client-side throttling waits before it asks again.
_MAX_SLEEP_SECONDS = 1.0
# Client-side throttling: over the last 10 seconds, answers may exceed the accepted ones
# (answers other than 429) by at most this ratio before requests are held back.
_THROTTLE_WINDOW_MS = 10_000
_THROTTLE_BUCKET_MS = 1_000
_OVERLOAD_RATIO = 1.25
# Fewer answers than this in the window cannot tell an overload from chance.
_MIN_ANSWERS = 20

# Envoy rate-limit service: the domain and descriptor the RLS config must define a limit for.
RLS_DOMAIN = "woopra"
RLS_DESCRIPTORS = ({"destination": "woopra"},)


class Limiter(Protocol):
    """What a sending thread needs from a rate limiter; all times are `time.monotonic()`."""

    def acquire(self, deadline: float) -> bool:
        """Blocks until one request may go out; False if that cannot happen before `deadline`."""
        ...

    def accepted(self) -> None:
        """Reports an answer other than 429."""
        ...

    def throttled(self, retry_after: float | None) -> None:
        """Reports a 429, with its Retry-After in seconds."""
        ...


def per_worker_rate(rate_limit: float, num_workers: int) -> float:
    """This worker's share of a global requests-per-second cap (0 = no cap)."""
    if rate_limit <= 0:
        return 0.0
    return rate_limit / max(1, num_workers)


class AdaptiveRateLimiter:
    """Paces requests to a rate, pauses every thread on Retry-After, and backs off on 429s.

    Pacing is GCRA (a token bucket holding at most one token): each caller reserves the next
    free slot, `1 / rate` after the previous one, and sleeps until it, so any 1-second window
    holds at most `rate + 1` requests and the end of a pause brings no burst. Hand-written
    because Beam's limiters are remote (EnvoyRateLimiter) or probabilistic, and urllib3's Retry
    paces one request, not a worker.

    429s slow the sender down twice over. A 429 with Retry-After pauses every thread of the
    worker until that deadline. And client-side throttling (Google SRE book, "Handling
    Overload") holds each request back for a second with the probability
    `max(0, (answers - 1.25 * accepted) / (answers + 1))` over the last 10 seconds, where
    `accepted` counts answers other than 429 (and nothing is held back on fewer than 20
    answers). Sporadic 429s throttle nothing (any share under
    20%), where halving the rate per 429 would collapse it; a sustained overload is brought
    down to about 1.25 times what Woopra accepts, and the brake comes off as the 429s stop.
    Beam's AdaptiveThrottler computes the same formula but over attempts, counting every
    held-back re-ask: with many threads asking before the first answer, that keeps the
    probability near 1 for good, so this counts answers, on Beam's MovingSum.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.rate = rate if rate > 0 else None
        # A thread that wakes later than this past its slot (a stalled process) books a new
        # one: sending on the stale slot would bunch it with the slots after it.
        self._interval = 1 / rate if rate > 0 else math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._uniform = uniform
        self._answers = MovingSum(_THROTTLE_WINDOW_MS, _THROTTLE_BUCKET_MS)
        self._accepted = MovingSum(_THROTTLE_WINDOW_MS, _THROTTLE_BUCKET_MS)

    @property
    def paused_until(self) -> float:
        with self._lock:
            return self._paused_until

    @property
    def throttle_probability(self) -> float:
        """The chance that a request is held back now."""
        with self._lock:
            return self._throttle_probability(_ms(self._clock()))

    def acquire(self, deadline: float) -> bool:
        reserved: float | None = None
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    # A pause voids a reservation: its slot may lie inside the pause.
                    reserved = None
                    wake = self._paused_until
                elif reserved is not None and now - reserved <= self._interval:
                    wake = reserved
                elif self._uniform() < self._throttle_probability(_ms(now)):
                    wake = now + _MAX_SLEEP_SECONDS
                else:
                    reserved = self._reserve(now, deadline)
                    if reserved is None:
                        return False
                    wake = reserved
                if wake <= now:
                    return True
            if wake > deadline:
                return False
            self._sleep(min(wake - now, _MAX_SLEEP_SECONDS))

    def accepted(self) -> None:
        with self._lock:
            now = _ms(self._clock())
            self._answers.add(now, 1)
            self._accepted.add(now, 1)

    def throttled(self, retry_after: float | None) -> None:
        with self._lock:
            now = self._clock()
            self._answers.add(_ms(now), 1)
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)

    def _throttle_probability(self, now_ms: int) -> float:
        answers = self._answers.sum(now_ms)
        if answers < _MIN_ANSWERS:
            return 0.0
        excess = answers - _OVERLOAD_RATIO * self._accepted.sum(now_ms)
        return max(0.0, excess / (answers + 1))

    def _reserve(self, now: float, deadline: float) -> float | None:
        """Takes the next free send slot, unless it lies beyond `deadline`."""
        if self.rate is None:
            return now
        slot = max(self._next_slot, now)
        if slot > deadline:
            return None
        self._next_slot = slot + 1.0 / self.rate
        return slot


_MIN_REFUSAL_WAIT_SECONDS = 0.05


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class EnvoyLimiter:
    """A global cap from an Envoy rate-limit service, with the local 429 pause and slow-down.

    Non-blocking mode with our own loop, because `block_until_allowed=True` waits without bound.
    With a `breaker`, the service must answer within its time when the limiter is made, and
    a failed call (Beam's client tries five times, 10 s apart) counts against the circuit;
    while it is open, `acquire` raises CircuitOpenError.
    """

    def __init__(
        self,
        service_address: str,
        local: AdaptiveRateLimiter,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.envoy = EnvoyRateLimiter(
            service_address=service_address,
            domain=RLS_DOMAIN,
            descriptors=[dict(d) for d in RLS_DESCRIPTORS],
            block_until_allowed=False,
            retries=0,
            # Beam's default namespace "" is rejected by its own Metrics.counter().
            namespace=METRICS_NAMESPACE,
        )
        self.local = local
        self.breaker = breaker
        if breaker is not None and not _answers(service_address, breaker.open_after_seconds):
            breaker.trip()

    def acquire(self, deadline: float) -> bool:
        if self.breaker is not None:
            self.breaker.check()
        if not self.local.acquire(deadline):
            return False
        # A refusal usually sleeps until the RLS window resets; one that does not (no reset
        # time given) must not turn this into a busy loop against the service.
        while not self._allow():
            if time.monotonic() + _MIN_REFUSAL_WAIT_SECONDS >= deadline:
                return False
            time.sleep(_MIN_REFUSAL_WAIT_SECONDS)
        return True

    def _allow(self) -> bool:
        try:
            allowed = self.envoy.allow()
        except grpc.RpcError:
            if self.breaker is None:
                raise
            self.breaker.failed()
            self.breaker.check()
            return False
        if self.breaker is not None:
            self.breaker.succeeded()
        return allowed

    def accepted(self) -> None:
        self.local.accepted()

    def throttled(self, retry_after: float | None) -> None:
        self.local.throttled(retry_after)


def _answers(service_address: str, timeout_seconds: float) -> bool:
    """Whether a gRPC connection to the service can be made within the time."""
    channel = grpc.insecure_channel(service_address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_seconds)
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
    return True


class HeldBackClock:
    """Wall time during which at least one thread was waiting, however many waited at once.

    Summing each request's wait instead would count one second of a 32-thread pause as 32.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._since = 0.0
        self._untaken = 0.0

    def __enter__(self) -> HeldBackClock:
        with self._lock:
            if self._waiting == 0:
                self._since = self._clock()
            self._waiting += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self._untaken += self._clock() - self._since

    def take_seconds(self) -> float:
        """The held-back time not taken before, a wait still going on included up to now."""
        with self._lock:
            now = self._clock()
            taken = self._untaken
            if self._waiting:
                taken += now - self._since
                self._since = now
            self._untaken = 0.0
        return taken


class WorkerThrottle:
    """Everything a sending thread waits on before one attempt: an in-flight slot, then the rate.

    The slot comes first so that threads released together by the in-flight cap still leave
    at the paced rate. `held_back` measures the wall time threads spent waiting on the rate
    cap and 429 pauses (not on the in-flight cap, which is concurrency, not throttling).
    """

    def __init__(self, limiter: Limiter, max_in_flight: int) -> None:
        self.limiter = limiter
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self.held_back = HeldBackClock()

    def acquire(self, deadline: float) -> bool:
        """Takes an in-flight slot and a rate token; holds nothing when False or raising."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        granted = False
        try:
            with self.held_back:
                granted = self.limiter.acquire(deadline)
            return granted
        finally:
            if not granted:
                self._slots.release()

    def release(self) -> None:
        """Gives back the in-flight slot once the attempt has finished."""
        self._slots.release()

    def accepted(self) -> None:
        self.limiter.accepted()

    def throttled(self, retry_after: float | None) -> None:
        self.limiter.throttled(retry_after)


def build_throttle(
    *,
    rate_limit: float,
    num_workers: int,
    max_in_flight: int,
    rate_limit_service: str | None = None,
    rate_limit_service_breaker: CircuitBreaker | None = None,
) -> WorkerThrottle:
    """The throttle for one worker process.

    With an Envoy rate-limit service the global cap lives in the service's config (domain
    `woopra`, descriptor `destination=woopra`) and `rate_limit` is not applied locally;
    without one, each worker paces to its share `rate_limit / num_workers`.
    """
    limiter: Limiter
    if rate_limit_service:
        limiter = EnvoyLimiter(
            rate_limit_service, AdaptiveRateLimiter(0.0), rate_limit_service_breaker
        )
    else:
        limiter = AdaptiveRateLimiter(per_worker_rate(rate_limit, num_workers))
    return WorkerThrottle(limiter, max_in_flight)
