"""Import mode's pure core: visits, the line format and packing (SPEC §14), without Beam."""

from __future__ import annotations

import json
import pickle
import random

from transforms.core.mapping import MappingSettings, PreparedEvent, prepare_event
from transforms.core.records import INVALID_TIMESTAMP, REQUEST_TOO_LARGE
from transforms.core.visits import (
    ImportLine,
    build_visits,
    device_visits,
    mapped_events,
    needs_action_time,
    pack_bodies,
    sorted_json,
)
from transforms.identity import resolve_device

SETTINGS = MappingSettings(project_name="demo.example.com")
MINUTE = 60_000
T0 = 1_709_280_000_000  # 2024-03-01T08:00:00Z


def prepared(**event) -> PreparedEvent:
    result = prepare_event(event, SETTINGS)
    assert isinstance(result, PreparedEvent), result
    return result


def track(n: int, minutes: float, device: str = "anon-1", **extra) -> PreparedEvent:
    return prepared(
        type="track",
        event=f"Step {n}",
        anonymousId=device,
        messageId=f"{device}-{n:03d}",
        originalTimestamp=T0 + int(minutes * MINUTE),
        **extra,
    )


def lines_of(events, gap=30.0, max_line_bytes=1_000_000):
    device, ordered = events[0].device_key, events
    lines, dead = build_visits(device, ordered, SETTINGS, gap, max_line_bytes)
    return lines, dead


def test_spec_14_a_new_visit_starts_after_more_than_the_gap():
    # 0, 10, 40 (exactly 30 after: same visit), 71 (31 after: new), 72
    events = [track(n, m) for n, m in enumerate([0, 10, 40, 71, 72])]
    lines, dead = lines_of(events)
    assert dead == []
    actions = [[a["name"] for a in json.loads(line.text)["actions"]] for line in lines]
    assert actions == [["step 0", "step 1", "step 2"], ["step 3", "step 4"]]


def test_spec_14_the_gap_counts_from_the_previous_event_of_any_type():
    events = [
        track(0, 0),
        prepared(
            type="identify",
            anonymousId="anon-1",
            messageId="anon-1-i",
            userId="u1",
            originalTimestamp=T0 + 25 * MINUTE,
        ),
        track(1, 50),
    ]
    lines, _ = lines_of(events)
    assert len(lines) == 1
    assert json.loads(lines[0].text)["visitor"]["id"] == "u1"


def test_spec_14_visit_gap_minutes_is_configurable():
    events = [track(n, m) for n, m in enumerate([0, 6, 12])]
    assert len(lines_of(events, gap=5)[0]) == 3
    assert len(lines_of(events, gap=6)[0]) == 1


def test_spec_14_line_format_visitor_visit_actions():
    event = track(
        1,
        0,
        userId="u-1",
        traits={"email": "a@example.com", "plan": "pro", "cookie": "custom"},
        properties={"price": 5, "shipping": {"method": "air"}, "tags": ["a", "é"]},
        context={
            "ip": "203.0.113.7",
            "os": {"name": "Windows"},
            "app": {"name": "Shop"},
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/86.0.4240.111 Safari/537.36",
        },
    )
    lines, _ = lines_of([event])
    expected = {
        "visitor": {
            "plan": "pro",
            "cookie": "anon-1",  # the named cookie replaces traits.cookie
            "id": "u-1",
            "email": "a@example.com",
            "ip": "203.0.113.7",
        },
        "visit": {
            "ip": "203.0.113.7",
            "browser": "Chrome86.0.4240.111",
            "os": "Windows",
            "app": "Shop",
        },
        "actions": [
            {
                "name": "step 1",
                "time": T0,
                "properties": {"price": 5, "shipping_method": "air", "tags": '["a","é"]'},
            }
        ],
    }
    assert json.loads(lines[0].text) == expected
    # sorted keys, no spaces, UTF-8 unescaped
    assert lines[0].text == json.dumps(
        expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_spec_14_visitor_takes_later_values_visit_the_first():
    first = track(0, 0, traits={"plan": "free"}, context={"ip": "10.0.0.1"})
    second = track(1, 1, traits={"plan": "pro"}, context={"ip": "10.0.0.2", "os": {"name": "iOS"}})
    line = json.loads(lines_of([first, second])[0][0].text)
    assert line["visitor"]["plan"] == "pro"
    assert line["visitor"]["ip"] == "10.0.0.2"
    assert line["visit"] == {"ip": "10.0.0.1", "os": "iOS"}


def test_spec_14_page_action_carries_referer_and_no_visit_when_empty():
    page = prepared(
        type="page",
        name="Pricing",
        anonymousId="anon-1",
        messageId="p1",
        originalTimestamp=T0,
        properties={"referrer": "https://google.com"},
    )
    line = json.loads(lines_of([page])[0][0].text)
    assert "visit" not in line
    assert line["actions"][0]["properties"]["referer"] == "https://google.com"
    assert line["actions"][0]["name"] == "viewed pricing page"


def test_spec_14_identify_only_visit_is_a_visitor_update():
    identify = prepared(
        type="identify",
        anonymousId="anon-1",
        messageId="i1",
        traits={"name": "Ann"},
        context={"ip": "10.0.0.1"},
        originalTimestamp=T0,
    )
    lines, _ = lines_of([identify])
    assert json.loads(lines[0].text) == {
        "visitor": {"name": "Ann", "cookie": "anon-1", "ip": "10.0.0.1"}
    }
    assert lines[0].actions == 0


def test_spec_14_identify_without_timestamp_joins_the_last_visit():
    events = [track(0, 0), track(1, 100)]
    late = prepared(type="identify", anonymousId="anon-1", messageId="i9", userId="u9")
    ordered, _ = resolve_device("cookie:anon-1", [late, *events], stitch_identity=False)
    lines, _ = lines_of(ordered)
    assert len(lines) == 2
    assert "id" not in json.loads(lines[0].text)["visitor"]
    assert json.loads(lines[1].text)["visitor"]["id"] == "u9"
    assert [event.message_id for event in lines[1].events] == ["anon-1-001", "i9"]


def test_spec_14_identify_without_timestamp_alone_is_a_visitor_only_line():
    alone = prepared(type="identify", anonymousId="anon-2", messageId="i1", userId="u2")
    lines, _ = lines_of([alone])
    assert json.loads(lines[0].text) == {"visitor": {"cookie": "anon-2", "id": "u2"}}
    assert lines[0].order == (True, 0, "i1")


def test_spec_14_track_without_timestamp_is_invalid_timestamp():
    untimed = prepared(type="track", event="x", anonymousId="a", messageId="m")
    letter = needs_action_time(untimed)
    assert letter is not None
    assert letter.reason == INVALID_TIMESTAMP
    assert letter.message_id == "m"
    identify = prepared(type="identify", anonymousId="a", messageId="m2")
    assert needs_action_time(identify) is None
    assert needs_action_time(track(0, 0)) is None


def test_spec_14_a_line_over_the_limit_dead_letters_each_of_its_events():
    events = [track(n, n, properties={"blob": "x" * 300}) for n in range(3)]
    lines, dead = lines_of(events, max_line_bytes=500)
    assert lines == []
    assert [(d.reason, d.message_id) for d in dead] == [
        (REQUEST_TOO_LARGE, f"anon-1-{n:03d}") for n in range(3)
    ]


def test_spec_14_events_of_one_device_in_two_projects_make_separate_lines():
    other = track(1, 1, integrations={"Woopra": {"projectName": "other.example.com"}})
    lines, _ = lines_of([track(0, 0), other])
    assert sorted(line.project for line in lines) == ["demo.example.com", "other.example.com"]


def _line(project: str, device: str, start: int, size: int) -> ImportLine:
    text = sorted_json({"visitor": {"cookie": device, "pad": "x" * size}})
    return ImportLine(project, device, (False, start, f"{device}-{start}"), text, 1, [])


def test_spec_14_packing_is_greedy_in_body_order_and_counts_the_newlines():
    lines = [_line("p", f"d{n}", 0, 30) for n in range(10)]
    size = len(lines[0].text)
    limit = 3 * size + 2  # exactly three lines with their two newlines
    bodies = pack_bodies(lines, limit)
    assert [len(b.lines) for b in bodies] == [3, 3, 3, 1]
    assert all(b.size <= limit for b in bodies)
    assert bodies[0].size == limit
    assert bodies[0].text == b"\n".join(line.text for line in lines[:3])
    assert not bodies[0].text.endswith(b"\n")
    assert [len(b.lines) for b in pack_bodies(lines, limit - 1)] == [2, 2, 2, 2, 2]


def test_spec_14_one_project_per_body_and_bodies_numbered_per_project():
    lines = [_line("b", "d1", 0, 5), _line("a", "d1", 0, 5), _line("a", "d2", 0, 5)]
    bodies = pack_bodies(lines, 10_000)
    assert [(b.project, b.index, len(b.lines)) for b in bodies] == [("a", 0, 2), ("b", 0, 1)]


def test_spec_14_line_order_is_project_device_visit_start_first_message_id():
    lines = [
        _line("p", "d2", 5, 1),
        _line("p", "d1", 9, 1),
        _line("p", "d1", 3, 1),
        _line("o", "d9", 0, 1),
    ]
    bodies = pack_bodies(lines, 10_000)
    order = [(line.project, line.device, line.order[1]) for b in bodies for line in b.lines]
    assert order == [("o", "d9", 0), ("p", "d1", 3), ("p", "d1", 9), ("p", "d2", 5)]


def test_spec_14_the_same_lines_in_any_order_give_byte_identical_bodies():
    lines = [_line("p", f"d{n % 7}", n, n % 13) for n in range(200)]
    expected = [b.text for b in pack_bodies(lines, 700)]
    rng = random.Random(4)
    for _ in range(5):
        shuffled = lines[:]
        rng.shuffle(shuffled)
        assert [b.text for b in pack_bodies(shuffled, 700)] == expected


def test_spec_14_a_413_halves_a_body_first_ceil_half_then_the_rest():
    lines = [_line("p", f"d{n}", 0, 1) for n in range(5)]
    (body,) = pack_bodies(lines, 10_000)
    first, rest = body.halves()
    assert [line.device for line in first.lines] == ["d0", "d1", "d2"]
    assert [line.device for line in rest.lines] == ["d3", "d4"]


def _expected_text(line: dict) -> bytes:
    return json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_spec_14_line_text_keeps_non_ascii_unescaped_and_sorts_nested_keys():
    event = track(
        1,
        0,
        traits={"name": "Zoë 😀", "city": "東京"},
        properties={"b": {"z": 1, "a_b": "ü"}, "a": '\u2028\t"q"', "a_z": True},
    )
    (line,) = lines_of([event])[0]
    assert "Zoë 😀".encode() in line.text
    assert "東京".encode() in line.text
    assert json.loads(line.text)["actions"][0]["properties"] == {
        "a": '\u2028\t"q"',
        "a_z": True,
        "b_a_b": "ü",
        "b_z": 1,
    }
    assert line.text == _expected_text(json.loads(line.text))


def test_spec_14_floats_are_written_as_orjson_writes_them():
    event = track(1, 0, properties={"small": 1.5e-7, "big": 1e16, "price": 121.93, "zero": -0.0})
    (line,) = lines_of([event])[0]
    assert b'"properties":{"big":1e+16,"price":121.93,"small":1.5e-7,"zero":-0.0}' in line.text


def test_spec_14_an_integer_beyond_64_bits_writes_the_whole_line_as_json_does():
    big = 2**70
    events = [track(0, 0, properties={"n": big, "f": 1.5e-7}), track(1, 1, properties={"x": 1})]
    (line,) = lines_of(events)[0]
    parsed = json.loads(line.text)
    assert parsed["actions"][0]["properties"]["n"] == big
    assert line.text == _expected_text(parsed)
    assert b"1.5e-07" in line.text  # json's spelling, the whole line through one encoder


def test_spec_14_page_referrer_replaces_a_referer_property():
    page = prepared(
        type="page",
        name="Home",
        anonymousId="anon-1",
        messageId="p1",
        originalTimestamp=T0,
        properties={"referer": "from-properties", "referrer": "https://google.com"},
    )
    (line,) = lines_of([page])[0]
    assert json.loads(line.text)["actions"][0]["properties"]["referer"] == "https://google.com"


def identify(n: int, minutes: float | None, device: str = "anon-1", **extra) -> PreparedEvent:
    timestamp = {} if minutes is None else {"originalTimestamp": T0 + int(minutes * MINUTE)}
    return prepared(
        type="identify", anonymousId=device, messageId=f"{device}-i{n}", **timestamp, **extra
    )


def test_spec_14_an_identify_only_device_makes_one_visitor_update_per_visit():
    events = [
        identify(0, 0, traits={"plan": "free"}),
        identify(1, 5, traits={"plan": "pro"}),
        identify(2, 100, userId="u1"),
    ]
    lines, dead = lines_of(events)
    assert dead == []
    assert [json.loads(line.text) for line in lines] == [
        {"visitor": {"cookie": "anon-1", "plan": "pro"}},
        {"visitor": {"cookie": "anon-1", "id": "u1"}},
    ]
    assert [line.actions for line in lines] == [0, 0]
    (body,) = pack_bodies(lines, 10_000)
    assert (body.visit_count, body.event_count, body.line_count) == (0, 3, 2)
    assert [mid for _, mid, _ in body.events] == ["anon-1-i0", "anon-1-i1", "anon-1-i2"]


def test_spec_14_an_untimed_identify_before_any_visit_is_a_visitor_update_last_in_body_order():
    events = [identify(0, None, userId="u1"), track(1, 0), track(2, 1)]
    lines, _ = lines_of(events)
    (body,) = pack_bodies(lines, 10_000)
    assert [line.order[0] for line in body.lines] == [False, True]
    assert [[e.message_id for e in line.events] for line in body.lines] == [
        ["anon-1-001", "anon-1-002"],
        ["anon-1-i0"],
    ]
    assert json.loads(body.lines[1].text) == {"visitor": {"cookie": "anon-1", "id": "u1"}}
    assert body.text == b"\n".join(line.text for line in body.lines)
    assert body.visit_count == 1


def test_spec_14_a_device_split_over_bodies_and_halves_keeps_every_line_whole():
    events = [track(n, n * 60, properties={"pad": "x" * (20 * n)}) for n in range(6)]
    lines, _ = lines_of(events)
    assert len(lines) == 6
    texts = [line.text for line in lines]
    limit = len(texts[0]) + len(texts[1]) + len(texts[2]) + 2
    bodies = pack_bodies(lines, limit)
    assert b"\n".join(b.text for b in bodies) == b"\n".join(texts)
    assert [b.size for b in bodies] == [len(b.text) for b in bodies]
    assert all(b.size <= limit for b in bodies)
    assert sum(b.event_count for b in bodies) == 6
    (whole,) = pack_bodies(lines, 1_000_000)
    first, rest = whole.halves()
    assert (first.text, rest.text) == (b"\n".join(texts[:3]), b"\n".join(texts[3:]))
    assert [mid for _, mid, _ in rest.events] == ["anon-1-003", "anon-1-004", "anon-1-005"]
    again = first.halves()
    assert [b.text for b in again] == [b"\n".join(texts[:2]), texts[2]]


def test_spec_14_device_lines_survive_pickling_as_beam_shuffles_them():
    events = [track(0, 0), track(1, 100), identify(2, 101, userId="u1")]
    (device,), _ = device_visits("cookie:anon-1", mapped_events(events, SETTINGS))
    again = pickle.loads(pickle.dumps(device))
    assert (again.text, again.event_ends, again.orders) == (device.text, device.event_ends, None)
    assert [e.message_id for e in again.events] == [e.message_id for e in device.events]
    assert [again.line(i).text for i in range(2)] == device.texts
