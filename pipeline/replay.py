"""ReadDeadLetters: the replay source (SPEC §16), the events of earlier dead letters as records.

Replay is a different source feeding the same pipeline, so every sink, filter and delivery flag
applies to it as to a first run. A parse-stage dead letter gives back its raw text (which will
usually fail again), every other one the original event as JSON; each is then counted in
`input` by ParseEvents like any record read from a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.textio import ReadAllFromText
from apache_beam.metrics import Metrics

from transforms.core.records import (
    DEAD_LETTER_REASONS,
    METRICS_NAMESPACE,
    UNREADABLE_FILE,
    compact_json,
)

KNOWN_REASONS = frozenset(DEAD_LETTER_REASONS)
# Dead letters read but not replayable, counted outside `input`.
REPLAY_SKIPPED = "replay_skipped"


def replay_record(line: bytes, reasons: frozenset[str]) -> tuple[bytes | None, bool]:
    """For one dead-letter line: the record to send again (or None), and whether the line is
    a dead letter of a chosen reason that cannot be replayed (counted as skipped).

    A line that is not a dead letter is handed on as it is, so that ParseEvents dead-letters
    it again rather than it vanishing. No `reasons` means every reason.
    """
    try:
        letter = json.loads(line)
    except ValueError:
        return line, False
    if not isinstance(letter, dict) or "reason" not in letter:
        return line, False
    if reasons and letter["reason"] not in reasons:
        return None, False
    event = letter.get("event")
    # A file that could not be read to its end (SPEC §9) has no event to send again.
    if letter["reason"] == UNREADABLE_FILE or event is None:
        return None, True
    if isinstance(event, str):
        return event.encode("utf-8", "surrogatepass"), False
    return compact_json(event).encode("utf-8"), False


class _ReplayRecordsFn(beam.DoFn):
    def __init__(self, reasons: frozenset[str]) -> None:
        self.reasons = reasons
        self.skipped = Metrics.counter(METRICS_NAMESPACE, REPLAY_SKIPPED)

    def process(self, line: bytes) -> Iterator[bytes]:
        record, skipped = replay_record(line, self.reasons)
        if skipped:
            self.skipped.inc()
        if record is not None:
            yield record


class ReadDeadLetters(beam.PTransform):
    """The records of the dead letters matching a glob, of the given reasons (all if none)."""

    def __init__(self, file_pattern: str, reasons: list[str] | None = None) -> None:
        super().__init__()
        self.file_pattern = file_pattern
        self.reasons = frozenset(reasons or ())

    def expand(self, pipeline):
        return (
            pipeline
            | "MatchDeadLetters" >> fileio.MatchFiles(self.file_pattern)
            | "DeadLetterPaths" >> beam.Map(lambda metadata: metadata.path)
            | "ReadDeadLetterLines" >> ReadAllFromText(coder=coders.BytesCoder())
            | "ToRecords" >> beam.ParDo(_ReplayRecordsFn(self.reasons))
        )
