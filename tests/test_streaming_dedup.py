"""The streaming dedup memory (transforms/streaming_dedup.py), against state objects that
behave like Beam's: a bag that is read whole, a value, and a commit a failed bundle never makes."""

from __future__ import annotations

import copy

from transforms.streaming_dedup import SeenMessageIds

SECOND = 1_000_000


class Bag:
    """A bag state: appends, a whole read, clear; counts its reads."""

    def __init__(self) -> None:
        self.values: list[tuple[str, int]] = []
        self.reads = 0

    def add(self, value: tuple[str, int]) -> None:
        self.values.append(value)

    def read(self) -> list[tuple[str, int]]:
        self.reads += 1
        return list(self.values)

    def clear(self) -> None:
        self.values = []


class Value:
    def __init__(self) -> None:
        self.value: int | None = None

    def read(self) -> int | None:
        return self.value

    def write(self, value: int) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class Device:
    """One device's committed state."""

    def __init__(self) -> None:
        self.log = Bag()
        self.version = Value()

    def seen(self, memory: SeenMessageIds, message_id: str, at: int, name: str = "d") -> bool:
        return memory.seen_before(name, message_id, at, self.log, self.version)


def test_streaming_dedup_a_repeat_within_the_window_is_seen_one_after_it_is_not():
    memory, device = SeenMessageIds(window_seconds=10), Device()
    assert not device.seen(memory, "m1", 0)
    assert device.seen(memory, "m1", 9 * SECOND)
    assert not device.seen(memory, "m1", 10 * SECOND)  # the window is measured from the first
    assert device.seen(memory, "m1", 11 * SECOND)


def test_streaming_dedup_a_device_with_many_ids_reads_its_log_only_once():
    memory, device = SeenMessageIds(window_seconds=3600), Device()
    for n in range(5000):
        assert not device.seen(memory, f"m{n}", n)
    for n in range(5000, 5100):
        assert not device.seen(memory, f"m{n}", n)
        assert device.seen(memory, f"m{n - 4000}", n)
    assert device.log.reads == 1  # the first event only; then the copy in memory answers


def test_streaming_dedup_the_log_is_compacted_as_ids_expire():
    memory, device = SeenMessageIds(window_seconds=100), Device()
    for n in range(10_000):
        device.seen(memory, f"m{n}", n * SECOND)
    live = 100
    assert len(device.log.values) <= 2 * live + 64 + 1
    assert {m for m, _ in device.log.values} >= {f"m{n}" for n in range(9900, 10_000)}
    fresh = SeenMessageIds(window_seconds=100)  # another worker reads the compacted log
    assert device.seen(fresh, "m9950", 10_000 * SECOND)
    assert not device.seen(fresh, "m9800", 10_000 * SECOND)


def test_streaming_dedup_a_failed_bundle_leaves_no_id_behind():
    memory, device = SeenMessageIds(window_seconds=3600), Device()
    assert not device.seen(memory, "m1", 0)
    uncommitted = copy.deepcopy(device)  # the bundle works on state it never commits
    assert not uncommitted.seen(memory, "m2", SECOND)
    # The retried bundle sees the committed state: m2 is new to it, m1 is not.
    assert not device.seen(memory, "m2", 2 * SECOND)
    assert device.seen(memory, "m1", 3 * SECOND)


def test_streaming_dedup_a_device_changed_by_another_worker_is_read_again():
    here, there, device = SeenMessageIds(3600), SeenMessageIds(3600), Device()
    assert not device.seen(here, "m1", 0)
    assert not device.seen(there, "m2", SECOND)  # the key moved to another worker and back
    assert device.seen(here, "m2", 2 * SECOND)
    assert device.seen(here, "m1", 2 * SECOND)


def test_streaming_dedup_memory_is_bounded_and_a_dropped_device_reads_its_state():
    memory = SeenMessageIds(window_seconds=3600, max_cached_ids=10)
    devices = {f"d{n}": Device() for n in range(5)}
    for name, device in devices.items():
        for n in range(5):
            assert not device.seen(memory, f"{name}-m{n}", n, name)
    assert memory._cached <= 10
    assert devices["d0"].seen(memory, "d0-m3", 10, "d0")  # d0 was dropped: read again
    assert devices["d0"].log.reads == 2


def test_streaming_dedup_forget_drops_the_copy_of_a_cleared_device():
    memory, device = SeenMessageIds(window_seconds=3600), Device()
    device.seen(memory, "m1", 0)
    device.log.clear()
    device.version.clear()
    memory.forget("d")
    assert not device.seen(memory, "m1", SECOND)
