"""Live progress of a local batch run: events read, sent, filtered, dead-lettered, rate and ETA.

The launcher opens a UDP socket on loopback and names it to the workers through the
environment (transforms/progress.py sends the counters' increments there). On a terminal a
tqdm bar is redrawn in place: events resolved (sent, filtered or dead-lettered) out of events
read, so that once reading is done its ETA is for the rest of the run. Elsewhere (a log file,
CI) one log line is written every `interval_seconds`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, TextIO

from tqdm import tqdm

from transforms import progress as channel

_LOGGER = logging.getLogger("woopra")
RESOLVED = ("sent", "filtered", "dead_lettered")
# How long the receiving thread waits for a datagram before it looks at the clock again.
_POLL_SECONDS = 0.25


class Progress:
    """Receives the workers' counts while the run goes on and shows them."""

    def __init__(self, interval_seconds: float, stream: TextIO | None = None) -> None:
        self.interval_seconds = interval_seconds
        self.stream = stream or sys.stderr
        self.totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(_POLL_SECONDS)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="woopra-progress", daemon=True)
        self._bar: tqdm | None = None
        self._started = time.monotonic()
        self._previous_address: str | None = None

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()
        return f"{host}:{port}"

    def __enter__(self) -> Progress:
        self._previous_address = os.environ.get(channel.PROGRESS_ADDRESS_VARIABLE)
        os.environ[channel.PROGRESS_ADDRESS_VARIABLE] = self.address
        if self.stream.isatty():
            self._bar = tqdm(
                total=0, unit=" events", desc="resolved", file=self.stream, dynamic_ncols=True
            )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        channel.flush()  # what this process's workers (the in-process runner) still hold
        time.sleep(_POLL_SECONDS)
        self._stopped.set()
        self._thread.join()
        self._socket.close()
        if self._previous_address is None:
            os.environ.pop(channel.PROGRESS_ADDRESS_VARIABLE, None)
        else:
            os.environ[channel.PROGRESS_ADDRESS_VARIABLE] = self._previous_address
        if self._bar is not None:
            self._show()
            self._bar.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)

    def _receive(self) -> None:
        next_log = time.monotonic() + self.interval_seconds
        while not self._stopped.is_set():
            try:
                payload, _ = self._socket.recvfrom(65536)
            except TimeoutError:
                payload = b""
            except OSError:
                return
            if payload:
                self._add(json.loads(payload))
                if self._bar is not None:
                    self._show()
            if self._bar is None and time.monotonic() >= next_log:
                next_log = time.monotonic() + self.interval_seconds
                _LOGGER.info(format_progress_line(self.snapshot(), self._elapsed()))

    def _add(self, increments: dict[str, Any]) -> None:
        with self._lock:
            for name, value in increments.items():
                if isinstance(value, int):
                    self.totals[name] = self.totals.get(name, 0) + value

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _show(self) -> None:
        totals = self.snapshot()
        bar = self._bar
        assert bar is not None
        bar.total = totals.get("input", 0)
        bar.n = sum(totals.get(name, 0) for name in RESOLVED)
        bar.set_postfix(
            read=totals.get("input", 0),
            sent=totals.get("sent", 0),
            dead_lettered=totals.get("dead_lettered", 0),
            refresh=False,
        )
        bar.refresh()


def format_progress_line(totals: dict[str, int], elapsed_seconds: float) -> str:
    """read, sent, filtered, dead-lettered, resolved per second and the time left."""
    read = totals.get("input", 0)
    resolved = sum(totals.get(name, 0) for name in RESOLVED)
    rate = resolved / elapsed_seconds if elapsed_seconds > 0 else 0.0
    left = tqdm.format_interval((read - resolved) / rate) if rate > 0 else "unknown"
    return (
        f"progress: read {read}, sent {totals.get('sent', 0)}, "
        f"filtered {totals.get('filtered', 0)}, dead-lettered {totals.get('dead_lettered', 0)}"
        f"; {rate:.1f} events/s, about {left} left for the events read so far"
    )
