"""The local streaming runner's fixes (pipeline/local_runner.py) that need no emulator."""

from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.runners.direct import executor, transform_evaluator
from apache_beam.transforms import core, userstate

from pipeline.local_runner import _specs_cache_key, local_streaming_fixes
from transforms.identity import StreamingSettings, _StreamingResolveFn


def _plain(element):
    return element


def _with_default(element, extra=1):
    return element


def test_dofn_specs_are_cached_by_class_or_by_the_wrapped_function():
    resolve = _StreamingResolveFn(True, StreamingSettings())
    assert _specs_cache_key(resolve) is _StreamingResolveFn
    assert _specs_cache_key(core.CallableWrapperDoFn(_plain)) == (
        core.CallableWrapperDoFn,
        _plain.__code__,
    )
    assert _specs_cache_key(core.CallableWrapperDoFn(_with_default)) is None


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


def test_timers_are_looked_for_at_most_every_50_ms_except_while_draining(monkeypatch):
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    looks: list[object] = []
    monkeypatch.setattr(monitor, "_fire_timers", lambda self: looks.append(self) or True)
    with local_streaming_fixes() as run:
        assert monitor._fire_timers("first") is True
        assert monitor._fire_timers("too soon") is False
        time.sleep(0.06)
        assert monitor._fire_timers("later") is True
        run.drain()
        assert monitor._fire_timers("draining") is True
        assert monitor._fire_timers("draining again") is True
    assert looks == ["first", "later", "draining", "draining again"]
