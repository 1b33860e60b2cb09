"""The handle on a local streaming run that asks it to drain."""

from __future__ import annotations

import threading


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
