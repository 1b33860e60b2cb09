"""WriteRequests and WriteDeadLetters: JSON-lines files under --output (SPEC §8, §9)."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.records import DEAD_LETTER_REASONS, METRICS_NAMESPACE, DeadLetter, WoopraRequest

REQUESTS_PREFIX = "requests"
DEAD_LETTERS_PREFIX = "dead_letters"
SUFFIX = ".jsonl"


def _write_lines(lines, output_dir: str, prefix: str):
    return lines | "WriteFiles" >> beam.io.WriteToText(
        os.path.join(output_dir, prefix), file_name_suffix=SUFFIX
    )


class _RequestLinesFn(beam.DoFn):
    def __init__(self) -> None:
        self.sent = Metrics.counter(METRICS_NAMESPACE, "sent")

    def process(self, element: tuple[str, list[WoopraRequest]]):
        _, requests = element
        self.sent.inc(len(requests))
        yield "\n".join(request.to_json() for request in requests)


class WriteRequests(beam.PTransform):
    """The dry-run sink: one JSON line per request, a device's requests together in send order.

    Each device's requests become one multi-line element, so they land consecutively in
    the same file. Counts what it writes as `sent`.
    """

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self.output_dir = output_dir

    def expand(self, devices):
        lines = devices | "ToJsonLines" >> beam.ParDo(_RequestLinesFn())
        return _write_lines(lines, self.output_dir, REQUESTS_PREFIX)


class _CountDeadLettersFn(beam.DoFn):
    def __init__(self) -> None:
        self.dead_lettered = Metrics.counter(METRICS_NAMESPACE, "dead_lettered")
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
    """All stages' dead letters, counted, as `dead_letters-*.jsonl` files."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self.output_dir = output_dir

    def expand(self, dead_letters):
        lines = dead_letters | "Count" >> CountDeadLetters()
        return _write_lines(lines, self.output_dir, DEAD_LETTERS_PREFIX)
