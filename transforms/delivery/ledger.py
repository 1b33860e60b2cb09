"""The ledger (SPEC §15): what Woopra accepted, so that every run is safe to repeat.

Layout under DIR (a local path or any Beam filesystem path):

    keys/<time>-<id>.jsonl       one `["<device>","<key>"]` line per accepted event
    requests/<time>-<id>.jsonl   one `{"project","ms","body"}` line per import request sent
    lock                         see ledger_lock.py

Every file is written once, complete, and never changed (a local file is written under a
temporary name and renamed; an object store makes an upload visible only when it is whole),
because object stores cannot append. A writer commits in groups: a sending thread hands over
what was accepted and waits until the file holding it exists, so a crash loses at most what was
in flight. `compact` folds many small files into one, writing the new one before deleting the
old ones, so that a crash in between leaves repeats, which a set of keys absorbs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import orjson
from apache_beam.io import fileio
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.visits import sorted_json

_LOGGER = logging.getLogger(__name__)

KEYS = "keys"
REQUESTS = "requests"
SUFFIX = ".jsonl"
_TEMPORARY = ".tmp"
# A writer waits this long after a commit for more work to join the next one.
COMMIT_INTERVAL_SECONDS = 0.05
# Compaction leaves a folder alone below this many files.
COMPACT_MIN_FILES = 32


class Delivered(NamedTuple):
    """A ledger entry on its way into the shuffle by device: this key was accepted before."""

    key: str


def ledger_key(message_id: str | None, event: Any) -> str:
    """An event's key within its device: its messageId, else a hash of the event as read."""
    if message_id is not None:
        return message_id
    return "sha256:" + hashlib.sha256(sorted_json(event)).hexdigest()


def is_local(path: str) -> bool:
    return "://" not in path


def write_immutable(path: str, data: bytes) -> None:
    """A file that is either complete or absent, whatever happens while it is written."""
    if is_local(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = path + _TEMPORARY
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def _new_file_name(folder: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return FileSystems.join(folder, f"{stamp}-{uuid.uuid4().hex}{SUFFIX}")


def _files(folder: str) -> list[str]:
    pattern = FileSystems.join(folder, "*" + SUFFIX)
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # Beam raises when a local folder does not exist yet
        return []
    return sorted(meta.path for meta in matched)


def _read(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def _lines(data: bytes) -> Iterator[bytes]:
    return (line for line in data.split(b"\n") if line)


def key_line(device: str, key: str) -> bytes:
    return orjson.dumps([device, key])


def read_keys(ledger_dir: str) -> set[tuple[str, str]]:
    """Every (device, key) the ledger holds: for tests and tools; the pipeline reads the keys
    with `ReadLedgerKeys`, spread over workers."""
    keys = set()
    for path in _files(FileSystems.join(ledger_dir, KEYS)):
        for line in _lines(_read(path)):
            device, key = orjson.loads(line)
            keys.add((device, key))
    return keys


class RequestLog(NamedTuple):
    """The import requests the ledger remembers: send times per project, accepted bodies."""

    sent_ms: dict[str, list[int]]
    accepted_bodies: frozenset[str]


def read_request_log(ledger_dir: str | None) -> RequestLog:
    sent: dict[str, list[int]] = {}
    bodies: set[str] = set()
    if ledger_dir:
        for path in _files(FileSystems.join(ledger_dir, REQUESTS)):
            for line in _lines(_read(path)):
                entry = orjson.loads(line)
                sent.setdefault(entry["project"], []).append(entry["ms"])
                if entry.get("body"):
                    bodies.add(entry["body"])
    return RequestLog({p: sorted(times) for p, times in sent.items()}, frozenset(bodies))


def compact(ledger_dir: str, keep_requests_seconds: float, now_ms: int | None = None) -> None:
    """Folds each folder's files into one when there are many; request times older than
    `keep_requests_seconds` are dropped (no window looks back further). Run under the lock."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest_kept = now_ms - keep_requests_seconds * 1000
    for folder_name in (KEYS, REQUESTS):
        folder = FileSystems.join(ledger_dir, folder_name)
        paths = _files(folder)
        if len(paths) < COMPACT_MIN_FILES:
            continue
        lines = []
        for path in paths:
            for line in _lines(_read(path)):
                if folder_name == KEYS or orjson.loads(line)["ms"] >= oldest_kept:
                    lines.append(line)
        target = _new_file_name(folder)
        data = b"\n".join(lines) + b"\n" if lines else b""
        write_immutable(target, data)
        if _read(target) != data:
            raise OSError(f"ledger compaction could not read back {target}; nothing deleted")
        FileSystems.delete(paths)
        _LOGGER.info("ledger: folded %d files of %s into one", len(paths), folder)


class LedgerWriter:
    """Group commit of accepted keys and request times: `commit` returns once they are durable.

    A background thread writes everything handed over since its last write as one new file
    per folder, then wakes the threads waiting for it; a failed write fails their commits.
    """

    def __init__(self, ledger_dir: str, interval_seconds: float = COMMIT_INTERVAL_SECONDS):
        self._keys_dir = FileSystems.join(ledger_dir, KEYS)
        self._requests_dir = FileSystems.join(ledger_dir, REQUESTS)
        self._interval = interval_seconds
        self._cond = threading.Condition()
        self._keys: list[bytes] = []
        self._requests: list[bytes] = []
        self._submitted = 0
        self._durable = 0
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="woopra-ledger", daemon=True)
        self._thread.start()

    def commit(
        self, keys: Iterable[tuple[str, str]] = (), requests: Iterable[dict[str, Any]] = ()
    ) -> None:
        """Hands over accepted (device, key) pairs and request records; waits until written."""
        with self._cond:
            self._keys.extend(key_line(device, key) for device, key in keys)
            self._requests.extend(orjson.dumps(request) for request in requests)
            self._submitted += 1
            ticket = self._submitted
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._durable >= ticket or self._error is not None)
            if self._durable < ticket:
                raise OSError("the ledger could not be written") from self._error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._submitted > self._durable or self._closed)
                if self._submitted == self._durable and self._closed:
                    return
            time.sleep(self._interval)
            with self._cond:
                keys, self._keys = self._keys, []
                requests, self._requests = self._requests, []
                ticket = self._submitted
            try:
                # Request times first: a crash between the two files then repeats a body
                # (within the loss bound) rather than forgetting a request the windows count.
                if requests:
                    write_immutable(_new_file_name(self._requests_dir), b"\n".join(requests))
                if keys:
                    write_immutable(_new_file_name(self._keys_dir), b"\n".join(keys))
            except BaseException as error:
                _LOGGER.error("ledger write failed: %s", type(error).__name__)
                with self._cond:
                    self._error = error
                    self._cond.notify_all()
                return
            with self._cond:
                self._durable = ticket
                self._cond.notify_all()


def _parse_key_file(readable: fileio.ReadableFile) -> Iterator[tuple[str, Delivered]]:
    for line in _lines(readable.read()):
        device, key = orjson.loads(line)
        yield device, Delivered(key)


class ReadLedgerKeys(beam.PTransform):
    """The ledger's accepted keys as `(device, Delivered(key))`, read in parallel; none when
    the ledger is new."""

    def __init__(self, ledger_dir: str) -> None:
        super().__init__()
        self.ledger_dir = ledger_dir

    def expand(self, pipeline):
        pattern = FileSystems.join(self.ledger_dir, KEYS, "*" + SUFFIX)
        return (
            pipeline
            | "MatchKeyFiles"
            >> fileio.MatchFiles(pattern, empty_match_treatment=EmptyMatchTreatment.ALLOW)
            | "OpenKeyFiles" >> fileio.ReadMatches()
            | "ParseKeys" >> beam.FlatMap(_parse_key_file)
        )
