"""The local streaming runner's fixes (pipeline/local_runner/) that need no emulator."""

from __future__ import annotations

import datetime
import gc
import threading
import time
import types

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import executor, transform_evaluator
from apache_beam.runners.direct.clock import TestClock as ManualClock
from apache_beam.runners.direct.evaluation_context import DirectUnmergedState
from apache_beam.runners.direct.watermark_manager import _TransformWatermarks
from apache_beam.testing import test_stream
from apache_beam.transforms import core, userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import (
    InMemoryUnmergedState,
    _ListStateTag,
    _ReadModifyWriteStateTag,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from google.pubsub_v1.types import PubsubMessage

from pipeline.local_runner import local_streaming_fixes, timers
from pipeline.local_runner.dofns import specs_cache_key
from pipeline.local_runner.memory import GC_THRESHOLDS
from pipeline.local_runner.pubsub import publish_timestamp
from pipeline.local_runner.timers import TimerIndex
from pipeline.options import LOCAL_STREAMING_RUNNER
from transforms.identity import StreamingSettings, _StreamingResolveFn


def _plain(element):
    return element


def _with_default(element, extra=1):
    return element


def test_dofn_specs_are_cached_by_class_or_by_the_wrapped_function():
    resolve = _StreamingResolveFn(True, StreamingSettings())
    assert specs_cache_key(resolve) is _StreamingResolveFn
    assert specs_cache_key(core.CallableWrapperDoFn(_plain)) == (
        core.CallableWrapperDoFn,
        _plain.__code__,
    )
    assert specs_cache_key(core.CallableWrapperDoFn(_with_default)) is None


def test_cached_dofn_specs_are_the_specs_and_are_restored_after_the_run():
    original = userstate.get_dofn_specs
    resolve = _StreamingResolveFn(True, StreamingSettings())
    expected = original(resolve)
    with local_streaming_fixes():
        specs = userstate.get_dofn_specs(resolve)
        assert specs == expected
        another = _StreamingResolveFn(False, StreamingSettings())
        assert transform_evaluator.get_dofn_specs(another) is specs  # inspected once
        assert userstate.get_dofn_specs(beam.DoFn()) == (set(), set())
    assert userstate.get_dofn_specs is original
    assert transform_evaluator.get_dofn_specs is original


def test_a_drain_is_asked_for_once_and_stays_asked():
    with local_streaming_fixes() as run:
        assert not run.draining
        run.drain()
        run.drain()
        assert run.draining


def _idle_monitor(name: str) -> types.SimpleNamespace:
    """A stand-in for the runner's monitor task with no bundle in progress."""
    services = types.SimpleNamespace(executors=frozenset())
    executor_ = types.SimpleNamespace(transform_executor_services=services)
    return types.SimpleNamespace(name=name, _executor=executor_)


def test_timers_are_looked_for_at_most_every_half_second_except_while_draining(monkeypatch):
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    looks: list[str] = []
    monkeypatch.setattr(monitor, "_fire_timers", lambda self: looks.append(self.name) or True)
    clock = [100.0]
    monkeypatch.setattr(timers, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    with local_streaming_fixes() as run:
        assert monitor._fire_timers(_idle_monitor("first")) is True
        clock[0] += 0.49
        assert monitor._fire_timers(_idle_monitor("too soon")) is False
        clock[0] += 0.02
        assert monitor._fire_timers(_idle_monitor("later")) is True
        run.drain()
        assert monitor._fire_timers(_idle_monitor("draining")) is True
        assert monitor._fire_timers(_idle_monitor("draining again")) is True
    assert looks == ["first", "later", "draining", "draining again"]


class _RecordingService:
    """An executor service that only remembers what it was given to run."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, task: str) -> None:
        self.submitted.append(task)


def test_a_steps_bundles_run_one_at_a_time_in_the_order_they_came():
    serial = executor._SerialEvaluationState
    original = serial.__dict__["_update_currently_evaluating"]
    service = _RecordingService()
    with local_streaming_fixes():
        assert executor._ExecutorServiceParallelExecutor.NUM_WORKERS == 2
        step = serial(service, set())
        for bundle in ("first", "second", "third"):
            step.schedule(bundle)
        assert service.submitted == ["first"]  # one at a time
        step.complete("first")
        step.complete("second")
        step.complete("third")
    assert service.submitted == ["first", "second", "third"]  # Beam's own order: 1, 3, 2
    assert serial.__dict__["_update_currently_evaluating"] is original
    assert executor._ExecutorServiceParallelExecutor.NUM_WORKERS == 1


def test_idle_executor_threads_see_a_shutdown_at_once():
    with local_streaming_fixes():
        service = executor._ExecutorService(2)
        service.shutdown()
        for worker in service.workers:
            worker.join(timeout=1)  # Beam's own idle wait is 5 s
        assert not any(worker.is_alive() for worker in service.workers)


class _SlowEndOfInputFn(beam.DoFn):
    """Emits its key once the input ends; each firing takes a while, as a busy flush does."""

    END = userstate.TimerSpec("end", TimeDomain.WATERMARK)

    def process(self, element, end=beam.DoFn.TimerParam(END)):
        end.set(GlobalWindow().max_timestamp())

    @userstate.on_timer(END)
    def on_end(self, key=beam.DoFn.KeyParam):
        time.sleep(0.02)
        yield key


_FIRED: list[str] = []


def _record_fired(key: str) -> None:
    _FIRED.append(key)


def test_end_of_input_timers_fire_once_each_although_looks_go_on_while_their_bundle_runs():
    keys = [f"device-{n}" for n in range(60)]
    stream = (
        test_stream.TestStream()
        .add_elements([(key, 1) for key in keys])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(runner=LOCAL_STREAMING_RUNNER)
    options.view_as(StandardOptions).streaming = True
    _FIRED.clear()
    with local_streaming_fixes(), beam.Pipeline(options=options) as pipeline:
        _ = pipeline | stream | beam.ParDo(_SlowEndOfInputFn()) | beam.Map(_record_fired)
    # The 1.2 s bundle of firings saw two looks or more; and the run ended only after a last
    # look had found the timers (without it the runner reported a stall).
    assert sorted(_FIRED) == sorted(keys)


class _MainOutputOnlyFn(beam.DoFn):
    """Declares a tagged output, as the stages that can dead-letter do, and never uses it."""

    def process(self, element):
        yield element


_BUNDLES_SEEN: list[str] = []


class _BundleCountingFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self.name = name

    def start_bundle(self):
        _BUNDLES_SEEN.append(self.name)

    def process(self, element):
        yield element


def test_a_step_gets_no_bundle_of_an_output_that_holds_nothing():
    stream = test_stream.TestStream()
    for n in range(3):
        stream = stream.add_elements([n, n + 10])
    options = PipelineOptions(runner=LOCAL_STREAMING_RUNNER)
    options.view_as(StandardOptions).streaming = True
    _BUNDLES_SEEN.clear()
    with local_streaming_fixes(), beam.Pipeline(options=options) as pipeline:
        outputs = (
            pipeline
            | stream.advance_watermark_to_infinity()
            | beam.ParDo(_MainOutputOnlyFn()).with_outputs("unused", main="main")
        )
        _ = outputs.main | "Main" >> beam.ParDo(_BundleCountingFn("main"))
        _ = outputs.unused | "Unused" >> beam.ParDo(_BundleCountingFn("unused"))
    assert "main" in _BUNDLES_SEEN
    assert "unused" not in _BUNDLES_SEEN  # Beam's own runner gives it an empty bundle each


def _state_with_timers_and_values() -> InMemoryUnmergedState:
    state = DirectUnmergedState()
    window = GlobalWindow()
    state.set_timer(window, "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=5))
    state.set_timer(window, "user/expire", TimeDomain.WATERMARK, Timestamp(micros=9))
    state.add_state(window, _ListStateTag("user/buffer"), b"one")
    state.add_state(window, _ReadModifyWriteStateTag("user/count"), [b"\x01"])
    return state


def test_a_keys_state_is_copied_whole_and_apart_from_the_original():
    state = _state_with_timers_and_values()
    with local_streaming_fixes():
        clone = state.copy()
    assert dict(clone.timers) == dict(state.timers)
    assert {w: dict(tags) for w, tags in clone.state.items()} == {
        w: dict(tags) for w, tags in state.state.items()
    }
    window = GlobalWindow()
    clone.clear_timer(window, "user/flush", TimeDomain.REAL_TIME)
    clone.add_state(window, _ListStateTag("user/buffer"), b"two")
    assert ("user/flush", TimeDomain.REAL_TIME, "") in state.timers[window]
    assert state.get_state(window, _ListStateTag("user/buffer")) == [b"one"]
    assert InMemoryUnmergedState.copy.__module__ == "apache_beam.transforms.trigger"


def _watermarks(keyed_states: dict, now: float, watermark: Timestamp):
    clock = ManualClock(Timestamp.of(now))
    watermarks = _TransformWatermarks(clock, keyed_states, "step")
    watermarks._input_watermark = watermark
    return watermarks


def _firings(fired) -> list[tuple]:
    return sorted(
        (t.encoded_key, t.window, t.name, t.time_domain, t.timestamp, t.dynamic_timer_tag)
        for t in fired
    )


def test_due_timers_are_found_as_the_runner_finds_them():
    keyed = {}
    for n in range(20):
        state = keyed[f"key-{n}".encode()] = DirectUnmergedState()
        state.set_timer(GlobalWindow(), "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=n))
        state.set_timer(GlobalWindow(), "user/expire", TimeDomain.WATERMARK, Timestamp(micros=n))
    keyed[b"idle"] = DirectUnmergedState()
    original = _TransformWatermarks.extract_transform_timers
    expected, expected_realtime = original(_watermarks(keyed, 10e-6, Timestamp(micros=4)))
    with local_streaming_fixes():
        fired, realtime = _watermarks(keyed, 10e-6, Timestamp(micros=4)).extract_transform_timers()
    assert realtime is expected_realtime is True
    assert _firings(fired) == _firings(expected)
    assert len(fired) == 11 + 5  # processing time 10 µs, watermark 4 µs
    assert _TransformWatermarks.extract_transform_timers is original


class _CountedState(DirectUnmergedState):
    """A key's state that counts how often a look reads its timers."""

    reads = 0

    @property
    def timers(self):
        _CountedState.reads += 1
        return self._timers

    @timers.setter
    def timers(self, value):
        self._timers = value


def test_a_look_reads_only_the_keys_whose_soonest_timer_is_due():
    keyed = {}
    for n in range(1_000):
        state = keyed[f"key-{n}".encode()] = _CountedState()
        state.set_timer(GlobalWindow(), "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=n))
        state.set_timer(GlobalWindow(), "user/expire", TimeDomain.WATERMARK, Timestamp(10**6))
    with local_streaming_fixes():
        watermarks = _watermarks(keyed, 0.0, Timestamp(micros=0))
        fired, realtime = watermarks.extract_transform_timers()  # indexes every key once
        assert _firings(fired) == [
            (b"key-0", GlobalWindow(), "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=0), "")
        ]
        assert realtime is True
        _CountedState.reads = 0
        watermarks._clock = ManualClock(Timestamp(micros=2))
        fired, _ = watermarks.extract_transform_timers()
    # key-0 again (its fired timer is still in its state) and key-1, key-2 newly due, each
    # read twice (noted again, then its due timers taken); the runner's own look reads all
    # 1,000 keys every time.
    assert sorted(t.encoded_key for t in fired) == [b"key-0", b"key-1", b"key-2"]
    assert _CountedState.reads == 2 * 3


def test_the_timer_index_keeps_a_due_entry_for_every_key_with_a_due_timer():
    state = DirectUnmergedState()
    window = GlobalWindow()
    state.set_timer(window, "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=50))
    index = TimerIndex({b"device": state})
    assert index.take_due_keys(now=49, watermark=0) == set()
    # Moved later: the old entry stays and comes due early; the key is looked at, noted again.
    state.set_timer(window, "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=80))
    index.note(b"device", state)
    assert index.take_due_keys(now=60, watermark=0) == {b"device"}
    index.note(b"device", state)
    assert index.take_due_keys(now=79, watermark=0) == set()
    # Moved earlier: the new entry counts, the older one is stale and ignored.
    state.set_timer(window, "user/flush", TimeDomain.REAL_TIME, Timestamp(micros=70))
    index.note(b"device", state)
    assert index.take_due_keys(now=75, watermark=0) == {b"device"}
    assert index.take_due_keys(now=90, watermark=0) == set()
    # Cleared: no processing-time timer is left to wait for.
    assert index.with_realtime_timers == {b"device"}
    state.clear_timer(window, "user/flush", TimeDomain.REAL_TIME)
    index.note(b"device", state)
    assert index.with_realtime_timers == set()


def test_a_timer_the_index_cannot_hold_sends_the_step_back_to_the_runners_own_look():
    keyed = {}
    for n, when in enumerate((Timestamp(micros=3), 0.000_002, Timestamp(0, 1, 9))):
        state = keyed[f"key-{n}".encode()] = DirectUnmergedState()
        # A trigger's float time; a time finer than a microsecond.
        state.set_timer(GlobalWindow(), "user/flush", TimeDomain.REAL_TIME, when)
    original = _TransformWatermarks.extract_transform_timers
    expected, _ = original(_watermarks(keyed, 10e-6, Timestamp(micros=0)))
    found: list = []
    with local_streaming_fixes():
        looking = threading.Thread(
            daemon=True,
            target=lambda: found.append(
                _watermarks(keyed, 10e-6, Timestamp(micros=0)).extract_transform_timers()
            ),
        )
        looking.start()
        looking.join(timeout=10)
    assert not looking.is_alive()  # the runner's own look takes the step's lock: no deadlock
    assert _firings(found[0][0]) == _firings(expected)
    assert len(expected) == 3


def test_the_heap_is_frozen_and_collected_less_often_only_during_the_run():
    thresholds = gc.get_threshold()
    with local_streaming_fixes():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


def test_a_publish_time_is_read_to_the_microsecond_as_the_runner_reads_it():
    message = PubsubMessage(data=b"x")
    message.publish_time = datetime.datetime(2024, 6, 1, 12, 0, 1, 123456, datetime.UTC)
    raw = PubsubMessage.pb(message)
    raw.publish_time.nanos += 789  # below a microsecond: dropped, as the runner drops it
    assert publish_timestamp(raw) == Timestamp.from_utc_datetime(message.publish_time)


class _Counting(beam.DoFn):
    def __init__(self) -> None:
        self.seen = 0

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        self.seen += 1
        yield element


def test_each_bundle_gets_its_own_copy_of_the_dofn_from_one_pickle(monkeypatch):
    dofn = _Counting()
    dumps: list[object] = []
    real_dumps = pickler.dumps
    monkeypatch.setattr(pickler, "dumps", lambda o, *a, **k: dumps.append(o) or real_dumps(o))
    with local_streaming_fixes():
        first = transform_evaluator.pickler.roundtrip(dofn)
        first.seen = 5
        second = transform_evaluator.pickler.roundtrip(dofn)
    assert isinstance(first, _Counting)
    assert isinstance(second, _Counting)
    assert first is not second
    assert first is not dofn
    assert (second.seen, dofn.seen) == (0, 0)
    assert dumps == [dofn]  # pickled once
    assert transform_evaluator.pickler is pickler


def test_dofn_method_arguments_are_inspected_once_per_class():
    original = core.get_function_arguments
    with local_streaming_fixes():
        names, defaults = core.get_function_arguments(_Counting(), "process")
        names.append("changed by a caller")
        again = core.get_function_arguments(_Counting(), "process")
        assert again == original(_Counting(), "process")
        wrapped = core.get_function_arguments(core.CallableWrapperDoFn(_with_default), "process")
        assert wrapped == original(core.CallableWrapperDoFn(_with_default), "process")
    assert core.get_function_arguments is original
    assert names[0] == "element"
    assert defaults == [beam.DoFn.TimestampParam]
