"""The worker throttle: pacing, Retry-After pause, client-side throttling, in-flight cap."""

from __future__ import annotations

import threading
import time

import pytest
from apache_beam.io.components.rate_limiter import EnvoyRateLimiter

from transforms.delivery.rate_limit import (
    RLS_DOMAIN,
    AdaptiveRateLimiter,
    EnvoyLimiter,
    WorkerThrottle,
    build_throttle,
    per_worker_rate,
)


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(rate: float, fake: FakeTime, uniform: float = 0.5) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(rate, clock=fake.clock, sleep=fake.sleep, uniform=lambda: uniform)


@pytest.mark.parametrize(
    ("rate_limit", "num_workers", "expected"),
    [(0.0, 4, 0.0), (100.0, 1, 100.0), (100.0, 4, 25.0), (100.0, 0, 100.0)],
)
def test_per_worker_share_of_the_global_cap(rate_limit, num_workers, expected):
    assert per_worker_rate(rate_limit, num_workers) == expected


def test_requests_are_paced_one_slot_apart_without_burst():
    fake = FakeTime()
    paced = limiter(10.0, fake)
    start = fake.now
    grants = []
    for _ in range(5):
        assert paced.acquire(deadline=fake.now + 10)
        grants.append(round(fake.now - start, 6))
    assert grants == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_idle_time_is_not_saved_up_for_a_burst():
    fake = FakeTime()
    paced = limiter(10.0, fake)
    assert paced.acquire(deadline=fake.now + 10)
    fake.now += 5.0
    assert paced.acquire(deadline=fake.now + 10)
    before = fake.now
    assert paced.acquire(deadline=fake.now + 10)
    assert fake.now - before == pytest.approx(0.1)


def test_acquire_gives_up_at_once_when_the_next_slot_is_past_the_deadline():
    fake = FakeTime()
    paced = limiter(1.0, fake)
    assert paced.acquire(deadline=fake.now + 10)
    assert not paced.acquire(deadline=fake.now + 0.5)
    assert fake.slept == []
    # The refused caller took no slot: the next one still gets the slot one second on.
    assert paced.acquire(deadline=fake.now + 10)
    assert sum(fake.slept) == pytest.approx(1.0)


def test_no_cap_means_no_waiting():
    fake = FakeTime()
    unpaced = limiter(0.0, fake)
    for _ in range(1000):
        assert unpaced.acquire(deadline=fake.now)
    assert fake.slept == []


def test_retry_after_pauses_every_caller_until_its_deadline():
    fake = FakeTime()
    paced = limiter(0.0, fake)
    paused_at = fake.now
    paced.throttled(retry_after=2.5)
    assert paced.paused_until == paused_at + 2.5
    assert paced.acquire(deadline=fake.now + 10)
    assert fake.now == pytest.approx(paused_at + 2.5)
    assert max(fake.slept) <= 1.0  # waits in bounded slices


def test_a_pause_past_the_deadline_fails_fast():
    fake = FakeTime()
    paced = limiter(0.0, fake)
    paced.throttled(retry_after=60)
    assert not paced.acquire(deadline=fake.now + 5)
    assert fake.slept == []


def test_a_later_retry_after_never_shortens_the_pause():
    fake = FakeTime()
    paced = limiter(0.0, fake)
    paced.throttled(retry_after=5)
    paced.throttled(retry_after=1)
    assert paced.paused_until == fake.now + 5


def test_sporadic_429s_do_not_throttle():
    fake = FakeTime()
    paced = limiter(0.0, fake)
    for i in range(200):
        if i % 10 == 0:
            paced.throttled(retry_after=None)
        else:
            paced.accepted()
    assert paced.throttle_probability == 0.0


def test_sustained_429s_hold_requests_back_until_they_stop():
    fake = FakeTime()
    held_back = limiter(0.0, fake, uniform=0.5)
    for _ in range(90):
        held_back.throttled(retry_after=None)
    for _ in range(10):
        held_back.accepted()
    # (100 - 1.25 * 10) / 101
    assert held_back.throttle_probability == pytest.approx(87.5 / 101)
    assert not held_back.acquire(deadline=fake.now + 0.5)
    start = fake.now
    assert held_back.acquire(deadline=fake.now + 30)
    # Held back a second at a time until the 429s left the 10-second window.
    assert 9.0 <= fake.now - start <= 11.0
    assert held_back.throttle_probability == 0.0


def test_pacing_holds_across_threads():
    paced = AdaptiveRateLimiter(50.0)
    grants: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(15):
            assert paced.acquire(deadline=time.monotonic() + 10)
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    grants.sort()
    assert len(grants) == 120
    most_in_a_second = max(sum(1 for t in grants if start <= t < start + 1.0) for start in grants)
    assert most_in_a_second <= 51
    assert grants[-1] - grants[0] == pytest.approx(119 / 50, abs=0.1)


def test_in_flight_cap_blocks_until_a_slot_is_released():
    throttle = WorkerThrottle(AdaptiveRateLimiter(0.0), max_in_flight=2)
    assert throttle.acquire(time.monotonic() + 1)
    assert throttle.acquire(time.monotonic() + 1)
    started = time.monotonic()
    assert not throttle.acquire(time.monotonic() + 0.1)
    assert time.monotonic() - started < 1.0
    throttle.release()
    assert throttle.acquire(time.monotonic() + 1)


def test_a_refused_rate_token_gives_the_in_flight_slot_back():
    paced = AdaptiveRateLimiter(0.0)
    paced.throttled(retry_after=60)
    throttle = WorkerThrottle(paced, max_in_flight=1)
    assert not throttle.acquire(time.monotonic() + 0.1)
    assert WorkerThrottle(AdaptiveRateLimiter(0.0), 1).acquire(time.monotonic() + 0.1)
    # The slot is free again: a release now would overflow the bounded semaphore.
    with pytest.raises(ValueError, match="released too many times"):
        throttle.release()


def test_a_failing_limiter_gives_the_in_flight_slot_back():
    class Broken(AdaptiveRateLimiter):
        def acquire(self, deadline: float) -> bool:
            raise RuntimeError("limit service unreachable")

    throttle = WorkerThrottle(Broken(0.0), max_in_flight=1)
    with pytest.raises(RuntimeError):
        throttle.acquire(time.monotonic() + 0.1)
    with pytest.raises(ValueError, match="released too many times"):
        throttle.release()


def test_without_a_limit_service_each_worker_paces_to_its_share():
    throttle = build_throttle(rate_limit=120.0, num_workers=4, max_in_flight=8)
    assert isinstance(throttle.limiter, AdaptiveRateLimiter)
    assert throttle.limiter.rate == 30.0
    assert throttle.max_in_flight == 8


def test_a_limit_service_address_chooses_the_envoy_limiter():
    throttle = build_throttle(
        rate_limit=120.0, num_workers=4, max_in_flight=8, rate_limit_service="rls.internal:8081"
    )
    limiter = throttle.limiter
    assert isinstance(limiter, EnvoyLimiter)
    assert isinstance(limiter.envoy, EnvoyRateLimiter)
    assert limiter.envoy.service_address == "rls.internal:8081"
    assert limiter.envoy.domain == RLS_DOMAIN
    assert limiter.envoy.descriptors == [{"destination": "woopra"}]
    assert limiter.envoy.block_until_allowed is False
    # The cap lives in the service; locally only the 429 pause and throttling apply.
    assert limiter.local.rate is None


class StalledTime:
    """A clock the test moves by hand; sleepers really sleep a little so others can run."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(0.005)


def test_spec_10_threads_waking_late_after_a_stall_are_spread_out_not_bunched():
    stalled = StalledTime()
    paced = AdaptiveRateLimiter(10, clock=stalled.clock, sleep=stalled.sleep, uniform=lambda: 1)
    assert paced.acquire(deadline=60)  # takes the slot at 0.0
    granted: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        assert paced.acquire(deadline=60)
        with lock:
            granted.append(stalled.now)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all three have booked the slots at 0.1, 0.2 and 0.3 and sleep
    assert granted == []
    stalled.now = 5.0  # the process stalled: every booked slot is long past
    time.sleep(0.2)
    assert granted == [5.0]  # one goes now; the others book fresh slots instead of bunching
    for now in (5.1, 5.2):
        stalled.now = now
        time.sleep(0.2)
    for thread in threads:
        thread.join(5)
    assert granted == [5.0, 5.1, 5.2]
