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

`--against REV` compares instead: it builds git revision REV (e.g. `main`) compiled, in a
temporary directory (bench/revision.py), starts one process with REV's mapping and one with
the working tree's, each with the same events, and has them time map_event passes in turn
(REV, tree, tree, REV, ...), `--rounds` each, so that both see the same machine load. It
prints every pass, and the working tree's speed relative to REV's from the best passes and
from the median of the paired passes; a change may cost at most 5%.

    .venv/bin/python -m bench.bench_mapping [--events N] [--seed S] [--rounds R] [--profile N]
    .venv/bin/python -m bench.bench_mapping --against main --rounds 10
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transforms.core import mapping as mapping_module
from transforms.core.mapping import MappingSettings, build_request, map_event, prepare_event
from transforms.core.records import DeadLetter, WoopraRequest
from transforms.parse import parse_record

try:
    from bench.events import DEFAULT_SEED, generate_lines
    from bench.revision import ROOT, build_revision
except ModuleNotFoundError:  # run as `python bench/bench_mapping.py`
    from events import DEFAULT_SEED, generate_lines
    from revision import ROOT, build_revision

MAPPING_GOAL = 50_000
SETTINGS = MappingSettings(project_name="bench")
OUR_CODE = ("/transforms/", "/pipeline/")
# How much slower than the revision compared against a change may make map_event.
ALLOWED_SLOWDOWN = 0.05


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
        timed_pass(function, items, timing)
    return timing


def timed_pass(function: Callable[[Iterable[Any]], object], items: Any, timing: Timing) -> None:
    """One pass of function(items), after a collection, added to timing."""
    gc.collect()
    cpu_started, started = time.process_time(), time.perf_counter()
    function(items)
    timing.elapsed.append(time.perf_counter() - started)
    timing.cpu.append(time.process_time() - cpu_started)


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


def load_events(count: int, seed: int) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The benchmark's raw lines, and the events among them once parsed."""
    lines = [line.encode("utf-8") for _, line in generate_lines(count, seed)]
    parsed = [parse_record(line) for line in lines]
    return lines, [event for event in parsed if isinstance(event, dict)]


def serve_passes(count: int, seed: int) -> int:
    """One side of `--against`: after a warm-up pass, one timed map_event pass per line read
    from stdin, its elapsed and CPU seconds written back; the first line written says which
    mapping module runs."""
    _, events = load_events(count, seed)
    _map_all(events)
    print(json.dumps({"module": mapping_module.__file__, "events": len(events)}), flush=True)
    for _ in sys.stdin:
        gc.collect()
        cpu_started, started = time.process_time(), time.perf_counter()
        _map_all(events)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(json.dumps({"elapsed": elapsed, "cpu": cpu}), flush=True)
    return 0


@dataclass
class _Side:
    """A process timing one revision's mapping (see serve_passes)."""

    label: str
    process: subprocess.Popen[str]
    module: str = ""
    events: int = 0

    def ready(self) -> None:
        header = json.loads(self._read_line())
        self.module, self.events = header["module"], header["events"]

    def timed_pass(self) -> tuple[float, float]:
        """Elapsed and CPU seconds of one map_event pass."""
        assert self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        timed = json.loads(self._read_line())
        return timed["elapsed"], timed["cpu"]

    def _read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} benchmark process stopped")
        return line

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def _start_side(label: str, cwd: Path, count: int, seed: int) -> _Side:
    """A serve_passes process in `cwd`: the `transforms` found there is the one it times."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # bench/ itself, from the working tree
    command = [sys.executable, "-m", "bench.bench_mapping", "--serve"]
    command += ["--events", str(count), "--seed", str(seed)]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return _Side(label, process)


def compare_against(revision: str, count: int, seed: int, rounds: int) -> int:
    """Time map_event of `revision` and of the working tree in turn; 1 if over 5% slower."""
    print(f"map_event: working tree against {revision} (compiled), {rounds} passes each")
    with tempfile.TemporaryDirectory(prefix="bench-mapping-") as scratch:
        started = time.perf_counter()
        site = build_revision(revision, Path(scratch))
        print(f"  built {revision} in {time.perf_counter() - started:.0f} s")
        base = _start_side(revision, site, count, seed)
        tree = _start_side("working tree", ROOT, count, seed)
        try:
            for side, expected_dir in ((base, site), (tree, ROOT)):
                side.ready()
                if not Path(side.module).is_relative_to(expected_dir):
                    raise RuntimeError(f"{side.label} runs {side.module}, not from {expected_dir}")
                print(f"  {side.label:<14} {side.module}")
            timings = {base.label: Timing([], []), tree.label: Timing([], [])}
            for round_number in range(rounds):
                order = (base, tree) if round_number % 2 == 0 else (tree, base)
                for side in order:
                    elapsed, cpu = side.timed_pass()
                    timings[side.label].elapsed.append(elapsed)
                    timings[side.label].cpu.append(cpu)
        finally:
            base.close()
            tree.close()
    events = tree.events
    print(f"  {events:,} events per pass; seconds of each pass, in pairs:")
    for kind in ("elapsed", "cpu"):
        for label, timing in timings.items():
            runs = getattr(timing, kind)
            print(f"  {kind:<8}{label:<14} " + " ".join(f"{run:.3f}" for run in runs))
    print()
    ratios: dict[str, tuple[float, float]] = {}
    for kind in ("elapsed", "cpu"):
        old, new = getattr(timings[base.label], kind), getattr(timings[tree.label], kind)
        paired = statistics.median(o / n for o, n in zip(old, new, strict=True))
        ratios[kind] = (min(old) / min(new), paired)
        for label, runs in ((base.label, old), (tree.label, new)):
            print(
                f"  {kind:<8}{label:<14} best {events / min(runs):>9,.0f} events/s"
                f"   median {events / statistics.median(runs):>9,.0f} events/s"
            )
    print()
    print(f"  working tree speed / {revision} speed (above 1: the working tree is faster)")
    for kind, (best_ratio, paired_ratio) in ratios.items():
        print(f"  {kind:<8}best passes {best_ratio:.3f}   median of pairs {paired_ratio:.3f}")
    # CPU time of the best passes: the least disturbed by other processes on a busy machine.
    verdict = "PASS" if ratios["cpu"][0] >= 1 - ALLOWED_SLOWDOWN else "MISS"
    print(f"  verdict on cpu best passes: allowed >= {1 - ALLOWED_SLOWDOWN:.2f}   {verdict}")
    print(f"  load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rounds", type=int, default=3, help="Timed passes; the best counts.")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="Also print a cProfile top N."
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="Compare map_event with git revision REV's, passes interleaved.",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_passes(args.events, args.seed)
    if args.against:
        return compare_against(args.against, args.events, args.seed, args.rounds)

    started = time.perf_counter()
    lines, events = load_events(args.events, args.seed)
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
