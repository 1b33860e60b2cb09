"""The ledger's lock (SPEC §15): one run at a time per ledger.

The lock file is created atomically: locally with O_EXCL, on GCS with a conditional create
(`ifGenerationMatch=0`). The holder rewrites its UTC time every 60 s; a lock whose time is more
than 10 minutes old is taken over (locally by renaming it away first, on GCS by a write
conditional on the stale generation). Locally a lock left by a process of this host that no
longer exists (a SIGKILLed run) is taken over at once: nothing can be holding it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.delivery.ledger import is_local

_LOGGER = logging.getLogger(__name__)

LOCK_FILE = "lock"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0


class LedgerLockedError(Exception):
    """Another run holds the ledger."""


class LedgerUnavailableError(Exception):
    """The ledger's lock can be neither read nor written: a missing bucket or folder, no
    credentials or no permission. The run is refused before anything is sent."""


@contextlib.contextmanager
def _using(ledger_dir: str) -> Iterator[None]:
    try:
        yield
    except LedgerLockedError:
        raise
    except Exception as error:  # the store's own errors: OSError, google.api_core, google.auth
        raise LedgerUnavailableError(
            f"the ledger {ledger_dir} cannot be used: {type(error).__name__}: {error}"
        ) from error


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _age_seconds(content: dict[str, Any]) -> float:
    try:
        beat = datetime.datetime.fromisoformat(content["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return float("inf")
    return (datetime.datetime.now(datetime.timezone.utc) - beat).total_seconds()


def _process_gone(content: dict[str, Any]) -> bool:
    """Whether the lock was left by a process of this host that has ended."""
    if content.get("host") != socket.gethostname() or not isinstance(content.get("pid"), int):
        return False
    try:
        os.kill(content["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LedgerLock:
    """Held from `acquire()` to `release()`; a thread keeps its time fresh meanwhile."""

    def __init__(self, ledger_dir: str, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path = FileSystems.join(ledger_dir, LOCK_FILE)
        self.ledger_dir = ledger_dir
        self.owner = uuid.uuid4().hex
        self._heartbeat_seconds = heartbeat_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with _using(ledger_dir):
            self._store = _LocalLock(self.path) if is_local(ledger_dir) else _GcsLock(self.path)

    def content(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat": _utc_now(),
            }
        ).encode("utf-8")

    def acquire(self) -> LedgerLock:
        """Takes the lock or raises LedgerLockedError naming who holds it (or
        LedgerUnavailableError when the lock's store cannot be used)."""
        with _using(self.ledger_dir):
            return self._take()

    def _take(self) -> LedgerLock:
        taken = self._store.create(self.content())
        if not taken:
            held = self._store.read()
            if held is not None and (_age_seconds(held) > STALE_SECONDS or _process_gone(held)):
                _LOGGER.warning("ledger: taking over the stale lock %s (%s)", self.path, held)
                taken = self._store.take_over(held, self.content())
                if not taken:
                    held = self._store.read()
            # A conditional write that the client retried after its answer was lost fails
            # on its own success: the lock then holds this run's owner.
            taken = taken or (held is not None and held.get("owner") == self.owner)
            if not taken:
                raise LedgerLockedError(
                    f"another run holds the ledger {self.ledger_dir} (lock {self.path}: "
                    f"host {(held or {}).get('host')}, pid {(held or {}).get('pid')}, "
                    f"last seen {(held or {}).get('heartbeat')})"
                )
        self._start_heartbeat()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        held = self._store.read()
        if held is not None and held.get("owner") == self.owner:
            self._store.delete()

    def __enter__(self) -> LedgerLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="ledger-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                held = self._store.read()
                if held is None or held.get("owner") != self.owner:
                    _LOGGER.error("ledger: the lock %s was taken over by another run", self.path)
                    return
                self._store.rewrite(self.content())
            except Exception as error:  # an object store's passing error: the next beat retries
                _LOGGER.warning("ledger: could not refresh the lock %s: %s", self.path, error)


class _LocalLock:
    def __init__(self, path: str) -> None:
        self.path = path

    def create(self, content: bytes) -> bool:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        return True

    def read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as handle:
                return json.loads(handle.read() or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def take_over(self, stale: dict[str, Any], content: bytes) -> bool:
        """Renames the stale lock away (only one taker can) and creates a new one."""
        moved = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return self.create(content)
        os.remove(moved)
        return self.create(content)

    def rewrite(self, content: bytes) -> None:
        temporary = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(content)
        os.replace(temporary, self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


class _GcsLock:
    """The same on GCS, with generation preconditions (google-cloud-storage, a Beam[gcp] dep).

    Every write but the create, and the delete, is conditional on the generation last read,
    which the caller has just judged (stale, or its own): whatever was written in between makes
    it fail rather than be lost. Its own last write is not the condition, because a write whose
    answer was lost changes the generation all the same.
    """

    def __init__(self, path: str) -> None:
        if not path.startswith("gs://"):
            raise ValueError(f"the ledger lock supports local paths and gs://, not {path}")
        from google.cloud import storage

        bucket, _, name = path[len("gs://") :].partition("/")
        self._blob = storage.Client().bucket(bucket).blob(name)
        self._read_generation: int | None = None

    def _write(self, content: bytes, generation: int | None) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        if generation is None:  # nothing read: no condition to write under
            return False
        try:
            self._blob.upload_from_string(content, if_generation_match=generation)
        except PreconditionFailed:
            return False
        return True

    def create(self, content: bytes) -> bool:
        return self._write(content, 0)

    def read(self) -> dict[str, Any] | None:
        from google.api_core.exceptions import NotFound

        try:
            data = self._blob.download_as_bytes()
        except NotFound:
            return None
        # The download names the generation it read (x-goog-generation): content and
        # generation come from one request.
        self._read_generation = self._blob.generation
        try:
            return json.loads(data or b"{}")
        except ValueError:
            return {}

    def take_over(self, stale: dict[str, Any], content: bytes) -> bool:
        return self._write(content, self._read_generation)

    def rewrite(self, content: bytes) -> None:
        self._write(content, self._read_generation)

    def delete(self) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        if self._read_generation is not None:
            with contextlib.suppress(GoogleAPICallError):
                self._blob.delete(if_generation_match=self._read_generation)
