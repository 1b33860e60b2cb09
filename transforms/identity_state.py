"""Identity state across batch runs (SPEC §13 `--identity_state DIR`).

DIR holds generations, each a folder `generation-<UTC time>-<random>/` of JSON-lines files
(`identities-*.jsonl`, one cookie device a line: its cv_id, cv_email and latest event time)
and, once complete, a `_COMPLETE` marker naming those files. The pipeline writes a new
generation's files; the launcher publishes it by writing the marker only after the run
succeeded (exit 0), so a generation is complete or it does not count. Readers take the newest
complete one; publishing keeps the two newest and removes older and abandoned generations.
Works on any Beam filesystem (local paths, `gs://`).
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.textio import ReadAllFromText

GENERATION_PREFIX = "generation-"
COMPLETE_MARKER = "_COMPLETE"
STATE_FILE_PREFIX = "identities"
STATE_FILE_SUFFIX = ".jsonl"
GENERATIONS_KEPT = 2


@dataclass(frozen=True)
class IdentityStateSettings:
    """The generation a run starts from (its files; none for a first run), the one it writes,
    and how long a device is remembered after its latest event."""

    previous_files: tuple[str, ...]
    generation: str
    ttl_seconds: float


class DeviceIdentity(NamedTuple):
    """What a run leaves for the next about one cookie device."""

    cookie: str
    cv_id: str | None
    cv_email: str | None
    last_event_ms: int | None

    def to_json(self) -> str:
        return json.dumps(self._asdict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> DeviceIdentity:
        fields: dict[str, Any] = json.loads(line)
        return cls(
            fields["cookie"], fields.get("cv_id"), fields.get("cv_email"), fields["last_event_ms"]
        )


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def complete_generations(state_dir: str) -> list[str]:
    """The complete generations' folders under DIR, oldest first."""
    pattern = _join(state_dir, GENERATION_PREFIX + "*", COMPLETE_MARKER)
    markers = [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]
    return sorted(FileSystems.split(marker)[0] for marker in markers)


def newest_generation_files(state_dir: str) -> list[str]:
    """The state files of the newest complete generation; none when there is none yet."""
    generations = complete_generations(state_dir)
    if not generations:
        return []
    with FileSystems.open(_join(generations[-1], COMPLETE_MARKER)) as handle:
        marker = json.loads(handle.read().decode("utf-8"))
    return [_join(generations[-1], name) for name in marker["files"]]


def new_generation(state_dir: str) -> str:
    """A folder for this run's generation: named by the time, so that names sort by age."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return _join(state_dir, f"{GENERATION_PREFIX}{now}-{secrets.token_hex(4)}")


def _names_in(folder: str) -> list[str]:
    pattern = _join(folder, f"{STATE_FILE_PREFIX}*{STATE_FILE_SUFFIX}")
    matched = FileSystems.match([pattern])[0].metadata_list
    return sorted(FileSystems.split(meta.path)[1] for meta in matched)


def publish_generation(state_dir: str, generation: str) -> None:
    """Mark the generation complete, then keep only the two newest complete generations.

    The marker is written under a temporary name and renamed (a local rename is atomic; an
    object store shows an object only once it is closed), so it is whole or absent.
    """
    marker = {"files": _names_in(generation)}
    temporary = _join(generation, f".{COMPLETE_MARKER}.{secrets.token_hex(4)}")
    with FileSystems.create(temporary) as handle:
        handle.write(json.dumps(marker).encode("utf-8"))
    FileSystems.rename([temporary], [_join(generation, COMPLETE_MARKER)])
    _prune(state_dir)


def _prune(state_dir: str) -> None:
    """Remove complete generations beyond the two newest, and the unpublished ones of failed
    runs that started before the newest (a later one may be a run still going)."""
    kept = complete_generations(state_dir)[-GENERATIONS_KEPT:]
    if not kept:
        return
    for folder in _generation_folders(state_dir):
        if folder not in kept and folder < kept[-1]:
            _delete_folder(folder)


def _is_local(path: str) -> bool:
    return "://" not in path


def _generation_folders(state_dir: str) -> list[str]:
    """Every generation folder under DIR, complete or not (object stores list their files)."""
    if _is_local(state_dir):
        names = os.listdir(state_dir) if os.path.isdir(state_dir) else []
        return sorted(_join(state_dir, n) for n in names if n.startswith(GENERATION_PREFIX))
    pattern = _join(state_dir, GENERATION_PREFIX + "*", "**")
    folders = set()
    for meta in FileSystems.match([pattern])[0].metadata_list:
        relative = meta.path[len(state_dir) :].lstrip("/")
        folders.add(_join(state_dir, relative.split("/", 1)[0]))
    return sorted(folders)


def _delete_folder(folder: str) -> None:
    if _is_local(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    files = FileSystems.match([_join(folder, "**")])[0].metadata_list
    if files:
        FileSystems.delete([meta.path for meta in files])


class ReadIdentityState(beam.PTransform):
    """The DeviceIdentity records of the newest complete generation (none without one)."""

    def __init__(self, files: list[str]) -> None:
        super().__init__()
        self.files = files

    def expand(self, pipeline):
        return (
            pipeline
            | "StateFiles" >> beam.Create(self.files)
            | "ReadStateFiles" >> ReadAllFromText()
            | "ParseState" >> beam.Map(DeviceIdentity.from_json)
        )


def _newest(values) -> int | None:
    return max((v for v in values if v is not None), default=None)


def _unexpired(
    identity: DeviceIdentity, newest_event_ms: int | None, ttl_ms: int
) -> DeviceIdentity | None:
    """The record as the next run gets it, or None once the device is older than the TTL.

    A device that has no timed event takes the run's newest event time: it was seen now.
    """
    last = identity.last_event_ms if identity.last_event_ms is not None else newest_event_ms
    if newest_event_ms is not None and last is not None and last < newest_event_ms - ttl_ms:
        return None
    return identity._replace(last_event_ms=last)


class WriteIdentityState(beam.PTransform):
    """Writes a generation's files: each device's identity, less those past the TTL.

    Takes (identities, newest event times): the TTL counts back from this run's newest event.
    The files do not count until the launcher publishes the generation.
    """

    def __init__(self, generation: str, ttl_seconds: float) -> None:
        super().__init__()
        self.generation = generation
        self.ttl_ms = int(ttl_seconds * 1000)

    def expand(self, inputs):
        identities, newest_event_times = inputs
        newest = newest_event_times | "NewestEvent" >> beam.CombineGlobally(_newest)
        ttl_ms = self.ttl_ms
        return (
            identities
            | "DropExpired"
            >> beam.FlatMap(
                lambda identity, newest_ms: [
                    kept.to_json()
                    for kept in [_unexpired(identity, newest_ms, ttl_ms)]
                    if kept is not None
                ],
                newest_ms=beam.pvalue.AsSingleton(newest),
            )
            | "WriteStateFiles"
            >> beam.io.WriteToText(
                _join(self.generation, STATE_FILE_PREFIX), file_name_suffix=STATE_FILE_SUFFIX
            )
        )
