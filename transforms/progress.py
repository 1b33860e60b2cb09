"""Counters that also feed a live progress channel to the launcher of a local run.

Beam's local runners give the launcher a run's metrics only when the run has ended, so a long
backfill would show nothing until then. A `ProgressCounter` increments its Beam counter as any
counter does and, when the launcher has opened a channel (the environment variable
`WOOPRA_PROGRESS_ADDRESS`, `host:port` of a UDP socket on loopback, inherited by the worker
processes of `--direct_running_mode multi_processing`), also sends the increments there about
twice a second. Without the variable (Dataflow, tests) it is a plain Beam counter. The channel
only shows progress: the report is always built from the metrics.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from apache_beam.metrics import Metrics

from transforms.core.records import METRICS_NAMESPACE

PROGRESS_ADDRESS_VARIABLE = "WOOPRA_PROGRESS_ADDRESS"
# How often a process sends what its counters added, and re-reads the variable.
SEND_INTERVAL_SECONDS = 0.5


class _Channel:
    """This process's increments, sent as one small JSON datagram per interval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._address: tuple[str, int] | None = None
        self._socket: socket.socket | None = None
        self._next_send = 0.0

    def add(self, name: str, value: int) -> None:
        if time.monotonic() >= self._next_send:
            self._tick()
        if self._address is not None:  # without a launcher listening, nothing more to do
            with self._lock:
                self._pending[name] = self._pending.get(name, 0) + value

    def _tick(self) -> None:
        with self._lock:
            self._next_send = time.monotonic() + SEND_INTERVAL_SECONDS
            self._send_locked()
            self._address = _address_from_environment()

    def flush(self) -> None:
        """Sends what is pending now (the last increments of a run)."""
        with self._lock:
            self._send_locked()

    def _send_locked(self) -> None:
        if not self._pending or self._address is None:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        payload = json.dumps(self._pending).encode("ascii")
        self._pending = {}
        try:
            self._socket.sendto(payload, self._address)
        except OSError:  # the launcher has gone: progress is only shown, never needed
            self._address = None


def _address_from_environment() -> tuple[str, int] | None:
    value = os.environ.get(PROGRESS_ADDRESS_VARIABLE)
    if not value:
        return None
    host, _, port = value.rpartition(":")
    return host, int(port)


_CHANNEL = _Channel()


def flush() -> None:
    """Sends this process's pending increments to the launcher."""
    _CHANNEL.flush()


class ProgressCounter:
    """A Beam counter whose increments the launcher also sees while the run goes on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._counter = Metrics.counter(METRICS_NAMESPACE, name)

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        _CHANNEL.add(self.name, n)

    def __reduce__(self) -> tuple[Any, ...]:
        return ProgressCounter, (self.name,)
