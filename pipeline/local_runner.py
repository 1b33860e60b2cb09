"""Fixes for Beam 2.77's local runners, used only there.

Faults of the local streaming runner (BundleBasedDirectRunner) make a local streaming run
wrong or sluggish, and none has a public switch, so they are patched for the duration of a
run:

* it reads Pub/Sub with a 30 s long poll on its only thread, so while a subscription is
  idle nothing else runs (timers, the watermark, cancel) for up to 30 s at a time;
* it pulls at most 10 messages per bundle, and every bundle pays the whole per-bundle cost
  of every stage (the runner pickles, sets up and tears down each DoFn per bundle), which
  capped a run below 100 events/s;
* it inspects every DoFn's method signatures again for each bundle (to find state and timer
  specs), which took about a third of a local run's time;
* between any two bundles it looks through the timers of every key it ever held, so the
  more devices a run has seen (within the identity TTL) the slower it gets;
* it keeps the metrics container of each step's first bundle, so counters stop growing
  after the first bundle and the run report undercounts;
* it copies a key's state with `copy.deepcopy` each time a bundle first touches the key,
  timers included, which was a tenth of a busy run's time;
* it turns every pulled Pub/Sub message into proto-plus wrappers and a `datetime` before it
  keeps only the payload and the publish time, another tenth; and for every pull it parses
  the run's flags again to find the subscription's project;
* it runs every step on every bundle of its input, empty ones too, and every bundle of a
  step makes one for each of its outputs, so a branch that rarely gets anything (the dead
  letters) ran on every bundle;
* it works on one thread, and pulls again only once every step is idle, so while the sink
  waits for Woopra's answers nothing is pulled, buffered or flushed: under a steady stream
  that thread was busy nine tenths of the time, almost half of it waiting in the sink.

It also has no drain, only cancel, which drops whatever was pulled (the runner acknowledges
messages as it pulls them): `LocalStreamingRun.drain()` stops pulling and lets the run
finish as Dataflow's drain does.

The local batch runner (FnApiRunner) holds every value of a GroupByKey as its own small
block until the group is complete, then encodes them all into one stream and frees them;
the C allocator keeps the freed blocks (they lie among blocks still in use), so the run's
memory stays at the blocks' size on top of the streams that follow. `returned_shuffle_memory`
hands the free pages back to the system once each shuffle is encoded (glibc `malloc_trim`;
elsewhere it does nothing).

Dataflow and other runners never touch this code. Beam is pinned below 2.78 for it.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import gc
import heapq
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator

from apache_beam.internal import pickler
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.runners.direct import (
    evaluation_context,
    executor,
    transform_evaluator,
    watermark_manager,
)
from apache_beam.runners.direct.util import TimerFiring, TransformResult
from apache_beam.runners.portability.fn_api_runner.execution import GroupingBuffer
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import core, userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import InMemoryUnmergedState
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as google_exceptions
from google.pubsub_v1.types import PullResponse

# Messages per local Pub/Sub pull, i.e. per bundle: about a second of a busy stream, large
# enough that the per-bundle cost of the stages is small beside the per-event cost.
DEFAULT_PULL_MAX_MESSAGES = 1000


class LocalStreamingRun:
    """A handle on the patched runner: ask it to drain."""

    def __init__(self) -> None:
        self._draining = threading.Event()

    def drain(self) -> None:
        """Stop pulling; the run then ends once everything pulled has gone through.

        The read reports its input complete (its watermark jumps to the end of time), so as
        on Dataflow buffered events are flushed by their end-of-input timers, windows close,
        the sink sends or dead-letters what it holds, and `wait_until_finish()` returns.
        """
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()


@contextlib.contextmanager
def _short_pubsub_pulls(
    pull_timeout: float = 1.5,
    max_messages: int = DEFAULT_PULL_MAX_MESSAGES,
    idle_wait: float = 0.1,
) -> Iterator[None]:
    """Make the DirectRunner's Pub/Sub pulls short and wide while the block is active.

    The runner reads Pub/Sub with ``pull(max_messages=10, timeout=30)`` on its single
    worker thread, and the emulator holds an idle pull until ~1 s before the
    deadline. So while the subscription is idle nothing else runs for ~29 s:
    processing-time timers, the watermark (event-time timers), GroupIntoBatches
    flushes and ``cancel()`` all wait for the pull. And ten messages a pull make a burst
    trickle in over many seconds, a bundle each, so a device's events published together
    reach its buffer (transforms/identity.py) after it was sent. Here a pull returns at
    once, and an empty one waits ``idle_wait`` before the runner asks again;
    ``pull_timeout`` bounds each call. One pull returns at most 100 messages from the
    emulator (1,000 from Pub/Sub), so more pulls fill the bundle up to ``max_messages``
    while messages are there.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"]
    original_read = evaluator.__dict__["_read_from_pubsub"]

    class _ShortPullClient:
        def __init__(self, client) -> None:
            self._client = client

        def pull(self, subscription: str, **kwargs) -> PullResponse:
            response = PullResponse.pb()()
            response.received_messages.extend(self.pull_raw(subscription))
            return PullResponse.wrap(response)

        def pull_raw(self, subscription: str) -> list:
            """Up to `max_messages` received messages as plain protobuf messages."""
            received: list = []
            while len(received) < max_messages:
                more = self._pull(subscription, max_messages - len(received))
                if not more:
                    break
                received += more
            if not received:
                time.sleep(idle_wait)
            return received

        def _pull(self, subscription: str, max_messages: int) -> list:
            request = {
                "subscription": subscription,
                "max_messages": max_messages,
                "return_immediately": True,
            }
            try:
                response = self._client.pull(request=request, timeout=pull_timeout)
            except google_exceptions.DeadlineExceeded:
                return []
            return list(PullResponse.pb(response).received_messages)

        def __getattr__(self, name: str):
            return getattr(self._client, name)

    def _get_subscriber_client(cls, transform):
        return _ShortPullClient(original.__func__(cls, transform))

    def _read_from_pubsub(self, timestamp_attribute):
        """The payloads and publish times, read from the protobuf messages directly.

        The runner keeps only these unless the read asks for attributes or a timestamp
        attribute, which go the runner's own way.
        """
        if timestamp_attribute or self.source.with_attributes:
            return original_read(self, timestamp_attribute)
        client = self._get_subscriber_client(self._applied_ptransform)
        received = client.pull_raw(self._sub_name)
        if received:
            ack_ids = [message.ack_id for message in received]
            client.acknowledge(subscription=self._sub_name, ack_ids=ack_ids)
        return [
            (_publish_timestamp(message.message), PubsubMessage(message.message.data, None))
            for message in received
        ]

    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    evaluator._read_from_pubsub = _read_from_pubsub
    try:
        yield
    finally:
        evaluator._get_subscriber_client = original
        evaluator._read_from_pubsub = original_read


@contextlib.contextmanager
def _subscriptions_found_once() -> Iterator[None]:
    """Work out a Pub/Sub read's subscription once a run, not for every pull.

    The runner makes a new read evaluator for every pull, and each one looks its project up
    with `pipeline_options.view_as(GoogleCloudOptions)`, which parses the run's flags again:
    about 1.7 ms a pull, a third of an idle run's CPU (it pulls ten times a second). The
    first evaluator of a read does it the runner's way; later ones take its subscription.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["__init__"]
    subscriptions: dict[object, str] = {}

    def init_once_looked_up(
        self, evaluation_context, applied_ptransform, input_bundle, side_inputs
    ) -> None:
        subscription = subscriptions.get(applied_ptransform)
        if subscription is None:
            original(self, evaluation_context, applied_ptransform, input_bundle, side_inputs)
            subscriptions[applied_ptransform] = self._sub_name
            return
        transform_evaluator._TransformEvaluator.__init__(
            self, evaluation_context, applied_ptransform, input_bundle, side_inputs
        )
        self.source = applied_ptransform.transform._source
        self._sub_name = subscription

    evaluator.__init__ = init_once_looked_up
    try:
        yield
    finally:
        evaluator.__init__ = original


def _publish_timestamp(message) -> Timestamp:
    """A protobuf PubsubMessage's publish time, to the microsecond as the runner takes it."""
    publish_time = message.publish_time
    return Timestamp(micros=publish_time.seconds * 1_000_000 + publish_time.nanos // 1000)


@contextlib.contextmanager
def _cheap_state_copies() -> Iterator[None]:
    """Copy a key's state for a bundle without `copy.deepcopy`.

    The runner copies a key's whole state when a bundle first touches it, so that a failed
    bundle leaves no trace. Timers are `{window: {(name, domain, tag): Timestamp}}`, all
    immutable but the dicts, so copying the dicts is a deep copy; state lists are copied one
    level deep as before, and anything in the global state still goes through deepcopy.
    """
    original = InMemoryUnmergedState.__dict__["copy"]

    def copied(self):
        clone = InMemoryUnmergedState(defensive_copy=self.defensive_copy)
        for window, timers in self.timers.items():
            clone.timers[window] = dict(timers)
        if self.global_state:
            clone.global_state = copy.deepcopy(self.global_state)
        for window, states in self.state.items():
            cloned = clone.state[window]
            for tag, value in states.items():
                cloned[tag] = copy.copy(value)
        return clone

    InMemoryUnmergedState.copy = copied
    try:
        yield
    finally:
        InMemoryUnmergedState.copy = original


def _specs_cache_key(dofn) -> object | None:
    """What a DoFn's state and timer specs depend on: its class, or a wrapped function's code.

    None when that is not enough to tell (a wrapped callable with default arguments).
    """
    if not isinstance(dofn, core.CallableWrapperDoFn):
        return type(dofn)
    code = getattr(dofn._fn, "__code__", None)
    if code is None or dofn._fn.__defaults__ or dofn._fn.__kwdefaults__:
        return None
    return type(dofn), code


@contextlib.contextmanager
def _cached_dofn_specs() -> Iterator[None]:
    """Inspect each DoFn class once for its state and timer specs, not once per bundle.

    The specs are declared on the class (parameter defaults of its methods), so every copy
    of a DoFn has the same; the runner copies each DoFn per bundle and asks again each time.
    """
    original = userstate.get_dofn_specs
    cache: dict[object, tuple] = {}

    def get_dofn_specs(dofn):
        key = _specs_cache_key(dofn)
        if key is None:
            return original(dofn)
        specs = cache.get(key)
        if specs is None:
            specs = cache[key] = original(dofn)
        return specs

    userstate.get_dofn_specs = get_dofn_specs
    transform_evaluator.get_dofn_specs = get_dofn_specs
    try:
        yield
    finally:
        userstate.get_dofn_specs = original
        transform_evaluator.get_dofn_specs = original


@contextlib.contextmanager
def _dofn_copies_from_one_pickle() -> Iterator[None]:
    """Inspect each DoFn method's arguments once, and pickle each DoFn once per run.

    For every bundle the runner makes a fresh copy of the step's DoFn by pickling and
    unpickling it, and inspects the signature of each of its methods again: with a bundle
    per stage for every flush of device buffers, that was a tenth of a busy run's time. The
    step's DoFn does not change during a run, so each bundle's copy is now unpickled from
    the same bytes, and a method's arguments are known by its class (or wrapped function)
    once looked at; a method set on the instance itself is always looked at.
    """
    original_arguments = core.get_function_arguments
    arguments: dict[tuple[object, str], tuple[list, list]] = {}
    pickled: dict[int, tuple[object, bytes]] = {}

    def get_function_arguments(obj, func):
        key = _specs_cache_key(obj) if isinstance(obj, core.DoFn) else None
        if key is None or func in getattr(obj, "__dict__", {}):
            return original_arguments(obj, func)
        known = arguments.get((key, func))
        if known is None:
            known = arguments[(key, func)] = original_arguments(obj, func)
        names, defaults = known
        return list(names), list(defaults)

    def roundtrip(dofn):
        entry = pickled.get(id(dofn))
        if entry is None or entry[0] is not dofn:
            entry = pickled[id(dofn)] = (dofn, pickler.dumps(dofn))
        return pickler.loads(entry[1])

    core.get_function_arguments = get_function_arguments
    transform_evaluator.pickler = types.SimpleNamespace(roundtrip=roundtrip)
    try:
        yield
    finally:
        core.get_function_arguments = original_arguments
        transform_evaluator.pickler = pickler


# How often the runner looks for due timers: a flush comes up to this long after it is due.
_TIMER_SCAN_INTERVAL_SECONDS = 0.5


@contextlib.contextmanager
def _spaced_timer_scans(run: LocalStreamingRun) -> Iterator[None]:
    """Look for due timers at most every 0.5 s instead of between any two bundles.

    Each look walked every key's timers (one per device ever seen), which with thousands of
    devices cost more than the bundles in between (now a look reads only due keys, see
    `_indexed_timer_looks`); and all timers found in one look fire as one bundle. The sink's
    bundle keeps at most one request per device in flight, so bundles of the few devices
    that came due within 50 ms left most of its lanes idle and
    held the runner's one thread (and the next pull) for each; looks half a second apart
    send every device due meanwhile together. While draining it looks every time, so that
    the end-of-input timers that flush the buffers go at once; and before the runner decides
    that the run has ended (nothing in progress), it always looks, since a timer due then
    would otherwise never fire and the run would end as a stall.
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


class _TimerIndex:
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
def _indexed_timer_looks() -> Iterator[None]:
    """Find a step's due timers among the keys whose soonest timer is due, not among all keys.

    The runner's own look goes through every timer of every key it ever held, and a device
    keeps its state (with its expiry timer) for the identity TTL: even comparing plain
    microseconds, a look took 7 ms at 2,500 devices and 340 ms at 100,000, twice a second.
    Here each step keeps a `_TimerIndex`, noted for every key a bundle commits, and a look
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
            index = indexes[self] = _TimerIndex(self._keyed_states)
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


# Allocations between two young collections (Python's default is 700), and young collections
# between two of the middle generation (default 10) and of the oldest (default 10).
_GC_THRESHOLDS = (20_000, 20, 20)


@contextlib.contextmanager
def _long_lived_heap_frozen() -> Iterator[None]:
    """Keep the garbage collector off what the run holds for good, and run it less often.

    A streaming run holds a large heap (Beam, gRPC, the pipeline) and makes short-lived
    objects per event and per key; each full collection walked the whole heap, about an
    eighth of a busy run's time. What exists when the run starts is frozen (never walked
    again; it lives as long as the process anyway), and collections run less often.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextlib.contextmanager
def _per_bundle_metrics() -> Iterator[None]:
    """Make ``Metrics`` updates count after the first bundle in the direct runner.

    The runner's worker thread keeps one StateSampler whose ``scoped_state`` caches
    the ScopedState (and with it the MetricsContainer) of the first bundle of each
    step, so in a streaming pipeline counters/distributions stop growing after the
    first bundle. This drops the stale cached state whenever a new container is
    passed in.
    """
    sampler_cls = statesampler.StateSampler
    original = sampler_cls.__dict__["scoped_state"]

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        if metrics_container is not None:
            state = original(self, name_context, state_name, io_target, metrics_container)
            if state.metrics_container is metrics_container:
                return state
            for key, cached in list(self._states_by_name.items()):
                if cached is state:
                    del self._states_by_name[key]
        return original(self, name_context, state_name, io_target, metrics_container)

    sampler_cls.scoped_state = scoped_state
    try:
        yield
    finally:
        sampler_cls.scoped_state = original


@contextlib.contextmanager
def _no_steps_for_empty_bundles() -> Iterator[None]:
    """Give no step a bundle that holds nothing.

    A bundle of a step makes one bundle for each of the step's outputs, empty or not, and the
    runner runs every consumer on each of them: the dead-letter branch's nine steps ran on
    every bundle of the steps that can dead-letter, about a tenth of a steady run's CPU, for
    nothing. Beam's own watermark manager already leaves empty bundles out ("They do not
    impact watermarks and should not trigger downstream execution"). Fired timers travel in
    empty bundles too, but are scheduled directly, not as an output's consumers.
    """
    parallel = executor._ExecutorServiceParallelExecutor
    original = parallel.__dict__["schedule_consumers"]

    def schedule_consumers(self, committed_bundle) -> None:
        if committed_bundle.has_elements():
            original(self, committed_bundle)

    parallel.schedule_consumers = schedule_consumers
    try:
        yield
    finally:
        parallel.schedule_consumers = original


@contextlib.contextmanager
def _drainable_pubsub_reads(run: LocalStreamingRun) -> Iterator[None]:
    """Once `run.drain()` is called, the Pub/Sub read pulls no more and reports itself done.

    The read normally reschedules itself with a watermark hold at the current time; a read
    that returns no unprocessed work and no hold lets its watermark reach the end of time,
    which is how the runner finishes a bounded source.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["finish_bundle"]

    def finish_bundle(self) -> TransformResult:
        if run.draining:
            return TransformResult(self, [], [], None, {None: None})
        return original(self)

    evaluator.finish_bundle = finish_bundle
    try:
        yield
    finally:
        evaluator.finish_bundle = original


@contextlib.contextmanager
def local_streaming_fixes(
    pull_max_messages: int = DEFAULT_PULL_MAX_MESSAGES,
) -> Iterator[LocalStreamingRun]:
    """All fixes, for as long as the block runs; yields the handle that drains the run."""
    run = LocalStreamingRun()
    with (
        _short_pubsub_pulls(max_messages=pull_max_messages),
        _subscriptions_found_once(),
        _drainable_pubsub_reads(run),
        _cached_dofn_specs(),
        _dofn_copies_from_one_pickle(),
        _spaced_timer_scans(run),
        _per_bundle_metrics(),
        _cheap_state_copies(),
        _indexed_timer_looks(),
        _long_lived_heap_frozen(),
        _pipelined_steps(),
        _no_steps_for_empty_bundles(),
    ):
        yield run


# Executor threads: while one waits in a step (the sink's finish_bundle waits for Woopra's
# answers), the other carries the steps before it on; the monitor task takes turns on them.
_EXECUTOR_THREADS = 2
# The longest the monitor idles, when no step has reported, before it looks again.
_MONITOR_IDLE_SECONDS = 0.05


class _WakeUp(executor._ExecutorService.CallableTask):
    """A task that only wakes an idle executor thread, so that it sees a shutdown at once."""

    def call(self, state_sampler) -> None:
        pass


@contextlib.contextmanager
def _pipelined_steps(threads: int = _EXECUTOR_THREADS) -> Iterator[None]:
    """Let the steps of a run work at the same time, each on its bundles one at a time, in order.

    `threads` executor threads share the steps. Every step takes its bundles one at a time
    and in the order they came (Beam does that only for stateful steps, and takes the newest
    first), so each device's events keep their order from step to step. The read pulls again
    as soon as at most one bundle is in progress or waiting anywhere, so a run holds at most
    about one pull beyond the bundle being sent, which a drain still delivers.
    """
    parallel = executor._ExecutorServiceParallelExecutor
    serial = executor._SerialEvaluationState
    registry = transform_evaluator.TransformEvaluatorRegistry
    monitor = parallel._MonitorTask
    updates = parallel._TypedUpdateQueue
    original_threads = parallel.__dict__["NUM_WORKERS"]
    original_serial_init = serial.__dict__["__init__"]
    original_next_work = serial.__dict__["_update_currently_evaluating"]
    original_serially = registry.__dict__["should_execute_serially"]
    original_call = monitor.__dict__["call"]
    original_fire_timers = monitor.__dict__["_fire_timers"]
    original_should_shutdown = monitor.__dict__["_should_shutdown"]
    original_add_work = monitor.__dict__["_add_work_if_necessary"]
    original_offer = updates.__dict__["offer"]
    service = executor._ExecutorService
    original_shutdown = service.__dict__["shutdown"]
    serial_states: list[executor._SerialEvaluationState] = []
    reported = threading.Event()

    def shutdown(self) -> None:
        original_shutdown(self)
        # An idle thread waits on the queue up to 5 s at a time before it sees the request,
        # and the run ends only once every thread has.
        for _ in self.workers:
            self.queue.put(_WakeUp())

    def serial_init(self, executor_service, scheduled) -> None:
        original_serial_init(self, executor_service, scheduled)
        serial_states.append(self)

    def next_work_in_order(self, new_work, completed_work) -> None:
        with self._lock:
            if new_work:
                self.serial_queue.append(new_work)
            if completed_work:
                assert self.currently_evaluating == completed_work
                self.currently_evaluating = None
            if self.serial_queue and not self.currently_evaluating:
                self.currently_evaluating = self.serial_queue.popleft()
                executor._TransformEvaluationState.schedule(self, self.currently_evaluating)

    def offer(self, item) -> None:
        original_offer(self, item)
        reported.set()

    def call(self, state_sampler) -> None:
        # Without the wait the monitor would take every turn a free thread gives it.
        own = self._executor
        if own.all_updates._queue.empty() and own.executor_service.queue.empty():
            reported.wait(_MONITOR_IDLE_SECONDS)
        reported.clear()
        original_call(self, state_sampler)

    def fire_timers(self) -> bool:
        # Fired timers leave their keys' state only when their bundle commits, so a look
        # while a bundle of fired timers is in progress or waiting would fire them again.
        if any(work._fired_timers for work in bundles_in_progress(self)):
            return False
        return original_fire_timers(self)

    def should_shutdown(self) -> bool:
        # A bundle finished on the other thread may have results the monitor has not read.
        if self._is_executing() or not self._executor.all_updates._queue.empty():
            return False
        return original_should_shutdown(self)

    def bundles_in_progress(self) -> list[executor.TransformExecutor]:
        # The queues first, each under its lock, then the scheduled set: a bundle leaves its
        # queue for the set under that lock, so it is seen in one or the other.
        queued: list[executor.TransformExecutor] = []
        for state in list(serial_states):
            with state._lock:
                queued.extend(state.serial_queue)
        return queued + list(self._executor.transform_executor_services.executors)

    def add_work_if_necessary(self, timers_fired: bool) -> None:
        if timers_fired or len(bundles_in_progress(self)) > 1:
            return
        own = self._executor
        for applied_ptransform in own.all_nodes:
            if own.evaluation_context.is_done(applied_ptransform):
                continue
            pending = own.node_to_pending_bundles.get(applied_ptransform, [])
            own.node_to_pending_bundles[applied_ptransform] = []
            for bundle in pending:
                own.schedule_consumption(
                    applied_ptransform, bundle, [], own.default_completion_callback
                )

    parallel.NUM_WORKERS = threads
    service.shutdown = shutdown
    serial.__init__ = serial_init
    serial._update_currently_evaluating = next_work_in_order
    registry.should_execute_serially = lambda self, applied_ptransform: True
    monitor.call = call
    monitor._fire_timers = fire_timers
    monitor._should_shutdown = should_shutdown
    monitor._add_work_if_necessary = add_work_if_necessary
    updates.offer = offer
    try:
        yield
    finally:
        parallel.NUM_WORKERS = original_threads
        service.shutdown = original_shutdown
        serial.__init__ = original_serial_init
        serial._update_currently_evaluating = original_next_work
        registry.should_execute_serially = original_serially
        monitor.call = original_call
        monitor._fire_timers = original_fire_timers
        monitor._should_shutdown = original_should_shutdown
        monitor._add_work_if_necessary = original_add_work
        updates.offer = original_offer


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, which returns every free page to the system; None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    return None if trim is None else lambda: trim(0)


@contextlib.contextmanager
def returned_shuffle_memory() -> Iterator[None]:
    """Return the memory of a GroupByKey's held values to the system once they are encoded.

    `GroupingBuffer.partition` encodes the grouped values into streams and clears its table
    the first time it is called; trimming right after costs a few milliseconds per shuffle.
    """
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    original = GroupingBuffer.__dict__["partition"]

    def partition(self, n):
        encoded_before = self._grouped_output is not None
        grouped = original(self, n)
        if not encoded_before:
            trim()
        return grouped

    GroupingBuffer.partition = partition
    try:
        yield
    finally:
        GroupingBuffer.partition = original
