"""Memory of local runs: the garbage collector kept off a streaming run's long-lived heap, and
a batch run's shuffle memory handed back to the system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Iterator

from apache_beam.runners.portability.fn_api_runner.execution import GroupingBuffer

# Allocations between two young collections (Python's default is 700), and young collections
# between two of the middle generation (default 10) and of the oldest (default 10).
GC_THRESHOLDS = (20_000, 20, 20)


@contextlib.contextmanager
def long_lived_heap_frozen() -> Iterator[None]:
    """Keep the garbage collector off what the run holds for good, and run it less often.

    A streaming run holds a large heap (Beam, gRPC, the pipeline) and makes short-lived
    objects per event and per key; each full collection walked the whole heap, about an
    eighth of a busy run's time. What exists when the run starts is frozen (never walked
    again; it lives as long as the process anyway), and collections run less often.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def malloc_trim() -> Callable[[], object] | None:
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
    trim = malloc_trim()
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
