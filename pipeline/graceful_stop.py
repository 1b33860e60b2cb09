"""SIGTERM and Ctrl-C during a batch run: stop sending, finish, report (SPEC §16, 130/143)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

from transforms.delivery.stop import clear_stop, request_stop

_LOGGER = logging.getLogger("woopra")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """The first stop signal received, if any."""

    number: int | None = None


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopSignal]:
    """While the block runs, a first SIGINT or SIGTERM asks the sink to stop
    (transforms/delivery/stop.py) and a second one aborts at once (KeyboardInterrupt).

    The handler only sets a flag, so the runner is never cut off in the middle of a step: the
    requests in flight finish, the rest are dead-lettered `interrupted`, and the pipeline
    ends normally with its dead letters written.
    """
    received = StopSignal()
    clear_stop()

    def on_signal(number: int, frame: object) -> None:
        if received.number is not None:
            raise KeyboardInterrupt
        received.number = number
        request_stop()
        _LOGGER.warning(
            "%s: stopping; requests in flight finish, the rest are dead-lettered "
            "interrupted (signal again to abort at once)",
            signal.Signals(number).name,
        )

    previous = {number: signal.signal(number, on_signal) for number in _SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        clear_stop()
