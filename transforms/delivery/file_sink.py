"""WriteRequests and WriteDeadLetters: JSON lines under --output; dead letters also to Pub/Sub."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import FixedWindows

from transforms.core.records import (
    DEAD_LETTER_REASONS,
    METRICS_NAMESPACE,
    DeadLetter,
    WoopraRequest,
)
from transforms.progress import ProgressCounter

REQUESTS_PREFIX = "requests"
DEAD_LETTERS_PREFIX = "dead_letters"
SUFFIX = ".jsonl"


# Streaming output is cut into files of this many seconds each.
WINDOW_SECONDS = 60


def _write_lines(lines, output_dir: str, prefix: str, windowed: bool):
    """Text lines to `<prefix>-*.jsonl`; in streaming, one set of files per window."""
    if not windowed:
        return lines | "WriteFiles" >> beam.io.WriteToText(
            os.path.join(output_dir, prefix), file_name_suffix=SUFFIX
        )
    return (
        lines
        | "Window" >> beam.WindowInto(FixedWindows(WINDOW_SECONDS))
        | "WriteWindowedFiles"
        >> fileio.WriteToFiles(
            path=output_dir,
            file_naming=fileio.default_file_naming(prefix + "-", SUFFIX),
            shards=1,
        )
    )


class _RequestLinesFn(beam.DoFn):
    def __init__(self) -> None:
        self.sent = ProgressCounter("sent")

    def process(self, element: tuple[str, list[WoopraRequest]]):
        _, requests = element
        self.sent.inc(len(requests))
        yield "\n".join(request.to_json() for request in requests)


class WriteRequests(beam.PTransform):
    """The dry-run sink: one JSON line per request, a device's requests together in send order.

    Each device's requests become one multi-line element, so they land consecutively in
    the same file. Counts what it writes as `sent`.
    """

    def __init__(self, output_dir: str, windowed: bool = False) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.windowed = windowed

    def expand(self, devices):
        lines = devices | "ToJsonLines" >> beam.ParDo(_RequestLinesFn())
        return _write_lines(lines, self.output_dir, REQUESTS_PREFIX, self.windowed)


class _CountDeadLettersFn(beam.DoFn):
    def __init__(self) -> None:
        self.dead_lettered = ProgressCounter("dead_lettered")
        self.by_reason = {
            reason: Metrics.counter(METRICS_NAMESPACE, dead_letter_metric(reason))
            for reason in DEAD_LETTER_REASONS
        }

    def process(self, dead_letter: DeadLetter):
        self.dead_lettered.inc()
        self.by_reason[dead_letter.reason].inc()
        yield dead_letter.to_json()


def dead_letter_metric(reason: str) -> str:
    """The counter name for dead letters of one reason."""
    return "dead_letters_" + reason


class CountDeadLetters(beam.PTransform):
    """Counts dead letters (in total and by reason) and turns them into JSON lines."""

    def expand(self, dead_letters):
        return dead_letters | "CountAndSerialize" >> beam.ParDo(_CountDeadLettersFn())


class WriteDeadLetters(beam.PTransform):
    """All stages' dead letters, counted, as `dead_letters-*.jsonl` files or to a Pub/Sub topic."""

    def __init__(self, output_dir: str, windowed: bool = False, topic: str | None = None) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.windowed = windowed
        self.topic = topic

    def expand(self, dead_letters):
        lines = dead_letters | "Count" >> CountDeadLetters()
        if self.topic:
            return (
                lines
                | "ToBytes" >> beam.Map(lambda line: line.encode("utf-8"))
                | "PublishDeadLetters" >> beam.io.WriteToPubSub(self.topic)
            )
        return _write_lines(lines, self.output_dir, DEAD_LETTERS_PREFIX, self.windowed)
