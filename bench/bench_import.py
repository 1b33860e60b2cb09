"""Micro-benchmark of import mode's pure core: visit building and body packing alone (SPEC §14).

The events are bench/events.py's, generated in memory, prepared and grouped by device in send
order and stitched beforehand (that is the shuffle's work, not this stage's). Then, each over
all the events, after a warm-up pass, best of `--rounds` passes taken in turn (one of each,
then again), so that all see the same load; one process, one thread, no Beam:

- `device_visits` per device (visits from the mapping's parameters, one sorted-JSON line per
  visit, a device's lines of a project held together) followed by `pack_devices` per
  project: the stage's own work, the headline events/s, goal: at least
  the tracking mapping's rate (by elapsed time of the best passes; the CPU-time ratio, which
  other work on the machine moves less, is printed beside it);
- `map_event` over the same events, measured in the same invocation, for that goal;
- the whole of BuildVisits + PackBodies as the pipeline runs them: the mapping's parameters
  (`request_of`), then the above;

(set-up data frozen out of the garbage collector's scans, see main), and the size of what
import sends: body bytes per event, beside the tracking sink's URL bytes
per event for the same events.

    .venv/bin/python -m bench.bench_import [--events N] [--seed S] [--rounds R] [--batch_bytes B]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.bench_mapping import SETTINGS, Timing, _map_all, _row, timed_pass
from bench.events import DEFAULT_SEED, generate_events
from transforms.core.mapping import PreparedEvent, build_request, prepare_event, request_of
from transforms.core.records import WoopraRequest
from transforms.core.visits import (
    DEFAULT_IMPORT_BATCH_BYTES,
    DEFAULT_VISIT_GAP_MINUTES,
    DeviceLines,
    ImportBody,
    build_device_visits,
    device_visits,
    needs_action_time,
    pack_devices,
)
from transforms.identity import resolve_device


def devices_of(events: list[dict[str, Any]]) -> list[tuple[str, list[PreparedEvent]]]:
    """What the shuffle by device hands import: each device's events in send order, stitched."""
    grouped: dict[str, list[PreparedEvent]] = defaultdict(list)
    for event in events:
        prepared = prepare_event(event, SETTINGS)
        if isinstance(prepared, PreparedEvent) and needs_action_time(prepared) is None:
            grouped[prepared.device_key].append(prepared)
    return [(device, resolve_device(device, group, True)[0]) for device, group in grouped.items()]


def mapped_of(
    devices: list[tuple[str, list[PreparedEvent]]],
) -> list[tuple[str, list[tuple[PreparedEvent, dict[str, Any]]]]]:
    """Each device's events with the tracking mapping's parameters."""
    return [
        (device, [(event, request_of(event, SETTINGS).params) for event in events])
        for device, events in devices
    ]


def pack(per_device_lines, batch_bytes: int) -> list[ImportBody]:
    """BuildVisits' output (each device's lines of a project together), grouped by project as
    PackBodies' shuffle does, and packed."""
    by_project: dict[str, list[DeviceLines]] = defaultdict(list)
    for lines, _ in per_device_lines:
        for device in lines:
            by_project[device.project].append(device)
    return [body for group in by_project.values() for body in pack_devices(group, batch_bytes)]


def visits_and_bodies(mapped, batch_bytes: int) -> list[ImportBody]:
    """The stage's own work: visits from mapped events, then bodies."""
    gap = DEFAULT_VISIT_GAP_MINUTES
    return pack((device_visits(d, m, gap, batch_bytes) for d, m in mapped), batch_bytes)


def map_visits_and_bodies(devices, batch_bytes: int) -> list[ImportBody]:
    """BuildVisits and PackBodies as the pipeline runs them, the mapping included."""
    gap = DEFAULT_VISIT_GAP_MINUTES
    built = (build_device_visits(d, e, SETTINGS, gap, batch_bytes) for d, e in devices)
    return pack(built, batch_bytes)


def interleaved(rounds: int, runs: list[tuple[Callable[[Any], object], Any]]) -> list[Timing]:
    """best_of for several functions at once: one warm-up pass each, then their timed passes
    in turn, so that all of them see the same load of a shared machine."""
    for function, items in runs:
        function(items)
    timings = [Timing([], []) for _ in runs]
    for _ in range(rounds):
        for (function, items), timing in zip(runs, timings, strict=True):
            timed_pass(function, items, timing)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rounds", type=int, default=3, help="Timed passes; the best counts.")
    parser.add_argument("--batch_bytes", type=int, default=DEFAULT_IMPORT_BATCH_BYTES)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    events = list(generate_events(args.events, args.seed))
    devices = devices_of(events)
    importable = sum(len(group) for _, group in devices)
    mapped = mapped_of(devices)
    setup_seconds = time.perf_counter() - started
    # The set-up data (events, their parameters) is moved out of the collector's sight: both
    # timings then measure their own allocations, not repeated scans of 50,000 held events
    # (which a worker processing bundles never holds), which cost visits, that keep what they
    # build, more than map_event, that drops it.
    gc.collect()
    gc.freeze()
    print("import micro-benchmark: device_visits + pack_devices (one process, one thread, no Beam)")
    print(
        f"  {len(events):,} events -> {importable:,} importable over {len(devices):,} devices;"
        f" batch {args.batch_bytes:,} bytes; set up in {setup_seconds:.1f} s"
    )
    print()

    bodies = visits_and_bodies(mapped, args.batch_bytes)
    importing, mapping, whole = interleaved(
        args.rounds,
        [
            (lambda m: visits_and_bodies(m, args.batch_bytes), mapped),
            (_map_all, events),
            (lambda d: map_visits_and_bodies(d, args.batch_bytes), devices),
        ],
    )
    print(
        f"  {'':<26}{'items':>9}{'best':>11}{'cpu':>11}{'rate':>14}{'per item':>12}"
        f"  {'':>6}   (elapsed of each run)"
    )
    print(_row("device_visits + packing", importable, importing))
    print(_row("map_event (tracking)", len(events), mapping))
    print(_row("request_of + the above", importable, whole))

    import_rate = importable / min(importing.elapsed)
    mapping_rate = len(events) / min(mapping.elapsed)
    cpu_ratio = (importable / min(importing.cpu)) / (len(events) / min(mapping.cpu))
    in_bodies = sum(body.event_count for body in bodies)
    body_bytes = sum(body.size for body in bodies)
    requests = [build_request(e, SETTINGS) for _, group in devices for e in group]
    url_bytes = sum(r.url_length() for r in requests if isinstance(r, WoopraRequest))
    lines = sum(body.line_count for body in bodies)
    verdict = "PASS" if import_rate >= mapping_rate else "MISS"
    print()
    print(
        f"  import: {import_rate:,.0f} events/s   tracking mapping: {mapping_rate:,.0f} events/s"
        f"   ratio {import_rate / mapping_rate:.2f}   goal >= 1.00   {verdict}"
    )
    print(f"  on CPU time (best passes): ratio {cpu_ratio:.2f}")
    print(
        f"  with the mapping (BuildVisits + PackBodies as run):"
        f" {importable / min(whole.elapsed):,.0f} events/s"
    )
    print(
        f"  bodies: {len(bodies):,} holding {lines:,} lines and {in_bodies:,} events,"
        f" {body_bytes / in_bodies:,.0f} bytes per event"
        f" (tracking URLs: {url_bytes / len(requests):,.0f} bytes per event)"
    )
    print(f"  load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
