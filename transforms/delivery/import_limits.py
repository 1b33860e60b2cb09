"""The Import API's sliding windows (SPEC §14 `--import_limits`), held with pyrate-limiter.

pyrate-limiter's in-memory bucket keeps a log of request times and checks every window at once;
its windows include their lower edge ([t - L, t]), one millisecond stricter than the SPEC's
(t - L, t]. Times are milliseconds since the epoch, so a log read back from the ledger carries
the windows across runs.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyrate_limiter import InMemoryBucket, Rate, RateItem

DEFAULT_IMPORT_LIMITS = "300/60s,600/3600s,3000/86400s"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


@dataclass(frozen=True)
class Window:
    """At most `count` requests in any window of `seconds`."""

    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}s"


def parse_limits(text: str) -> tuple[Window, ...]:
    """`300/60s,600/3600s,3000/86400s` (units s, m, h, d; none = seconds) as windows."""
    windows = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if not match:
            raise ValueError(f"not a limit (COUNT/DURATION, e.g. 300/60s): {part.strip()!r}")
        count, length, unit = int(match[1]), float(match[2]), match[3] or "s"
        seconds = length * _UNITS[unit]
        if count < 1 or not 0 < seconds < math.inf:
            raise ValueError(f"a limit needs a positive count and duration: {part.strip()!r}")
        windows.append(Window(count, seconds))
    return tuple(windows)


def longest_window_seconds(windows: Iterable[Window]) -> float:
    return max((window.seconds for window in windows), default=0.0)


class ImportWindows:
    """One project's request log against every window at once.

    `reserve(t)` books the earliest slot at or after `t` that every window allows and returns
    it; `restamp(t)` moves the last booking to when its request really ended, so that the log
    never holds a time earlier than the server could have counted the request at.
    """

    def __init__(self, windows: tuple[Window, ...], history_ms: Iterable[int] = ()) -> None:
        self.windows = windows
        self._bucket = InMemoryBucket([Rate(w.count, round(w.seconds * 1000)) for w in windows])
        self._last: RateItem | None = None
        for sent_ms in sorted(history_ms):
            self._bucket.items.append(RateItem("import", sent_ms))

    def reserve(self, earliest_ms: int) -> int:
        """Books and returns the first slot at or after `earliest_ms` (milliseconds)."""
        slot = earliest_ms
        self._bucket.leak(slot)
        while True:
            item = RateItem("import", slot)
            if self._bucket.put(item):
                self._last = item
                return slot
            slot += max(1, self._bucket.waiting(item))

    def next_slot(self, earliest_ms: int) -> int:
        """The first slot at or after `earliest_ms`, without booking it."""
        return copy.deepcopy(self).reserve(earliest_ms)

    def restamp(self, ended_ms: int) -> None:
        """Moves the last booking to `ended_ms` (never earlier than it was)."""
        if self._last is not None and ended_ms > self._last.timestamp:
            self._last.timestamp = ended_ms

    def schedule(self, requests: int, now_ms: int) -> int:
        """When the last of `requests` can start, at the earliest slots from `now_ms` on,
        latency left out (the plan's estimate); the windows themselves are left as they are."""
        if requests <= 0:
            return now_ms
        simulated = copy.deepcopy(self)
        slot = now_ms
        for _ in range(requests):
            slot = simulated.reserve(slot)
        return slot
