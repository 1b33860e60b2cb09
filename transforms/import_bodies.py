"""BuildVisits, PackBodies and WriteImportBodies: import mode's Beam stages (SPEC §14).

    (device, [PreparedEvent]) -> BuildVisits -> DeviceLines -> PackBodies -> (project, [ImportBody])
                                                               -> WriteImportBodies (dry run)

PackBodies' GroupByKey by project is the one shuffle import adds: it puts a project's lines in
one place, where the body order is total, and hands one element per project on, so that one
sender holds a project's windows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.core.mapping import MappingSettings, PreparedEvent
from transforms.core.records import DEAD_LETTER_TAG, METRICS_NAMESPACE
from transforms.core.visits import (
    DEFAULT_IMPORT_BATCH_BYTES,
    DEFAULT_VISIT_GAP_MINUTES,
    ImportBody,
    build_device_visits,
    pack_devices,
)
from transforms.delivery.ledger import write_immutable

IMPORT_PREFIX = "import"
IMPORT_SUFFIX = ".ndjson"


@dataclass(frozen=True)
class VisitSettings:
    """How events become visits and visits bodies (`--visit_gap_minutes`,
    `--import_batch_bytes`)."""

    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES
    import_batch_bytes: int = DEFAULT_IMPORT_BATCH_BYTES


class _BuildVisitsFn(beam.DoFn):
    def __init__(self, mapping: MappingSettings, settings: VisitSettings) -> None:
        self.mapping = mapping
        self.settings = settings

    def process(self, element: tuple[str, list[PreparedEvent]]):
        device, events = element
        devices, dead = build_device_visits(
            device,
            events,
            self.mapping,
            self.settings.visit_gap_minutes,
            self.settings.import_batch_bytes,
        )
        for letter in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        for lines in devices:
            yield lines.project, lines


class BuildVisits(beam.PTransform):
    """(device, [PreparedEvent]) to (project, DeviceLines): one line per visit or visitor
    update, each device's lines of a project in one element.

    Lines over the batch size leave as `request_too_large` dead letters under DEAD_LETTER_TAG.
    """

    def __init__(self, mapping: MappingSettings, settings: VisitSettings) -> None:
        super().__init__()
        self.mapping = mapping
        self.settings = settings

    def expand(self, devices):
        return devices | "BuildLines" >> beam.ParDo(
            _BuildVisitsFn(self.mapping, self.settings)
        ).with_outputs(DEAD_LETTER_TAG, main="lines")


class PackBodies(beam.PTransform):
    """(project, DeviceLines) to (project, [ImportBody]) in body order, packed greedily."""

    def __init__(self, settings: VisitSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, lines):
        batch_bytes = self.settings.import_batch_bytes
        return (
            lines
            | "GroupByProject" >> beam.GroupByKey()
            | "Pack"
            >> beam.MapTuple(lambda project, grouped: (project, pack_devices(grouped, batch_bytes)))
        )


def body_stats(element: tuple[str, list[ImportBody]]) -> dict[str, Any]:
    """What the plan counts of one project's bodies (SPEC §14)."""
    project, bodies = element
    return {
        "events": sum(body.event_count for body in bodies),
        "visitors": len({device for body in bodies for device in body.devices}),
        "visits": sum(body.visit_count for body in bodies),
        "lines": sum(body.line_count for body in bodies),
        "bodies": len(bodies),
        "bytes": sum(body.size for body in bodies),
        "bodies_per_project": {project: len(bodies)},
    }


def body_file_name(output_dir: str, body: ImportBody) -> str:
    """`import-<project>-<index>.ndjson`; a project name that is not safe in a file name is
    made safe, with a hash of it so that two names cannot meet."""
    project = re.sub(r"[^A-Za-z0-9._-]", "_", body.project)
    if project != body.project:
        project += "-" + hashlib.sha256(body.project.encode("utf-8")).hexdigest()[:8]
    return FileSystems.join(
        output_dir, f"{IMPORT_PREFIX}-{project}-{body.index:05d}{IMPORT_SUFFIX}"
    )


class _WriteBodiesFn(beam.DoFn):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.sent = Metrics.counter(METRICS_NAMESPACE, "sent")

    def process(self, element: tuple[str, Iterable[ImportBody]]):
        _, bodies = element
        for body in bodies:
            write_immutable(body_file_name(self.output_dir, body), body.text)
            self.sent.inc(body.event_count)
            yield body_file_name(self.output_dir, body)


class WriteImportBodies(beam.PTransform):
    """The dry-run sink of import mode: each body as the file it would POST, counted `sent`."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self.output_dir = output_dir

    def expand(self, bodies):
        return bodies | "WriteBodyFiles" >> beam.ParDo(_WriteBodiesFn(self.output_dir))
