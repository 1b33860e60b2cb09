"""Streaming dedup: the messageIds a device has sent within the dedup window (README, Streaming).

A device's seen messageIds live in its keyed state as an append-only log (a bag of
`(messageId, first seen)`), so remembering one more is one append on every runner, however
many the device has sent. Asking whether an id was seen needs them all, though: Beam's
Python state has no per-entry lookup that both the local runner and Dataflow support (a
set state is rewritten in full by the local runner on each commit, and compacted by a full
read and rewrite on about every other add on the portable runners). So each worker process
keeps the ids of the devices it served in memory, and the state says whether that copy is
still the truth: every change of the log also writes a new random version beside it, and a
copy whose version differs (another worker changed the device since, or a failed bundle
changed the copy but never committed) is read again from the log. A device therefore costs
per event what any other does, and the log is compacted once most of it has expired.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from apache_beam.coders import StrUtf8Coder, TupleCoder, VarIntCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec

SEEN_LOG = BagStateSpec("seen_log", TupleCoder([StrUtf8Coder(), VarIntCoder()]))
SEEN_VERSION = ReadModifyWriteStateSpec("seen_version", VarIntCoder())

# The log is rewritten with only the live ids once it holds twice as many entries (and a few).
_COMPACT_SLACK = 64
# Ids kept in memory per process and stage, over all devices; the least recently used devices
# are dropped beyond it (and read from their state again when they come back).
DEFAULT_MAX_CACHED_IDS = 1_000_000


@dataclass
class _DeviceIds:
    """One device's live ids (messageId -> first seen, in microseconds) in arrival order."""

    version: int | None
    first_seen: dict[str, int] = field(default_factory=dict)
    logged: int = 0  # entries in the state's log, expired ones included


class SeenMessageIds:
    """One process's memory of which messageIds each device sent, checked against its state.

    `log` and `version` are the device's SEEN_LOG and SEEN_VERSION state. Only one bundle at
    a time works on a device (runners serialize a key's work), but several devices can be
    worked on at once, so the shared structure is locked.
    """

    def __init__(self, window_seconds: float, max_cached_ids: int = DEFAULT_MAX_CACHED_IDS):
        self._window = int(window_seconds * 1_000_000)
        self._max_cached = max_cached_ids
        self._lock = threading.Lock()
        self._devices: OrderedDict[str, _DeviceIds] = OrderedDict()
        self._cached = 0
        self._random = random.Random()

    def seen_before(self, device: str, message_id: str, now_micros: int, log, version) -> bool:
        """Whether `message_id` came within the window before `now_micros`; remembers it if not."""
        with self._lock:
            ids = self._current(device, log, version)
            seen_at = ids.first_seen.get(message_id)
            if seen_at is not None and now_micros - seen_at < self._window:
                return True
            self._expire(ids, now_micros)
            if ids.first_seen.pop(message_id, None) is not None:
                self._cached -= 1
            ids.first_seen[message_id] = now_micros
            self._cached += 1
            log.add((message_id, now_micros))
            ids.logged += 1
            if ids.logged > 2 * len(ids.first_seen) + _COMPACT_SLACK:
                log.clear()
                for entry in ids.first_seen.items():
                    log.add(entry)
                ids.logged = len(ids.first_seen)
            ids.version = self._random.getrandbits(62)
            version.write(ids.version)
            self._evict(keep=device)
            return False

    def forget(self, device: str) -> None:
        """Drops the device's copy (its state was cleared)."""
        with self._lock:
            ids = self._devices.pop(device, None)
            if ids is not None:
                self._cached -= len(ids.first_seen)

    def _current(self, device: str, log, version) -> _DeviceIds:
        stored = version.read()
        ids = self._devices.get(device)
        if ids is None or ids.version != stored:
            if ids is not None:
                self._cached -= len(ids.first_seen)
            ids = self._devices[device] = self._read(stored, log.read())
            self._cached += len(ids.first_seen)
        self._devices.move_to_end(device)
        return ids

    def _read(self, stored: int | None, entries: Iterable[tuple[str, int]]) -> _DeviceIds:
        latest: dict[str, int] = {}
        logged = 0
        for message_id, seen_at in entries:
            logged += 1
            if seen_at > latest.get(message_id, -1):
                latest[message_id] = seen_at
        in_order = dict(sorted(latest.items(), key=lambda entry: entry[1]))
        return _DeviceIds(stored, in_order, logged)

    def _expire(self, ids: _DeviceIds, now_micros: int) -> None:
        """Drops the oldest ids that are out of the window (arrival order is about time order)."""
        first_seen = ids.first_seen
        while first_seen:
            oldest, seen_at = next(iter(first_seen.items()))
            if now_micros - seen_at < self._window:
                return
            del first_seen[oldest]
            self._cached -= 1

    def _evict(self, keep: str) -> None:
        while self._cached > self._max_cached and len(self._devices) > 1:
            device, ids = next(iter(self._devices.items()))
            if device == keep:
                self._devices.move_to_end(device)
                continue
            del self._devices[device]
            self._cached -= len(ids.first_seen)


_BY_STAGE: dict[str, SeenMessageIds] = {}
_BY_STAGE_LOCK = threading.Lock()


def seen_message_ids(stage_id: str, window_seconds: float) -> SeenMessageIds:
    """The process's memory for one stage (a DoFn's id survives the copies runners make of it).

    Held here rather than by the DoFn instance: the local runner makes a new copy of the DoFn
    for every bundle, and `Shared` keeps only its most recently acquired object alive.
    """
    with _BY_STAGE_LOCK:
        seen = _BY_STAGE.get(stage_id)
        if seen is None:
            seen = _BY_STAGE[stage_id] = SeenMessageIds(window_seconds)
        return seen
