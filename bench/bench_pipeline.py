"""End-to-end batch benchmark: woopra-pipeline against the engine's floor, on the same file.

What is measured, in one invocation:

1. A JSON-lines file of `--events` generated events (bench/events.py), written once under
   bench/data/ and reused while its marker (generator version, event count, seed, size and
   SHA-256) still matches.
2. The floor: what the Beam engine itself costs for a job of this shape, i.e. the same file
   through ReadFromText -> json.loads -> one GroupByKey by anonymousId -> json.dumps ->
   WriteToText on the FnApiRunner (this script with `--floor-only`); `--floor-parser orjson`
   reads and writes with orjson instead (a lower floor: the pipeline reads with orjson too).
3. `python -m pipeline --input FILE --sink file --output DIR --project_name bench` (the
   `woopra-pipeline` command), on the FnApiRunner as well (its batch default).

Each side runs in its own child process, one after the other, so that its figures are its
own. For each: the wall time of the process, the run time (from `pipeline.run()` to the end
of `wait_until_finish()`, as the child itself reports it: report.json for woopra-pipeline),
its CPU time (user + system), and the peak resident memory: the child's maximum RSS as the
kernel accounts it (`wait4` rusage, what `/usr/bin/time -v` prints), and, as a check that no
worker process escapes that figure, the largest sum of VmRSS over the child and its
descendants, polled every 50 ms (descendants looked up once a second; the FnApiRunner runs
its worker in-process: expect 0 child processes).

Timings on a shared machine move with its load (printed before each run): `--repeat K` runs
both sides K times, alternating, and keeps each side's fastest run; the ratio on CPU time,
printed beside, is the least sensitive to other work on the machine.

Printed: both sides' figures, the throughput ratio (ours / floor, on run time; goal >= 0.6)
and the memory ratio (ours / floor, on peak RSS; goal <= 2.0), each with PASS or MISS. These
are information, never a failure: the exit status only says whether both runs completed and
whether woopra-pipeline's report adds up. The report's counts are checked against what the
generator wrote and against the lines in the output files.

    .venv/bin/python -m bench.bench_pipeline [--events N] [--seed S] [--repeat K] [--keep]
        [--floor-parser json|orjson] [--direct_num_workers N --direct_running_mode MODE]

`--direct_num_workers` and `--direct_running_mode` go to both sides alike, so that the ratio
compares the pipeline with the engine on the same local runner set-up. The last lines
printed are the figures as a row of the README's scaling table.

`--warehouse` compares instead the same events as RudderStack warehouse tables exported to
Avro (bench/warehouse_export.py), read with `--warehouse_table auto`, against them as JSON
lines, both through woopra-pipeline, alternating: the throughput ratio (warehouse / JSON
lines, goal >= 0.8) of the fastest runs, and of each interleaved pair.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions

try:
    from bench.events import GENERATOR_VERSION, generate_events, write_jsonl
    from bench.warehouse_export import write_export
except ModuleNotFoundError:  # run as `python bench/bench_pipeline.py`
    from events import GENERATOR_VERSION, generate_events, write_jsonl
    from warehouse_export import write_export

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "bench" / "data"
THROUGHPUT_GOAL = 0.6
MEMORY_GOAL = 2.0
# --warehouse: the Avro warehouse tables against JSON lines of the same events.
WAREHOUSE_GOAL = 0.8
# Reading a few VmRSS lines is cheap; a scan of /proc for descendants costs a few ms of CPU,
# which the benchmark's two cores should not pay 20 times a second.
POLL_SECONDS = 0.05
RESCAN_EVERY = 20


# --- the floor pipeline (runs in the child started with --floor-only) -----------------------


# The floor's JSON reader and writer (--floor-parser): the standard library's, or orjson's.
FLOOR_PARSERS = {
    "json": (json.loads, json.dumps, ValueError),
    "orjson": (orjson.loads, lambda event: orjson.dumps(event).decode(), orjson.JSONDecodeError),
}


def _parse_line(line: str, parser: str):
    loads, _, error = FLOOR_PARSERS[parser]
    try:
        event = loads(line)
    except error:
        return
    if isinstance(event, dict):
        yield str(event.get("anonymousId")), event


def _dump_group(group, parser: str):
    dumps = FLOOR_PARSERS[parser][1]
    for event in group[1]:
        yield dumps(event)


def run_floor(
    input_path: str, output_dir: str, parser: str = "json", runner_flags: list[str] | None = None
) -> dict[str, Any]:
    """Read, parse, group by anonymousId, serialize, write; returns the run time."""
    os.makedirs(output_dir, exist_ok=True)
    options = PipelineOptions(["--runner", "FnApiRunner", *(runner_flags or [])])
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Read" >> beam.io.ReadFromText(input_path)
        | "Parse" >> beam.FlatMap(_parse_line, parser)
        | "GroupByDevice" >> beam.GroupByKey()
        | "Serialize" >> beam.FlatMap(_dump_group, parser)
        | "Write"
        >> beam.io.WriteToText(os.path.join(output_dir, "floor"), file_name_suffix=".jsonl")
    )
    started = time.monotonic()
    pipeline.run().wait_until_finish()
    return {"run_seconds": round(time.monotonic() - started, 3)}


# --- the events file ------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def events_file(data_dir: Path, n: int, seed: int) -> tuple[Path, dict[str, Any], bool]:
    """The events file for (n, seed), its marker, and whether it was reused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"events-{n}-seed{seed}.jsonl"
    marker_path = path.with_suffix(".meta.json")
    wanted = {"generator_version": GENERATOR_VERSION, "events": n, "seed": seed}
    if path.exists() and marker_path.exists():
        marker = json.loads(marker_path.read_text())
        if (
            all(marker.get(key) == value for key, value in wanted.items())
            and path.stat().st_size == marker.get("bytes")
            and _sha256(path) == marker.get("sha256")
        ):
            return path, marker, True
    written = write_jsonl(path, n, seed)
    marker = {**wanted, "bytes": written["bytes"], "kinds": written["kinds"]}
    marker["sha256"] = _sha256(path)
    marker_path.write_text(json.dumps(marker, indent=2) + "\n")
    return path, marker, False


# --- running and measuring a child ----------------------------------------------------------


@dataclass
class Measurement:
    returncode: int
    wall_seconds: float
    cpu_seconds: float  # user + system time of the child and the descendants it waited for
    max_rss_kib: int  # the child's peak RSS, from wait4 (ru_maxrss, KiB on Linux)
    tree_peak_kib: int  # largest polled sum of VmRSS over the child and its descendants
    max_descendants: int  # most descendant processes seen at one poll
    stdout: str
    stderr: str

    @property
    def peak_kib(self) -> int:
        return max(self.max_rss_kib, self.tree_peak_kib)


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _process_tree(pid: int) -> list[int]:
    children = _children_by_parent()
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def _poll_tree(pid: int, stop: threading.Event, peaks: dict[str, int]) -> None:
    """Largest summed VmRSS of the tree; the tree itself (a /proc scan) is found less often."""
    polls = 0
    tree = [pid]
    while not stop.is_set():
        if polls % RESCAN_EVERY == 0:
            tree = _process_tree(pid)
            peaks["descendants"] = max(peaks["descendants"], len(tree) - 1)
        peaks["rss"] = max(peaks["rss"], sum(_rss_kib(member) for member in tree))
        polls += 1
        stop.wait(POLL_SECONDS)


def run_measured(command: list[str], log_dir: Path, name: str) -> Measurement:
    """Run one child to the end; its wall time, peak memory and output."""
    stdout_path, stderr_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        started = time.monotonic()
        child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=stdout, stderr=stderr)
        peaks = {"rss": 0, "descendants": 0}
        stop = threading.Event()
        poller = threading.Thread(target=_poll_tree, args=(child.pid, stop, peaks), daemon=True)
        poller.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        poller.join()
    return Measurement(
        returncode=child.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_kib=usage.ru_maxrss,
        tree_peak_kib=peaks["rss"],
        max_descendants=peaks["descendants"],
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )


def _count_lines(pattern: str) -> int:
    total = 0
    for path in glob.glob(pattern):
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


# --- the report -----------------------------------------------------------------------------


def check_report(report: dict[str, Any], marker: dict[str, Any], output_dir: Path) -> list[str]:
    """The report's counts, and whether they agree with the input and the output files."""
    kinds = marker["kinds"]
    expected_reasons = {
        reason: kinds[reason]
        for reason in ("invalid_json", "unsupported_type", "missing_identity")
        if kinds.get(reason)
    }
    expected = {
        "input": marker["events"],
        "sent": kinds.get("ok", 0),
        "filtered": kinds.get("filtered", 0),
        "dead_lettered": sum(expected_reasons.values()),
    }
    in_files = {
        "sent": _count_lines(str(output_dir / "requests-*.jsonl")),
        "dead_lettered": _count_lines(str(output_dir / "dead_letters-*.jsonl")),
    }
    lines = [f"  {'':<22}{'report':>10}{'generated':>11}{'in files':>10}"]
    for name in ("input", "sent", "filtered", "dead_lettered"):
        in_file = in_files.get(name)
        flag = "" if report.get(name) == expected[name] else "   <- differs"
        if in_file is not None and in_file != report.get(name):
            flag = "   <- differs"
        lines.append(
            f"  {name:<22}{report.get(name, 0):>10}{expected[name]:>11}"
            f"{'' if in_file is None else in_file:>10}{flag}"
        )
    reasons = report.get("dead_letter_reasons", {})
    for reason in sorted(set(reasons) | set(expected_reasons)):
        flag = "" if reasons.get(reason, 0) == expected_reasons.get(reason, 0) else "   <- differs"
        lines.append(
            f"    {reason:<20}{reasons.get(reason, 0):>10}{expected_reasons.get(reason, 0):>11}"
            f"{flag}"
        )
    total = report["sent"] + report["filtered"] + report["dead_lettered"]
    verdict = "add up" if total == report["input"] else "DO NOT add up"
    lines.append(
        f"  sent + filtered + dead_lettered = {total}, input = {report['input']}: counts {verdict}"
    )
    return lines


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}/s" if seconds > 0 else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _load() -> str:
    return "load average " + " ".join(f"{load:.2f}" for load in os.getloadavg())


@dataclass
class Side:
    """One run of one side: its measurement, its own run time and where it wrote."""

    measurement: Measurement
    run_seconds: float
    output_dir: Path


def _run_floor_side(
    input_path: Path, run_dir: Path, attempt: int, parser: str, runner_flags: list[str]
) -> Side | None:
    output_dir = run_dir / f"floor-{attempt}"
    command = [sys.executable, str(Path(__file__).resolve()), "--floor-only"]
    command += ["--input", str(input_path), "--output", str(output_dir)]
    command += ["--floor-parser", parser, *runner_flags]
    measurement = run_measured(command, run_dir, f"floor-{attempt}")
    if measurement.returncode != 0:
        _failed("the floor pipeline", measurement)
        return None
    run_seconds = json.loads(measurement.stdout.strip().splitlines()[-1])["run_seconds"]
    return Side(measurement, run_seconds, output_dir)


def _run_pipeline_side(
    input_path: Path | str, run_dir: Path, attempt: int, *flags: str, name: str = "woopra"
) -> Side | None:
    output_dir = run_dir / f"{name}-{attempt}"
    command = [sys.executable, "-m", "pipeline", "--input", str(input_path), *flags]
    command += ["--sink", "file", "--output", str(output_dir), "--project_name", "bench"]
    measurement = run_measured(command, run_dir, f"{name}-{attempt}")
    report_path = output_dir / "report.json"
    if not report_path.exists():
        _failed("woopra-pipeline", measurement)
        return None
    return Side(measurement, json.loads(report_path.read_text())["wall_seconds"], output_dir)


# --- --warehouse: Avro warehouse tables against JSON lines of the same events ---------------


def warehouse_inputs(data_dir: Path, n: int, seed: int) -> tuple[Path, Path, dict[str, Any]]:
    """The events as JSON lines and as Avro warehouse tables, written once and reused."""
    folder = data_dir / f"warehouse-{n}-seed{seed}-v{GENERATOR_VERSION}"
    marker_path = folder / "marker.json"
    jsonl = folder / "events.jsonl"
    if marker_path.exists():
        return jsonl, folder / "tables", json.loads(marker_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    events = list(generate_events(n, seed))
    with open(jsonl, "w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    marker = {"events": n, "seed": seed, "rows": write_export(events, folder / "tables")}
    marker_path.write_text(json.dumps(marker, indent=2) + "\n")
    return jsonl, folder / "tables", marker


def run_warehouse(args: argparse.Namespace) -> int:
    """Both sides in turn, `--repeat` times; the fastest of each counts."""
    started = time.monotonic()
    jsonl, tables, marker = warehouse_inputs(args.data_dir, args.events, args.seed)
    print("woopra-pipeline warehouse benchmark: Avro warehouse tables vs JSON lines")
    print(
        f"  input     {marker['events']:,} events; {len(marker['rows'])} tables "
        f"(prepared in {time.monotonic() - started:.1f} s)"
    )
    print(flush=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.data_dir))
    sides: dict[str, list[Side]] = {"jsonl": [], "warehouse": []}
    for attempt in range(1, args.repeat + 1):
        print(f"run {attempt}/{args.repeat}: JSON lines ... ({_load()})", flush=True)
        lines = _run_pipeline_side(jsonl, run_dir, attempt, name="jsonl")
        print(f"run {attempt}/{args.repeat}: warehouse tables ... ({_load()})", flush=True)
        rows = _run_pipeline_side(
            f"{tables}/*/*.avro", run_dir, attempt, "--warehouse_table", "auto", name="warehouse"
        )
        if lines is None or rows is None:
            return 1
        sides["jsonl"].append(lines)
        sides["warehouse"].append(rows)
        print(
            f"  JSON lines {lines.run_seconds:.1f} s, warehouse {rows.run_seconds:.1f} s: "
            f"ratio {lines.run_seconds / rows.run_seconds:.2f} ({_load()})",
            flush=True,
        )
    best = {name: min(runs, key=lambda side: side.run_seconds) for name, runs in sides.items()}
    reports = {
        name: json.loads((side.output_dir / "report.json").read_text())
        for name, side in best.items()
    }
    print()
    print(f"  {'':<24}{'JSON lines':>14}{'warehouse':>14}")
    for label, value in (
        ("run time (pipeline)", lambda side: f"{side.run_seconds:.1f} s"),
        ("CPU time (user+sys)", lambda side: f"{side.measurement.cpu_seconds:.1f} s"),
        ("events/s (run time)", lambda side: _rate(args.events, side.run_seconds)),
        ("peak RSS (wait4)", lambda side: _mib(side.measurement.max_rss_kib)),
    ):
        print(f"  {label:<24}{value(best['jsonl']):>14}{value(best['warehouse']):>14}")
    for name in ("input", "sent", "filtered", "dead_lettered"):
        print(f"  {name:<24}{reports['jsonl'][name]:>14,}{reports['warehouse'][name]:>14,}")
    ratio = best["jsonl"].run_seconds / best["warehouse"].run_seconds
    ratios = [a.run_seconds / b.run_seconds for a, b in zip(*sides.values(), strict=True)]
    print()
    print(
        f"  throughput ratio (warehouse/JSON lines, fastest runs)  {ratio:5.2f}"
        f"   goal >= {WAREHOUSE_GOAL}   {_verdict(ratio >= WAREHOUSE_GOAL)}"
    )
    print(f"  per interleaved pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    cpu = best["jsonl"].measurement.cpu_seconds / best["warehouse"].measurement.cpu_seconds
    print(f"  on CPU time (least moved by other work on the machine): {cpu:.2f}")
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    balanced = all(report["balanced"] for report in reports.values())
    return 0 if balanced and reports["warehouse"]["input"] == args.events else 1


def _failed(name: str, measurement: Measurement) -> None:
    print(f"{name} failed with exit status {measurement.returncode}", file=sys.stderr)
    print(measurement.stderr[-4000:], file=sys.stderr)


def _print_header(input_path: Path, marker: dict[str, Any], reused: bool, seconds: float) -> None:
    events = marker["events"]
    shown = (
        input_path.relative_to(REPO_ROOT) if input_path.is_relative_to(REPO_ROOT) else input_path
    )
    print("woopra-pipeline batch benchmark")
    print(
        f"  input     {shown}  ({events:,} lines, {marker['bytes'] / 1e6:,.1f} MB, "
        f"{marker['bytes'] / events:,.0f} bytes/line, "
        f"{'reused' if reused else 'generated'} in {seconds:.1f} s)"
    )
    print(f"  lines     {json.dumps(marker['kinds'])}")
    print(
        f"  machine   {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"apache-beam {beam.__version__}, FnApiRunner on both sides"
    )
    print(flush=True)


def _print_comparison(floor: Side, ours: Side, events: int, sent: int) -> None:
    fm, om = floor.measurement, ours.measurement
    floor_lines = _count_lines(str(floor.output_dir / "floor-*.jsonl"))
    rows = [
        ("", "floor", "woopra-pipeline"),
        ("wall time (process)", f"{fm.wall_seconds:.1f} s", f"{om.wall_seconds:.1f} s"),
        ("run time (pipeline)", f"{floor.run_seconds:.1f} s", f"{ours.run_seconds:.1f} s"),
        ("CPU time (user+sys)", f"{fm.cpu_seconds:.1f} s", f"{om.cpu_seconds:.1f} s"),
        ("events/s (run time)", _rate(events, floor.run_seconds), _rate(events, ours.run_seconds)),
        ("events/s (wall time)", _rate(events, fm.wall_seconds), _rate(events, om.wall_seconds)),
        ("events per CPU second", _rate(events, fm.cpu_seconds), _rate(events, om.cpu_seconds)),
        ("peak RSS (wait4)", _mib(fm.max_rss_kib), _mib(om.max_rss_kib)),
        ("peak RSS (process tree)", _mib(fm.tree_peak_kib), _mib(om.tree_peak_kib)),
        ("child processes", str(fm.max_descendants), str(om.max_descendants)),
        ("lines written", f"{floor_lines:,}", f"{sent:,} requests"),
    ]
    print()
    for label, left, right in rows:
        print(f"  {label:<26}{left:>16}{right:>20}")

    throughput_ratio = floor.run_seconds / ours.run_seconds
    memory_ratio = om.peak_kib / fm.peak_kib
    print()
    print(
        f"  throughput ratio (ours/floor, run time)   {throughput_ratio:5.2f}"
        f"   goal >= {THROUGHPUT_GOAL}   {_verdict(throughput_ratio >= THROUGHPUT_GOAL)}"
    )
    print(
        f"  memory ratio (ours/floor, peak RSS)       {memory_ratio:5.2f}"
        f"   goal <= {MEMORY_GOAL}   {_verdict(memory_ratio <= MEMORY_GOAL)}"
    )
    print(
        f"  (throughput ratio on wall time {fm.wall_seconds / om.wall_seconds:.2f}, "
        f"on CPU time {fm.cpu_seconds / om.cpu_seconds:.2f})"
    )


def _runner_flags(args: argparse.Namespace) -> list[str]:
    """The local runner's flags that both sides are given."""
    flags = []
    if args.direct_num_workers is not None:
        flags += ["--direct_num_workers", str(args.direct_num_workers)]
    if args.direct_running_mode is not None:
        flags += ["--direct_running_mode", args.direct_running_mode]
    return flags


def _print_table_row(
    floor: Side, ours: Side, args: argparse.Namespace, runner_flags: list[str]
) -> None:
    """The figures as one row of the README's scaling table."""
    throughput = floor.run_seconds / ours.run_seconds
    cpu = floor.measurement.cpu_seconds / ours.measurement.cpu_seconds
    memory = ours.measurement.peak_kib / floor.measurement.peak_kib
    print()
    print(f"  table row ({args.floor_parser} floor, {' '.join(runner_flags) or 'in-process'}):")
    print(
        f"  | {args.events:,} | {floor.run_seconds:.1f} s | {ours.run_seconds:.1f} s "
        f"| **{throughput:.2f}** (CPU {cpu:.2f}) "
        f"| {_mib(floor.measurement.peak_kib)} | {_mib(ours.measurement.peak_kib)} "
        f"| **{memory:.2f}** | {' '.join(f'{load:.1f}' for load in os.getloadavg())} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="Events in the input file.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs of each side, alternating; the fastest counts."
    )
    parser.add_argument("--keep", action="store_true", help="Keep both sides' output files.")
    parser.add_argument(
        "--warehouse",
        action="store_true",
        help="Compare the events as Avro warehouse tables with the same events as JSON lines.",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--floor-parser",
        choices=sorted(FLOOR_PARSERS),
        default="json",
        help="The floor's JSON reader and writer.",
    )
    parser.add_argument(
        "--direct_num_workers",
        type=int,
        default=None,
        help="Given to both sides: the local runner's worker count (0: one per CPU).",
    )
    parser.add_argument(
        "--direct_running_mode",
        choices=("in_memory", "multi_threading", "multi_processing"),
        default=None,
        help="Given to both sides: how the local runner runs its workers.",
    )
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runner_flags = _runner_flags(args)

    if args.floor_only:
        print(json.dumps(run_floor(args.input, args.output, args.floor_parser, runner_flags)))
        return 0
    if args.warehouse:
        return run_warehouse(args)

    started = time.monotonic()
    input_path, marker, reused = events_file(args.data_dir, args.events, args.seed)
    _print_header(input_path, marker, reused, time.monotonic() - started)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.data_dir))

    floors: list[Side] = []
    ours: list[Side] = []
    for attempt in range(1, args.repeat + 1):
        print(f"run {attempt}/{args.repeat}: the floor ... ({_load()})", flush=True)
        floor = _run_floor_side(input_path, run_dir, attempt, args.floor_parser, runner_flags)
        print(f"run {attempt}/{args.repeat}: woopra-pipeline ... ({_load()})", flush=True)
        side = _run_pipeline_side(input_path, run_dir, attempt, *runner_flags)
        if floor is None or side is None:
            return 1
        floors.append(floor)
        ours.append(side)
        print(
            f"  floor {floor.run_seconds:.1f} s, woopra-pipeline {side.run_seconds:.1f} s "
            f"({_load()})",
            flush=True,
        )

    best_floor = min(floors, key=lambda side: side.run_seconds)
    best_ours = min(ours, key=lambda side: side.run_seconds)
    report = json.loads((best_ours.output_dir / "report.json").read_text())
    _print_comparison(best_floor, best_ours, args.events, report["sent"])
    _print_table_row(best_floor, best_ours, args, runner_flags)

    print()
    print(f"woopra-pipeline report.json (exit status {best_ours.measurement.returncode})")
    for line in check_report(report, marker, best_ours.output_dir):
        print(line)

    if args.keep:
        print(f"\noutputs and logs kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if all(side.measurement.returncode == 0 for side in ours) else 1


if __name__ == "__main__":
    sys.exit(main())
