"""Micro-benchmark of the pure mapping: `map_event` alone, and where its time goes.

The events are bench/events.py's (the same `--events` and `--seed` as bench_pipeline.py give
the same events), generated in memory. Everything runs in this one process, in one thread,
without Beam: it measures our per-event code, not the engine.

The mapping modules run as installed: compiled by mypyc (setup.py), or pure Python when
installed with WOOPRA_BEAM_PURE_PYTHON=1; the header says which.

Timed, each over all the events, with `time.perf_counter`, after one warm-up pass (which
also fills the user-agent cache, as a long-running worker would have it), best of
`--rounds` (default 3):

- `map_event(event, settings)` on the pre-parsed events: the headline events/s
  (goal >= 50,000/s);
- its two halves: `prepare_event` (type, project, identity, timestamp checks) and
  `build_request` (parameters, flattening, browser, URL size check) on the prepared events,
  and, inside the latter, `WoopraRequest.url_length_bound()` (the size check: the exact
  `url_length()` runs only when the bound passes the limit);
- `WoopraRequest.to_json()`, what the dry-run sink does per request;
- `parse_record` on the raw lines (bytes, as the pipeline reads them), beside plain
  `json.loads` of the same lines for reference.

`--profile N` adds a cProfile run of map_event over all events and prints the N functions
with the most own time, ours (transforms/, pipeline/) marked.

    .venv/bin/python -m bench.bench_mapping [--events N] [--seed S] [--rounds R] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from transforms import mapping as mapping_module
from transforms.mapping import MappingSettings, build_request, map_event, prepare_event
from transforms.parse import parse_record
from transforms.records import DeadLetter, WoopraRequest

try:
    from bench.events import DEFAULT_SEED, generate_lines
except ModuleNotFoundError:  # run as `python bench/bench_mapping.py`
    from events import DEFAULT_SEED, generate_lines

MAPPING_GOAL = 50_000
SETTINGS = MappingSettings(project_name="bench")
OUR_CODE = ("/transforms/", "/pipeline/")


@dataclass
class Timing:
    """The elapsed (perf_counter) and CPU (process_time) seconds of each timed pass."""

    elapsed: list[float]
    cpu: list[float]


def best_of(rounds: int, function: Callable[[Iterable[Any]], object], items: list[Any]) -> Timing:
    """Each timed pass of function(items), after one warm-up pass."""
    function(items)
    timing = Timing([], [])
    for _ in range(rounds):
        gc.collect()
        cpu_started, started = time.process_time(), time.perf_counter()
        function(items)
        timing.elapsed.append(time.perf_counter() - started)
        timing.cpu.append(time.process_time() - cpu_started)
    return timing


def _map_all(events: list[dict[str, Any]]) -> None:
    for event in events:
        map_event(event, SETTINGS)


def _prepare_all(events: list[dict[str, Any]]) -> None:
    for event in events:
        prepare_event(event, SETTINGS)


def _build_all(prepared: list[Any]) -> None:
    for event in prepared:
        build_request(event, SETTINGS)


def _url_length_bound_all(requests: list[WoopraRequest]) -> None:
    for request in requests:
        request.url_length_bound()


def _to_json_all(requests: list[WoopraRequest]) -> None:
    for request in requests:
        request.to_json()


def _parse_all(lines: list[bytes]) -> None:
    for line in lines:
        parse_record(line)


def _json_loads_all(lines: list[bytes]) -> None:
    for line in lines:
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the reference
            json.loads(line)
        except ValueError:
            pass


def _row(label: str, count: int, timing: Timing, reference: float | None = None) -> str:
    best = min(timing.elapsed)
    rate = count / best if best > 0 else float("inf")
    share = f"{best / reference:6.0%}" if reference else " " * 6
    runs = ", ".join(f"{elapsed:.3f}" for elapsed in timing.elapsed)
    return (
        f"  {label:<26}{count:>9,}{best:>9.3f} s{min(timing.cpu):>9.3f} s{rate:>12,.0f}/s"
        f"{1e6 / rate:>9.2f} us  {share}   ({runs})"
    )


def profile_mapping(events: list[dict[str, Any]], top: int) -> None:
    """cProfile of map_event over the events: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    _map_all(events)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # own time of every function
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print()
    print(
        f"cProfile of map_event over {len(events):,} events "
        f"(own time; profiled total {total:.2f} s)"
    )
    print(f"  {'own':>7} {'share':>6} {'cumul.':>7} {'calls':>10}  function")
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        ours = "*" if any(part in filename for part in OUR_CODE) else " "
        where = filename.rsplit("/", 2)
        shown = "/".join(where[-2:]) if len(where) > 1 else filename
        print(
            f"{ours} {own:7.3f} {own / total:6.1%} {cumulative:7.3f} {calls:>10,}  "
            f"{shown}:{line}({name})"
        )
    print("  * our code")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rounds", type=int, default=3, help="Timed passes; the best counts.")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="Also print a cProfile top N."
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    lines = [line.encode("utf-8") for _, line in generate_lines(args.events, args.seed)]
    parsed = [parse_record(line) for line in lines]
    events = [event for event in parsed if isinstance(event, dict)]
    prepared = [prepare_event(event, SETTINGS) for event in events]
    valid = [event for event in prepared if not isinstance(event, DeadLetter)]
    built = [build_request(event, SETTINGS) for event in valid]
    requests = [request for request in built if isinstance(request, WoopraRequest)]
    setup_seconds = time.perf_counter() - started

    print("map_event micro-benchmark (one process, one thread, no Beam)")
    print(
        f"  {len(lines):,} lines ({sum(map(len, lines)) / len(lines):,.0f} bytes each on average)"
        f" -> {len(events):,} events -> {len(valid):,} prepared -> {len(requests):,} requests;"
        f" set up in {setup_seconds:.1f} s"
    )
    build = "compiled by mypyc" if mapping_module.__file__.endswith(".so") else "pure Python"
    print(
        f"  Python {platform.python_version()}, mapping modules {build},"
        f" best of {args.rounds} after a warm-up pass"
    )
    print()
    print(
        f"  {'':<26}{'items':>9}{'best':>11}{'cpu':>11}{'rate':>14}{'per item':>12}"
        f"  {'share':>6}   (elapsed of each run)"
    )

    mapping = best_of(args.rounds, _map_all, events)
    reference = min(mapping.elapsed)
    print(_row("map_event", len(events), mapping), flush=True)
    print(
        _row("  prepare_event", len(events), best_of(args.rounds, _prepare_all, events), reference)
    )
    print(_row("  build_request", len(valid), best_of(args.rounds, _build_all, valid), reference))
    print(
        _row(
            "    of which size check",
            len(requests),
            best_of(args.rounds, _url_length_bound_all, requests),
            reference,
        )
    )
    print(
        _row("WoopraRequest.to_json", len(requests), best_of(args.rounds, _to_json_all, requests))
    )
    print(_row("parse_record (bytes)", len(lines), best_of(args.rounds, _parse_all, lines)))
    print(_row("json.loads (reference)", len(lines), best_of(args.rounds, _json_loads_all, lines)))

    rate = len(events) / reference
    verdict = "PASS" if rate >= MAPPING_GOAL else "MISS"
    print()
    print(f"  map_event: {rate:,.0f} events/s   goal >= {MAPPING_GOAL:,}/s   {verdict}")
    print("  (best: elapsed of the fastest pass; cpu: process time of the thriftiest pass;")
    print("   rate and per item from best; share: of the best map_event pass)")
    print(f"  load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")

    if args.profile:
        profile_mapping(events, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
