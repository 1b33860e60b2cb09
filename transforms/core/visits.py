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

from transforms.core.mapping import MappingSettings, PreparedEvent, request_of
from transforms.core.records import INVALID_TIMESTAMP, REQUEST_TOO_LARGE, STAGE_MAP, DeadLetter

DEFAULT_VISIT_GAP_MINUTES = 30.0
DEFAULT_IMPORT_BATCH_BYTES = 1_000_000
# Visit parameters, each from the visit's first event that has it.
_VISIT_PARAMS = ("ip", "browser", "os", "device", "app", "timeout")
# For a line orjson refuses (an integer beyond 64 bits): the same keys, separators and
# unescaped UTF-8, but floats as Python writes them (1.5e-07 where orjson writes 1.5e-7).
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


@dataclass
class DeviceLines:
    """One device's lines of one project in body order: what BuildVisits hands PackBodies.

    Held in as few objects as it can be, since PackBodies holds a project's worth of them and
    the garbage collector walks every one, again and again, while more are built: the lines'
    text as one `bytes` (joined by newlines, which JSON text never holds unescaped), the events,
    and where each line's events end (line i holds events[event_ends[i - 1]:event_ends[i]]).
    A line's place in body order is that of its first event (a visit's start and first
    messageId) unless `orders` gives it.
    """

    project: str
    device: str
    text: bytes
    event_ends: tuple[int, ...]
    events: tuple[PreparedEvent, ...]
    orders: tuple[tuple[bool, int, str], ...] | None = None

    # Written out: the one dataclasses would write is interpreted, this one compiled.
    def __init__(
        self,
        project: str,
        device: str,
        text: bytes,
        event_ends: tuple[int, ...],
        events: tuple[PreparedEvent, ...],
        orders: tuple[tuple[bool, int, str], ...] | None = None,
    ) -> None:
        self.project = project
        self.device = device
        self.text = text
        self.event_ends = event_ends
        self.events = events
        self.orders = orders

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle's default makes an empty object first, which a compiled __init__ refuses.
        fields = (self.project, self.device, self.text, self.event_ends, self.events, self.orders)
        return DeviceLines, fields

    @property
    def line_count(self) -> int:
        return len(self.event_ends)

    @property
    def texts(self) -> list[bytes]:
        return self.text.split(b"\n")

    def order(self, index: int) -> tuple[bool, int, str]:
        if self.orders is not None:
            return self.orders[index]
        return _event_order(self.events[self.event_ends[index - 1] if index else 0])

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Where the text of lines start..end (end excluded, start < end) is in `text`."""
        text = self.text
        if start == 0 and end == len(self.event_ends):
            return 0, len(text)
        first = 0
        for _ in range(start):
            first = text.index(b"\n", first) + 1
        last = first
        for _ in range(end - start):
            last = text.find(b"\n", last + 1)
            if last < 0:
                return first, len(text)
        return first, last

    def line(self, index: int) -> ImportLine:
        start = self.event_ends[index - 1] if index else 0
        events = list(self.events[start : self.event_ends[index]])
        first, last = self.span(index, index + 1)
        actions = sum([1 for event in events if event.event_type != "identify"])
        text = self.text[first:last]
        return ImportLine(self.project, self.device, self.order(index), text, actions, events)


def _event_order(event: PreparedEvent) -> tuple[bool, int, str]:
    """The body order of a visit that starts with this event."""
    timestamp = event.timestamp_ms
    return (timestamp is None, timestamp or 0, event.message_id or "")


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
        b"\n".join([line.text for line in lines]),
        tuple(ends),
        tuple(events),
        tuple([line.order for line in lines]),
    )


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
        return b"\n".join([_part_text(device, start, end) for device, start, end in self.parts])

    @property
    def size(self) -> int:
        size = -1
        for device, start, end in self.parts:
            first, last = device.span(start, end)
            size += last - first + 1
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
        count = 0
        for device, start, end in self.parts:
            events, ends = device.events, device.event_ends
            for index in range(start, end):
                for event in events[(ends[index - 1] if index else 0) : ends[index]]:
                    if event.event_type != "identify":
                        count += 1
                        break
        return count

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


def _part_text(device: DeviceLines, start: int, end: int) -> bytes:
    first, last = device.span(start, end)
    return device.text if last - first == len(device.text) else device.text[first:last]


def _event_range(device: DeviceLines, start: int, end: int) -> tuple[int, int]:
    """Where the events of lines start..end of a device are in its events."""
    return (device.event_ends[start - 1] if start else 0), device.event_ends[end - 1]


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


# What a parameter is in a line, and its key there: a visitor key (cv_...), a named identity
# (cookie, cv_id, cv_email: the last one of a visit replaces custom visitor keys of the same
# name), an action property (ce_..., and referer, which replaces ce_referer), a visit
# parameter, or none of these. Names repeat from event to event, so each distinct name is
# worked out once, not sliced anew for every event (that was a fifth of visit building); the
# cache is bounded, since custom names come from the data.
_OTHER_KEY, _VISITOR_KEY, _PROPERTY_KEY, _VISIT_KEY = 0, 1, 2, 3
_COOKIE_KEY, _ID_KEY, _EMAIL_KEY, _REFERER_KEY = 4, 5, 6, 7
_LINE_KEYS: dict[str, tuple[int, str]] = {}
_LINE_KEYS_MAX = 10_000


def _line_key(name: str) -> tuple[int, str]:
    known = _LINE_KEYS.get(name)
    if known is not None:
        return known
    if name.startswith("ce_"):
        known = (_PROPERTY_KEY, name[3:])
    elif name == "cv_id":
        known = (_ID_KEY, "id")
    elif name == "cv_email":
        known = (_EMAIL_KEY, "email")
    elif name.startswith("cv_"):
        known = (_VISITOR_KEY, name[3:])
    elif name in _VISIT_PARAMS:
        known = (_VISIT_KEY, name)
    elif name == "cookie":
        known = (_COOKIE_KEY, name)
    elif name == "referer":
        known = (_REFERER_KEY, name)
    else:
        known = (_OTHER_KEY, name)
    if len(_LINE_KEYS) < _LINE_KEYS_MAX:
        _LINE_KEYS[name] = known
    return known


class _ProjectLines:
    """One device's lines of one project, built visit by visit from its events in send order.

    One builder per device and project, not one object per visit: the visit being built is
    held in its fields and its dicts are emptied for the next one, so that building allocates
    little beyond what each line needs.
    """

    def __init__(self, project: str, gap_ms: float, max_line_bytes: int) -> None:
        self.project = project
        self.gap_ms = gap_ms
        self.max_line_bytes = max_line_bytes
        self.texts: list[bytes] = []
        self.event_ends: list[int] = []
        self.events: list[PreparedEvent] = []
        self.dead: list[DeadLetter] = []
        self.previous_ms: int | None = None
        self.in_body_order = True
        # The visit being built: where its events start, its order, what its line holds.
        self.started = False
        self.first_event = 0
        self.order: tuple[bool, int, str] = (False, 0, "")
        self.visitor: dict[str, Any] = {}
        self.visit: dict[str, Any] = {}
        self.actions: list[dict[str, Any]] = []
        self.cookie: Any = None
        self.cv_id: Any = None
        self.cv_email: Any = None
        # The last line kept, to tell whether the lines come in body order.
        self.last_order: tuple[bool, int, str] | None = None
        self.last_text = b""

    def add(self, prepared: PreparedEvent, params: dict[str, Any]) -> None:
        """The next event with its mapped parameters; more than the gap after the previous
        one starts a new visit (an event without a timestamp joins the last one)."""
        timestamp = prepared.timestamp_ms
        previous = self.previous_ms
        if not self.started or (
            timestamp is not None and (previous is None or timestamp - previous > self.gap_ms)
        ):
            if self.started:
                self._end_visit()
            self.started = True
            self.order = _event_order(prepared)
        if timestamp is not None:
            self.previous_ms = timestamp
        self.events.append(prepared)
        visitor = self.visitor
        properties: dict[str, Any] = {}
        referer: Any = None
        for name, value in params.items():  # one pass over the parameters
            kind, key = _line_key(name)
            if kind == _PROPERTY_KEY:
                properties[key] = value
            elif kind == _VISITOR_KEY:
                visitor[key] = value
            elif kind == _VISIT_KEY:
                if key not in self.visit:  # each from the visit's first event that has it
                    self.visit[key] = value
            elif kind == _COOKIE_KEY:
                if value is not None:
                    self.cookie = value
            elif kind == _ID_KEY:
                visitor[key] = value
                if value is not None:
                    self.cv_id = value
            elif kind == _EMAIL_KEY:
                visitor[key] = value
                if value is not None:
                    self.cv_email = value
            elif kind == _REFERER_KEY:
                referer = value
        if prepared.event_type != "identify":
            if referer is not None:
                properties["referer"] = referer
            self.actions.append(
                {"name": params["event"], "time": params["timestamp"], "properties": properties}
            )

    def _end_visit(self) -> None:
        """The visit's line, kept, or its events dead-lettered when it is over the limit."""
        visitor = self.visitor
        if self.cookie is not None:
            visitor["cookie"] = self.cookie
        if self.cv_id is not None:
            visitor["id"] = self.cv_id
        if self.cv_email is not None:
            visitor["email"] = self.cv_email
        line: dict[str, Any] = {"visitor": visitor}
        if self.actions:
            if self.visit:
                line["visit"] = self.visit
            line["actions"] = self.actions
        text = sorted_json(line)
        events = self.events
        if len(text) > self.max_line_bytes:
            detail = f"import line is {len(text)} bytes, over {self.max_line_bytes}"
            for event in events[self.first_event :]:
                self.dead.append(
                    DeadLetter(event.message_id, STAGE_MAP, REQUEST_TOO_LARGE, detail, event.event)
                )
            del events[self.first_event :]
        else:
            last_order = self.last_order
            if last_order is not None and (
                last_order > self.order or (last_order == self.order and self.last_text > text)
            ):
                self.in_body_order = False
            self.last_order, self.last_text = self.order, text
            self.texts.append(text)
            self.event_ends.append(len(events))
        self.first_event = len(events)
        visitor.clear()
        self.visit.clear()
        self.actions.clear()
        self.cookie = self.cv_id = self.cv_email = None

    def device_lines(self, device: str) -> DeviceLines | None:
        """The lines built, in body order (None if every visit was over the limit)."""
        if self.started:
            self._end_visit()
            self.started = False
        if not self.texts:
            return None
        lines = DeviceLines(
            self.project,
            device,
            b"\n".join(self.texts),
            tuple(self.event_ends),
            tuple(self.events),
        )
        if self.in_body_order:
            return lines
        return _device_lines([lines.line(index) for index in range(lines.line_count)])


def _project_lines(
    mapped: Iterable[tuple[PreparedEvent, dict[str, Any]]],
    visit_gap_minutes: float,
    max_line_bytes: int,
) -> list[_ProjectLines]:
    """One device's mapped events (in send order) cut into visits per project, in the order
    the projects first appear."""
    gap_ms = visit_gap_minutes * 60_000
    builders: list[_ProjectLines] = []
    current: _ProjectLines | None = None
    for prepared, params in mapped:
        project = prepared.project
        if current is None or current.project != project:
            current = None
            for builder in builders:
                if builder.project == project:
                    current = builder
                    break
            if current is None:
                current = _ProjectLines(project, gap_ms, max_line_bytes)
                builders.append(current)
        current.add(prepared, params)
    return builders


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
    """device_visits' lines one by one, in body order per project."""
    devices, dead = device_visits(device, mapped, visit_gap_minutes, max_line_bytes)
    return [lines.line(index) for lines in devices for index in range(lines.line_count)], dead


def device_visits(
    device: str,
    mapped: Iterable[tuple[PreparedEvent, dict[str, Any]]],
    visit_gap_minutes: float = DEFAULT_VISIT_GAP_MINUTES,
    max_line_bytes: int = DEFAULT_IMPORT_BATCH_BYTES,
) -> tuple[list[DeviceLines], list[DeadLetter]]:
    """One device's mapped events (in send order) cut into visits per project (SPEC §14), as
    one DeviceLines per project.

    A new visit starts when an event comes more than the gap after the previous one; an
    identify without a timestamp joins the device's last visit, or makes a visitor update.
    A line over `max_line_bytes` dead-letters its events as `request_too_large`.
    """
    devices: list[DeviceLines] = []
    dead: list[DeadLetter] = []
    for builder in _project_lines(mapped, visit_gap_minutes, max_line_bytes):
        lines = builder.device_lines(device)
        if lines is not None:
            devices.append(lines)
        dead.extend(builder.dead)
    return devices, dead


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
        count, whole = device.line_count, len(device.text)
        if parts and device.project == project and size + 1 + whole <= max_body_bytes:
            parts.append((device, 0, count))  # all of its lines fit: the common case
            size += 1 + whole
            continue
        start = 0
        line_start = 0
        for index in range(count):
            line_end = device.text.find(b"\n", line_start)
            if line_end < 0:
                line_end = whole
            length, line_start = line_end - line_start, line_end + 1
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
        if count > start:
            parts.append((device, start, count))
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
            lines = [previous.line(i) for i in range(previous.line_count)]
            lines += [device.line(i) for i in range(device.line_count)]
            merged.append(_device_lines(lines))
        else:
            merged.append(device)
    return merged


def _device_order(device: DeviceLines) -> tuple[str, str]:
    return (device.project, device.device)


def _next_index(bodies: list[ImportBody], project: str | None) -> int:
    """A body's position among its project's bodies."""
    return bodies[-1].index + 1 if bodies and bodies[-1].project == project else 0
