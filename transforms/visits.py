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
class DeviceLines:
    """One device's lines of one project in body order: what BuildVisits hands PackBodies.

    Held column by column in tuples, so that a project's worth of lines costs the garbage
    collector's passes two objects per device (this one and its events), not several per line,
    and its packing sorts devices, not lines. Line i holds events[ends[i - 1]:ends[i]].
    """

    project: str
    device: str
    orders: tuple[tuple[bool, int, str], ...]
    texts: tuple[bytes, ...]
    actions: tuple[int, ...]
    ends: tuple[int, ...]
    events: tuple[PreparedEvent, ...]

    def line(self, index: int) -> ImportLine:
        start = self.ends[index - 1] if index else 0
        events = list(self.events[start : self.ends[index]])
        order, text, actions = self.orders[index], self.texts[index], self.actions[index]
        return ImportLine(self.project, self.device, order, text, actions, events)


def _by_device(lines: Iterable[ImportLine]) -> list[DeviceLines]:
    """Lines grouped by project and device, each group in body order."""
    groups: dict[tuple[str, str], list[ImportLine]] = {}
    for line in lines:
        key = (line.project, line.device)
        group = groups.get(key)
        if group is None:
            groups[key] = [line]
        else:
            group.append(line)
    return [_device_lines(group) for group in groups.values()]


def _device_lines(lines: list[ImportLine]) -> DeviceLines:
    """One device's lines of one project, sorted into body order."""
    lines = sorted(lines, key=_line_order)
    ends: list[int] = []
    events: list[PreparedEvent] = []
    for line in lines:
        events.extend(line.events)
        ends.append(len(events))
    first = lines[0]
    return DeviceLines(
        first.project,
        first.device,
        tuple([line.order for line in lines]),
        tuple([line.text for line in lines]),
        tuple([line.actions for line in lines]),
        tuple(ends),
        tuple(events),
    )


def _resorted(device: DeviceLines) -> DeviceLines:
    return _device_lines([device.line(index) for index in range(len(device.texts))])


def _lines_in_body_order(orders: list[tuple[bool, int, str]], texts: list[bytes]) -> bool:
    """Whether one device's lines of one project are in body order already (as visits of
    events in send order are)."""
    for index in range(1, len(orders)):
        before, after = orders[index - 1], orders[index]
        if before > after or (before == after and texts[index - 1] > texts[index]):
            return False
    return True


def _line_order(line: ImportLine) -> tuple[tuple[bool, int, str], bytes]:
    return (line.order, line.text)


# A run of lines of one device within a body: (the device's lines, first index, end index).
_Part = tuple[DeviceLines, int, int]


@dataclass
class ImportBody:
    """One POST to the Import API: lines of one project, at most the batch size in bytes, as
    runs of consecutive lines of one device each."""

    project: str
    index: int
    parts: list[_Part]

    @property
    def lines(self) -> list[ImportLine]:
        return [device.line(i) for device, start, end in self.parts for i in range(start, end)]

    @property
    def text(self) -> bytes:
        return b"\n".join(
            [text for device, start, end in self.parts for text in device.texts[start:end]]
        )

    @property
    def size(self) -> int:
        size = -1
        for device, start, end in self.parts:
            for text in device.texts[start:end]:
                size += len(text) + 1
        return size

    @property
    def line_count(self) -> int:
        return sum([end - start for _, start, end in self.parts])

    @property
    def event_count(self) -> int:
        count = 0
        for device, start, end in self.parts:
            first, last = _event_range(device, start, end)
            count += last - first
        return count

    @property
    def visit_count(self) -> int:
        """Lines with actions: visits, not visitor updates."""
        return sum([1 for device, start, end in self.parts for n in device.actions[start:end] if n])

    @property
    def devices(self) -> list[str]:
        """The device of each run of lines."""
        return [device.device for device, _, _ in self.parts]

    @property
    def events(self) -> list[tuple[str, str | None, Any]]:
        """(device, messageId, event) of every event in the body."""
        events: list[tuple[str, str | None, Any]] = []
        for device, start, end in self.parts:
            first, last = _event_range(device, start, end)
            for event in device.events[first:last]:
                events.append((device.device, event.message_id, event.event))
        return events

    def halves(self) -> tuple[ImportBody, ImportBody]:
        """The first ceil(n/2) lines and the rest, as the answer to a 413 asks."""
        left = (self.line_count + 1) // 2
        first: list[_Part] = []
        rest: list[_Part] = []
        for device, start, end in self.parts:
            take = min(left, end - start)
            if take:
                first.append((device, start, start + take))
            if start + take < end:
                rest.append((device, start + take, end))
            left -= take
        return ImportBody(self.project, self.index, first), ImportBody(
            self.project, self.index, rest
        )


def _event_range(device: DeviceLines, start: int, end: int) -> tuple[int, int]:
    """Where the events of lines start..end of a device are in its events."""
    return (device.ends[start - 1] if start else 0), device.ends[end - 1]


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


# What a parameter is in a line: a visitor key (cv_...), an action property (ce_...) or
# neither, and its key there. Names repeat from event to event, so each distinct name is
# worked out once, not sliced anew for every event (that was a fifth of visit building); the
# cache is bounded, since custom names come from the data.
_OTHER_KEY, _VISITOR_KEY, _PROPERTY_KEY = 0, 1, 2
_LINE_KEYS: dict[str, tuple[int, str]] = {}
_LINE_KEYS_MAX = 10_000


def _line_key(name: str) -> tuple[int, str]:
    known = _LINE_KEYS.get(name)
    if known is not None:
        return known
    if name.startswith("cv_"):
        known = (_VISITOR_KEY, name[3:])
    elif name.startswith("ce_"):
        known = (_PROPERTY_KEY, name[3:])
    else:
        known = (_OTHER_KEY, name)
    if len(_LINE_KEYS) < _LINE_KEYS_MAX:
        _LINE_KEYS[name] = known
    return known


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
            kind, key = _line_key(name)
            if kind == _VISITOR_KEY:
                visitor[key] = value
            elif kind == _PROPERTY_KEY:
                properties[key] = value
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

    @property
    def order(self) -> tuple[bool, int, str]:
        return (self.start is None, self.start or 0, self.first_message_id)

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
    return visit_lines(device, mapped_events(events, settings), visit_gap_minutes, max_line_bytes)


def build_device_visits(
    device: str,
    events: Iterable[PreparedEvent],
    settings: MappingSettings,
    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES,
    max_line_bytes: int = DEFAULT_IMPORT_BATCH_BYTES,
) -> tuple[list[DeviceLines], list[DeadLetter]]:
    """build_visits' lines as DeviceLines, one per project, as BuildVisits hands them on."""
    mapped = mapped_events(events, settings)
    return device_visits(device, mapped, visit_gap_minutes, max_line_bytes)


def mapped_events(
    events: Iterable[PreparedEvent], settings: MappingSettings
) -> list[tuple[PreparedEvent, dict[str, Any]]]:
    """Each event with the tracking mapping's parameters."""
    return [(event, request_of(event, settings).params) for event in events]


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
    lines: list[ImportLine] = []
    dead: list[DeadLetter] = []
    for project, project_visits in _visits(mapped, visit_gap_minutes).items():
        for visit in project_visits:
            text = _visit_text(visit, max_line_bytes, dead)
            if text is not None:
                order = visit.order
                lines.append(
                    ImportLine(project, device, order, text, len(visit.actions), visit.events)
                )
    return lines, dead


def device_visits(
    device: str,
    mapped: Iterable[tuple[PreparedEvent, dict[str, Any]]],
    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES,
    max_line_bytes: int = DEFAULT_IMPORT_BATCH_BYTES,
) -> tuple[list[DeviceLines], list[DeadLetter]]:
    """visit_lines' lines as DeviceLines, one per project, without an ImportLine each."""
    devices: list[DeviceLines] = []
    dead: list[DeadLetter] = []
    for project, project_visits in _visits(mapped, visit_gap_minutes).items():
        orders: list[tuple[bool, int, str]] = []
        texts: list[bytes] = []
        actions: list[int] = []
        ends: list[int] = []
        events: list[PreparedEvent] = []
        for visit in project_visits:
            text = _visit_text(visit, max_line_bytes, dead)
            if text is not None:
                orders.append(visit.order)
                texts.append(text)
                actions.append(len(visit.actions))
                events.extend(visit.events)
                ends.append(len(events))
        if texts:
            lines = DeviceLines(
                project,
                device,
                tuple(orders),
                tuple(texts),
                tuple(actions),
                tuple(ends),
                tuple(events),
            )
            devices.append(lines if _lines_in_body_order(orders, texts) else _resorted(lines))
    return devices, dead


def _visits(
    mapped: Iterable[tuple[PreparedEvent, dict[str, Any]]], visit_gap_minutes: float
) -> dict[str, list[_Visit]]:
    """One device's visits per project."""
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
    return visits


def _visit_text(visit: _Visit, max_line_bytes: int, dead: list[DeadLetter]) -> bytes | None:
    """The visit's line, or None with its events dead-lettered when it is over the limit."""
    text = sorted_json(visit.line())
    if len(text) > max_line_bytes:
        detail = f"import line is {len(text)} bytes, over {max_line_bytes}"
        dead.extend(
            DeadLetter(e.message_id, STAGE_MAP, REQUEST_TOO_LARGE, detail, e.event)
            for e in visit.events
        )
        return None
    return text


def pack_bodies(
    lines: Iterable[ImportLine], max_body_bytes: int = DEFAULT_IMPORT_BATCH_BYTES
) -> list[ImportBody]:
    """`pack_devices` of the lines."""
    return pack_devices(_by_device(lines), max_body_bytes)


def pack_devices(
    devices: Iterable[DeviceLines], max_body_bytes: int = DEFAULT_IMPORT_BATCH_BYTES
) -> list[ImportBody]:
    """Lines in body order, packed greedily into bodies of at most `max_body_bytes`, one project
    per body (counting the newline between lines, none after the last). The same lines in any
    order give byte-identical bodies.

    Body order is by project, device, then each device's own order, so sorting the devices
    orders every line."""
    bodies: list[ImportBody] = []
    parts: list[_Part] = []
    size = 0
    project: str | None = None
    for device in _devices_in_body_order(devices):
        texts = device.texts
        start = 0
        for index in range(len(texts)):
            length = len(texts[index])
            if (parts or index > start) and (
                device.project != project or size + 1 + length > max_body_bytes
            ):
                if index > start:
                    parts.append((device, start, index))
                bodies.append(ImportBody(project or "", _next_index(bodies, project), parts))
                parts, start, size = [], index, 0
            if not parts and index == start:
                project, size = device.project, length
            else:
                size += 1 + length
        if len(texts) > start:
            parts.append((device, start, len(texts)))
    if parts:
        bodies.append(ImportBody(project or "", _next_index(bodies, project), parts))
    return bodies


def _devices_in_body_order(devices: Iterable[DeviceLines]) -> list[DeviceLines]:
    """Sorted by project and device; a device given twice has its lines merged."""
    ordered = sorted(devices, key=_device_order)
    merged: list[DeviceLines] = []
    for device in ordered:
        if merged and _device_order(merged[-1]) == _device_order(device):
            previous = merged.pop()
            lines = [previous.line(i) for i in range(len(previous.texts))]
            lines += [device.line(i) for i in range(len(device.texts))]
            merged.append(_device_lines(lines))
        else:
            merged.append(device)
    return merged


def _device_order(device: DeviceLines) -> tuple[str, str]:
    return (device.project, device.device)


def _next_index(bodies: list[ImportBody], project: str | None) -> int:
    """A body's position among its project's bodies."""
    return bodies[-1].index + 1 if bodies and bodies[-1].project == project else 0
