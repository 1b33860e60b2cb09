"""When and how the local streaming runner looks for due timers: every 0.5 s, through an
index of each key's soonest timer."""

from __future__ import annotations

import contextlib
import heapq
import time
import weakref
from collections.abc import Iterator

from apache_beam.runners.direct import evaluation_context, executor, watermark_manager
from apache_beam.runners.direct.util import TimerFiring
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import InMemoryUnmergedState
from apache_beam.utils.timestamp import Timestamp

from pipeline.local_runner.run import LocalStreamingRun

# How often the runner looks for due timers: a flush comes up to this long after it is due.
_TIMER_SCAN_INTERVAL_SECONDS = 0.5


@contextlib.contextmanager
def spaced_timer_scans(run: LocalStreamingRun) -> Iterator[None]:
    """Look for due timers at most every 0.5 s instead of between any two bundles.

    Each look walked every key's timers (one per device ever seen), which with thousands of
    devices cost more than the bundles in between (now a look reads only due keys, see
    `indexed_timer_looks`); and all timers found in one look fire as one bundle. The sink's
    bundle keeps at most one request per device in flight, so bundles of the few devices
    that came due within 50 ms left most of its lanes idle and held the runner's one thread
    (and the next pull) for each; looks half a second apart send every device due meanwhile
    together. While draining it looks every time, so that the end-of-input timers that flush
    the buffers go at once; and before the runner decides that the run has ended (nothing in
    progress), it always looks, since a timer due then would otherwise never fire and the run
    would end as a stall.
    """
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    original = monitor.__dict__["_fire_timers"]
    original_should_shutdown = monitor.__dict__["_should_shutdown"]
    next_scan = [0.0]

    def _fire_timers(self) -> bool:
        now = time.monotonic()
        if now < next_scan[0] and not run.draining:
            return False
        next_scan[0] = now + _TIMER_SCAN_INTERVAL_SECONDS
        return original(self)

    def _should_shutdown(self) -> bool:
        if not self._is_executing() and original(self):
            return False
        return original_should_shutdown(self)

    monitor._fire_timers = _fire_timers
    monitor._should_shutdown = _should_shutdown
    try:
        yield
    finally:
        monitor._fire_timers = original
        monitor._should_shutdown = original_should_shutdown


_REAL_TIME, _EVENT_TIME = TimeDomain.REAL_TIME, TimeDomain.WATERMARK


def _whole_micros(timestamp: object) -> int | None:
    """A timer's time in microseconds; None for one that is not a `Timestamp` (a trigger's
    float) or is finer than a microsecond."""
    if not isinstance(timestamp, Timestamp) or timestamp.precision() > Timestamp.MICROS_PRECISION:
        return None
    return timestamp.micros


class TimerIndex:
    """One step's keys by their soonest timer in each time domain, a heap per domain.

    An entry can be stale (its key's timers changed since), but a key's soonest timer is
    never earlier than its entry, so every key with a due timer has a due entry.
    """

    def __init__(self, keyed_states: dict) -> None:
        self._heaps: dict[object, list[tuple[int, bytes]]] = {_REAL_TIME: [], _EVENT_TIME: []}
        self._entries: dict[tuple[bytes, object], int] = {}
        self.with_realtime_timers: set[bytes] = set()
        self.indexable = True
        for key, state in list(keyed_states.items()):
            self.note(key, state)

    def note(self, key: bytes, state: InMemoryUnmergedState) -> None:
        """Indexes the key's timers as they are now: after a commit, or a look at the key."""
        soonest: dict[object, int] = {}
        for timers in list(state.timers.values()):
            for (_, domain, _), timestamp in list(timers.items()):
                micros = _whole_micros(timestamp)
                if micros is None or domain not in self._heaps:
                    self.indexable = False
                    return
                soonest[domain] = min(micros, soonest.get(domain, micros))
        if _REAL_TIME in soonest:
            self.with_realtime_timers.add(key)
        else:
            self.with_realtime_timers.discard(key)
        for domain, micros in soonest.items():
            entry = self._entries.get((key, domain))
            if entry is None or micros < entry:
                self._entries[(key, domain)] = micros
                heapq.heappush(self._heaps[domain], (micros, key))

    def take_due_keys(self, now: int, watermark: int) -> set[bytes]:
        """The keys whose entry is due by `now` (processing time) or `watermark` (event time);
        their entries leave the index until the keys are noted again."""
        keys = set()
        for domain, limit in ((_REAL_TIME, now), (_EVENT_TIME, watermark)):
            heap = self._heaps[domain]
            while heap and heap[0][0] <= limit:
                micros, key = heapq.heappop(heap)
                if self._entries.get((key, domain)) == micros:
                    del self._entries[(key, domain)]
                    keys.add(key)
        return keys


@contextlib.contextmanager
def indexed_timer_looks() -> Iterator[None]:
    """Find a step's due timers among the keys whose soonest timer is due, not among all keys.

    The runner's own look goes through every timer of every key it ever held, and a device
    keeps its state (with its expiry timer) for the identity TTL: even comparing plain
    microseconds, a look took 7 ms at 2,500 devices and 340 ms at 100,000, twice a second.
    Here each step keeps a `TimerIndex`, noted for every key a bundle commits, and a look
    reads only the keys whose entry is due, then notes them again. It finds the timers the
    runner's own look finds: every due timer of those keys, fired or not (a fired timer
    leaves its key's state when its bundle commits). A timer whose time is not a `Timestamp`
    to the microsecond sends the step back to the runner's own look.
    """
    watermarks = watermark_manager._TransformWatermarks
    original = watermarks.__dict__["extract_transform_timers"]
    context = evaluation_context.EvaluationContext
    original_handle_result = context.__dict__["handle_result"]
    indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def extract_transform_timers(self) -> tuple[list[TimerFiring], bool]:
        with self._lock:
            found = indexed_look(self)
        # The runner's own look takes the same lock, which is not re-entrant.
        return original(self) if found is None else found

    def indexed_look(self) -> tuple[list[TimerFiring], bool] | None:
        """The due timers from the step's index; None once a timer cannot be indexed."""
        index = indexes.get(self)
        if index is None:
            index = indexes[self] = TimerIndex(self._keyed_states)
        if not index.indexable:
            return None
        limits = {
            _REAL_TIME: Timestamp.of(self._clock.time()).micros,
            _EVENT_TIME: self._input_watermark.micros,
        }
        fired: list[TimerFiring] = []
        for key in index.take_due_keys(limits[_REAL_TIME], limits[_EVENT_TIME]):
            state = self._keyed_states[key]
            index.note(key, state)
            if not index.indexable:
                return None
            for window, timers in list(state.timers.items()):
                for (name, domain, tag), timestamp in list(timers.items()):
                    if timestamp.micros <= limits[domain]:
                        fired.append(TimerFiring(key, window, name, domain, timestamp, tag))
        self._fired_timers.update(fired)
        return fired, bool(index.with_realtime_timers)

    def handle_result(self, completed_bundle, completed_timers, result):
        committed = original_handle_result(self, completed_bundle, completed_timers, result)
        if result.partial_keyed_state:
            step = self._watermark_manager.get_watermarks(result.transform)
            keyed_states = self._transform_keyed_states[result.transform]
            with step._lock:
                index = indexes.get(step)
                if index is not None:
                    for key in result.partial_keyed_state:
                        index.note(key, keyed_states[key])
        return committed

    watermarks.extract_transform_timers = extract_transform_timers
    context.handle_result = handle_result
    try:
        yield
    finally:
        watermarks.extract_transform_timers = original
        context.handle_result = original_handle_result
