"""--import_limits: parsing, every window at once, the plan's schedule (SPEC §14)."""

from __future__ import annotations

import pytest

from pipeline.plan import estimated_seconds
from transforms.delivery.import_limits import ImportWindows, Window, parse_limits


def test_spec_14_limits_parse_with_units():
    assert parse_limits("300/60s,600/1h, 3000/1d,5/30") == (
        Window(300, 60),
        Window(600, 3600),
        Window(3000, 86400),
        Window(5, 30),
    )


@pytest.mark.parametrize("text", ["", "300", "0/60s", "300/0s", "a/60s", "300/60x", "3/5s,"])
def test_spec_14_bad_limits_are_refused(text):
    with pytest.raises(ValueError, match="limit"):
        parse_limits(text)


def test_spec_14_601_bodies_with_empty_windows_start_within_an_hour():
    windows = ImportWindows(parse_limits("300/60s,600/3600s"))
    # pyrate-limiter's windows include their lower edge: one millisecond more than (t-L, t].
    assert windows.schedule(601, now_ms=0) == 3_600_001
    assert estimated_seconds({"p": 601}, "300/60s,600/3600s", {}, 0) == 3600.0


def test_spec_14_schedule_holds_every_window():
    windows = ImportWindows(parse_limits("3/10s,5/60s"))
    slots = []
    slot = 0
    for _ in range(12):
        slot = windows.reserve(slot)
        slots.append(slot)
    for window in windows.windows:
        length = int(window.seconds * 1000)
        for t in slots:
            assert sum(1 for s in slots if t - length < s <= t) <= window.count
    assert slots[:5] == [0, 0, 0, 10_001, 10_001]
    assert slots[5] == 60_001


def test_spec_14_windows_carry_the_history_of_earlier_runs():
    now = 1_000_000
    history = [now - 50_000 + n for n in range(3)]  # three requests 50 s ago
    windows = ImportWindows(parse_limits("3/60s"), history)
    assert windows.next_slot(now) == history[0] + 60_001
    # the estimate starts from that state; other projects have their own windows
    assert estimated_seconds({"p": 1, "q": 1}, "3/60s", {"p": history}, now) == 10.0


def test_spec_14_restamp_moves_a_booking_to_when_the_request_ended():
    windows = ImportWindows(parse_limits("1/10s"))
    assert windows.reserve(0) == 0
    windows.restamp(2_500)
    assert windows.next_slot(0) == 12_501
    windows.restamp(1_000)  # never earlier
    assert windows.next_slot(0) == 12_501


def test_spec_14_next_slot_books_nothing():
    windows = ImportWindows(parse_limits("1/10s"))
    assert windows.next_slot(0) == 0
    assert windows.next_slot(0) == 0
    assert windows.reserve(0) == 0
    assert windows.next_slot(0) == 10_001
