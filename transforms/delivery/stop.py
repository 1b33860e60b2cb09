"""A graceful stop: one flag per process that the launcher sets on SIGTERM or Ctrl-C.

Signals reach only the main thread, while requests go out from the sink's threads; the flag
tells them to send nothing new, so the pipeline finishes normally with the rest dead-lettered
`interrupted`, and its report and dead letters are written. It works where the sink runs in
the launcher's process (the local runners); a remote runner stops its workers by its own means
(Dataflow's drain).
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


def request_stop() -> None:
    _STOP.set()


def clear_stop() -> None:
    """Forgets an earlier stop, at the start of a run."""
    _STOP.clear()


def stop_requested() -> bool:
    return _STOP.is_set()


def wait_for_stop(seconds: float) -> bool:
    """Sleeps up to `seconds`, less when a stop is asked for; True if one was."""
    return _STOP.wait(seconds)
