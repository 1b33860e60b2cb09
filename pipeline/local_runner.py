"""Fixes for Beam 2.77's local runners, used only there.

Two faults of the local streaming runner (BundleBasedDirectRunner) make a local streaming
run wrong or sluggish, and neither has a public switch, so both are patched for the
duration of a run:

* it reads Pub/Sub with a 30 s long poll on its only thread, so while a subscription is
  idle nothing else runs (timers, the watermark, cancel) for up to 30 s at a time;
* it keeps the metrics container of each step's first bundle, so counters stop growing
  after the first bundle and the run report undercounts.

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
import ctypes
import ctypes.util
import time
from collections.abc import Callable, Iterator

from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.portability.fn_api_runner.execution import GroupingBuffer
from apache_beam.runners.worker import statesampler
from google.api_core import exceptions as google_exceptions
from google.pubsub_v1.types import PullResponse


@contextlib.contextmanager
def _short_pubsub_pulls(
    pull_timeout: float = 1.5, max_messages: int = 1000, idle_wait: float = 0.1
) -> Iterator[None]:
    """Make the DirectRunner's Pub/Sub pulls short and wide while the block is active.

    The runner reads Pub/Sub with ``pull(max_messages=10, timeout=30)`` on its single
    worker thread, and the emulator holds an idle pull until ~1 s before the
    deadline. So while the subscription is idle nothing else runs for ~29 s:
    processing-time timers, the watermark (event-time timers), GroupIntoBatches
    flushes and ``cancel()`` all wait for the pull. And ten messages a pull make a burst
    trickle in over many seconds, a bundle each, so a device's events published together
    reach its buffer (transforms/identity.py) after it was sent. Here a pull returns at
    once with up to ``max_messages``, and an empty one waits ``idle_wait`` before the
    runner asks again; ``pull_timeout`` bounds the call itself.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"]

    class _ShortPullClient:
        def __init__(self, client) -> None:
            self._client = client

        def pull(self, *args, **kwargs):
            kwargs["timeout"] = min(kwargs.get("timeout") or pull_timeout, pull_timeout)
            kwargs["max_messages"] = max(kwargs.get("max_messages") or 0, max_messages)
            kwargs["return_immediately"] = True
            try:
                response = self._client.pull(*args, **kwargs)
            except google_exceptions.DeadlineExceeded:
                response = PullResponse()
            if not response.received_messages:
                time.sleep(idle_wait)
            return response

        def __getattr__(self, name: str):
            return getattr(self._client, name)

    def _get_subscriber_client(cls, transform):
        return _ShortPullClient(original.__func__(cls, transform))

    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    try:
        yield
    finally:
        evaluator._get_subscriber_client = original


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
def local_streaming_fixes() -> Iterator[None]:
    """Both fixes, for as long as the block runs."""
    with _short_pubsub_pulls(), _per_bundle_metrics():
        yield


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
