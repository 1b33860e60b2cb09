"""Metrics of every bundle counted, not only of each step's first one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from apache_beam.runners.worker import statesampler


@contextlib.contextmanager
def per_bundle_metrics() -> Iterator[None]:
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
