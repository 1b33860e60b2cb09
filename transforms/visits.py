"""Import mode's pure core (SPEC §14): one device's events to visit lines, lines to bodies.

Lines are built from the tracking mapping's own parameters (`request_of`), so both modes send
the same values; only the shape differs. Nothing here needs Beam.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from transforms.mapping import MappingSettings, PreparedEvent, request_of
from transforms.records import INVALID_TIMESTAMP, REQUEST_TOO_LARGE, STAGE_MAP, DeadLetter

DEFAULT_VISIT_GAP_MINUTES = 30.0
DEFAULT_IMPORT_BATCH_BYTES = 1_000_000
# Visit parameters, each from the visit's first event that has it.
_VISIT_PARAMS = ("ip", "browser", "os", "device", "app", "timeout")
# The named identity parameters and the visitor keys they replace.
_VISITOR_IDENTITY = (("cookie", "cookie"), ("cv_id", "id"), ("cv_email", "email"))
# The same text as orjson's, for what orjson refuses (integers beyond 64 bits).
_SORTED_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass
class ImportLine:
    """One visit (or visitor update) as its NDJSON line, with the events it holds."""

    project: str
    device: str
    # (visit start missing, visit start, first messageId of the visit): the body order.
    order: tuple[bool, int, str]
    text: bytes
    actions: int
    events: list[PreparedEvent] = field(default_factory=list, repr=False)

    @property
    def sort_key(self) -> tuple[str, str, bool, int, str, bytes]:
        return (self.project, self.device, *self.order, self.text)


@dataclass
class ImportBody:
    """One POST to the Import API: lines of one project, at most the batch size in bytes."""

    project: str
    index: int
    lines: list[ImportLine]

    @property
    def text(self) -> bytes:
        return b"\n".join(line.text for line in self.lines)

    @property
    def size(self) -> int:
        return sum(len(line.text) for line in self.lines) + len(self.lines) - 1

    @property
    def events(self) -> list[tuple[str, str | None, Any]]:
        """(device, messageId, event) of every event in the body."""
        return [
            (line.device, event.message_id, event.event)
            for line in self.lines
            for event in line.events
        ]

    def halves(self) -> tuple[ImportBody, ImportBody]:
        """The first ceil(n/2) lines and the rest, as the answer to a 413 asks."""
        cut = (len(self.lines) + 1) // 2
        return (
            ImportBody(self.project, self.index, self.lines[:cut]),
            ImportBody(self.project, self.index, self.lines[cut:]),
        )


def needs_action_time(prepared: PreparedEvent) -> DeadLetter | None:
    """An action needs a time: a track, page or screen without one is `invalid_timestamp`."""
    if prepared.timestamp_ms is None and prepared.event_type != "identify":
        detail = f"a {prepared.event_type} event needs a timestamp to be imported"
        return DeadLetter(prepared.message_id, STAGE_MAP, INVALID_TIMESTAMP, detail, prepared.event)
    return None


def sorted_json(line: Any) -> bytes:
    """JSON with sorted keys, no spaces, UTF-8 unescaped (SPEC §14)."""
    try:
        return orjson.dumps(line, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _SORTED_JSON.encode(line).encode("utf-8")


class _Visit:
    """A visit being assembled from one device's events in send order."""

    def __init__(self, start: int | None, first_message_id: str | None) -> None:
        self.start = start
        self.first_message_id = first_message_id or ""
        self.visitor: dict[str, Any] = {}
        self.identity: list[Any] = [None, None, None]  # the last cookie, cv_id, cv_email
        self.visit: dict[str, Any] = {}
        self.actions: list[dict[str, Any]] = []
        self.events: list[PreparedEvent] = []

    def add(self, prepared: PreparedEvent, params: dict[str, Any]) -> None:
        self.events.append(prepared)
        visitor = self.visitor
        properties: dict[str, Any] = {}
        for name, value in params.items():  # one pass over the parameters
            if name.startswith("cv_"):
                visitor[name[3:]] = value
            elif name.startswith("ce_"):
                properties[name[3:]] = value
        identity = self.identity
        for index, (param, _) in enumerate(_VISITOR_IDENTITY):
            value = params.get(param)
            if value is not None:
                identity[index] = value
        visit = self.visit
        if len(visit) < len(_VISIT_PARAMS):
            for name in _VISIT_PARAMS:
                if name not in visit and name in params:
                    visit[name] = params[name]
        if prepared.event_type != "identify":
            referer = params.get("referer")
            if referer is not None:
                properties["referer"] = referer
            self.actions.append(
                {"name": params["event"], "time": params["timestamp"], "properties": properties}
            )

    def line(self) -> dict[str, Any]:
        """The visit's line; the named identity replaces custom keys of the same name."""
        visitor = self.visitor
        for index, (_, key) in enumerate(_VISITOR_IDENTITY):
            if self.identity[index] is not None:
                visitor[key] = self.identity[index]
        line: dict[str, Any] = {"visitor": visitor}
        if self.actions:
            if self.visit:
                line["visit"] = self.visit
            line["actions"] = self.actions
        return line


def build_visits(
    device: str,
    events: Iterable[PreparedEvent],
    settings: MappingSettings,
    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES,
    max_line_bytes: int = DEFAULT_IMPORT_BATCH_BYTES,
) -> tuple[list[ImportLine], list[DeadLetter]]:
    """One device's events (in send order, stitched) as visit lines, from the tracking
    mapping's parameters (`request_of`, without the URL size check)."""
    mapped = [(event, request_of(event, settings).params) for event in events]
    return visit_lines(device, mapped, visit_gap_minutes, max_line_bytes)


def visit_lines(
    device: str,
    mapped: Iterable[tuple[PreparedEvent, dict[str, Any]]],
    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES,
    max_line_bytes: int = DEFAULT_IMPORT_BATCH_BYTES,
) -> tuple[list[ImportLine], list[DeadLetter]]:
    """One device's mapped events (in send order) cut into visits per project (SPEC §14).

    A new visit starts when an event comes more than the gap after the previous one; an
    identify without a timestamp joins the device's last visit, or makes a visitor update.
    A line over `max_line_bytes` dead-letters its events as `request_too_large`.
    """
    gap_ms = visit_gap_minutes * 60_000
    visits: dict[str, list[_Visit]] = {}
    previous_ms: dict[str, int] = {}
    for prepared, params in mapped:
        project = prepared.project
        project_visits = visits.setdefault(project, [])
        timestamp = prepared.timestamp_ms
        last = previous_ms.get(project)
        if not project_visits or (
            timestamp is not None and (last is None or timestamp - last > gap_ms)
        ):
            project_visits.append(_Visit(timestamp, prepared.message_id))
        if timestamp is not None:
            previous_ms[project] = timestamp
        project_visits[-1].add(prepared, params)
    lines: list[ImportLine] = []
    dead: list[DeadLetter] = []
    for project, project_visits in visits.items():
        for visit in project_visits:
            text = sorted_json(visit.line())
            if len(text) > max_line_bytes:
                detail = f"import line is {len(text)} bytes, over {max_line_bytes}"
                dead.extend(
                    DeadLetter(e.message_id, STAGE_MAP, REQUEST_TOO_LARGE, detail, e.event)
                    for e in visit.events
                )
                continue
            order = (visit.start is None, visit.start or 0, visit.first_message_id)
            lines.append(ImportLine(project, device, order, text, len(visit.actions), visit.events))
    return lines, dead


def pack_bodies(
    lines: Iterable[ImportLine], max_body_bytes: int = DEFAULT_IMPORT_BATCH_BYTES
) -> list[ImportBody]:
    """Lines in body order, packed greedily into bodies of at most `max_body_bytes`, one project
    per body (counting the newline between lines, none after the last). The same lines in any
    order give byte-identical bodies."""
    bodies: list[ImportBody] = []
    current: list[ImportLine] = []
    size = 0
    project: str | None = None
    for line in sorted(lines, key=lambda line: line.sort_key):
        fits = size + 1 + len(line.text) <= max_body_bytes
        if current and (line.project != project or not fits):
            bodies.append(ImportBody(project or "", _next_index(bodies, project), current))
            current, size = [], 0
        if not current:
            project, size = line.project, len(line.text)
        else:
            size += 1 + len(line.text)
        current.append(line)
    if current:
        bodies.append(ImportBody(project or "", _next_index(bodies, project), current))
    return bodies


def _next_index(bodies: list[ImportBody], project: str | None) -> int:
    """A body's position among its project's bodies."""
    return bodies[-1].index + 1 if bodies and bodies[-1].project == project else 0
