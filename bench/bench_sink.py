"""HTTP sink benchmark: woopra-pipeline --sink woopra against a local woopra-stub.

Every run starts `woopra-stub` as a child process on a free loopback port with `--record FILE`
(one JSON line per request it received: path, params, status, arrival `ts`), writes generated
`track` events to a JSON-lines file, runs `woopra-pipeline` on it as another child process,
stops the stub (SIGTERM, then wait) and computes the figures from the record file. Events are
generated here, not by bench/events.py: `--devices` devices (`anonymousId`), the same number of
events each, one second apart in `originalTimestamp`, written to the file in a seeded shuffled
order (so that the pipeline has to restore each device's order). A request is identified by
its `cookie` (the device) and `timestamp` (unique per device) parameters.

1. Throughput: `--events` events (20,000) over `--devices` devices (2,000), stub latency
   50 ms, `--rate_limit 0 --max_in_flight 32`. The ceiling is 32 requests in flight / 0.05 s
   = 640 requests/s; the goal is >= 90% of it (576/s) over the sending window. Printed:
   requests received; the achieved rate over the sending window (from the first to the last
   arrival: (requests - 1) / (last ts - first ts)), over the pipeline's run time (report.json
   `wall_seconds`, from `pipeline.run()` to the end) and over the whole process wall time;
   whether per-device order was kept (in arrival order, the timestamps of each cookie never
   decrease) and whether any request arrived twice. To tell why the rate falls short: the CPU
   use while sending, sampled every 0.25 s from /proc (the machine's busy share of all cores;
   the cores used by the pipeline's process tree, by the stub and by other processes, since
   all share the machine); the average requests in flight at the stub (requests x latency /
   window); the sender's turnaround (the gap between two arrivals of one cookie less the
   latency, i.e. time spent in the pipeline between an answer and the device's next request);
   and the requests received in each second of the window.
2. Rate cap: `--rate-events` events (3,000) over a tenth as many devices, a fresh stub
   (latency 50 ms), `--rate_limit 100`. Printed: the largest number of requests in any
   1-second window, computed exactly (for each arrival ts, the arrivals in [ts, ts + 1)),
   goal <= 105; and the average rate over the sending window, goal >= 90.
3. Fault run (skipped with `--skip-fault-run`): 5,000 events over 500 devices against a stub
   with `--fail-rate 0.10 --throttle-rate 0.05 --reset-rate 0.02 --reject-rate 0.01
   --retry-after 1 --seed 7`, `--rate_limit 0 --max_in_flight 32`. Printed: the report's sent,
   dead letters by reason, retries and 429 answers; whether sent + dead_lettered equals
   the events; whether the stub's 400 answers equal the `http_4xx` dead letters; the share
   of events answered 200 more than once (200 records per (cookie, timestamp)), goal <= 0.1%;
   and per-device order over every attempt (a retry repeats its timestamp, never an older one).

PASS/MISS lines are information only: the script never asserts, and exits 0 unless a child
could not be started. Run from the repository root:

    .venv/bin/python bench/bench_sink.py [--events N] [--devices N] [--rate-events N]
                                         [--skip-fault-run] [--keep]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
STUB_LATENCY_MS = 50
MAX_IN_FLIGHT = 32
THROUGHPUT_LIMIT = MAX_IN_FLIGHT / (STUB_LATENCY_MS / 1000)  # 640 requests/s
THROUGHPUT_GOAL = 0.9
RATE_LIMIT = 100
RATE_WINDOW_MAX_GOAL = 105
RATE_AVERAGE_GOAL = 90
DUPLICATE_SHARE_GOAL = 0.001
FAULT_EVENTS = 5_000
FAULT_DEVICES = 500
FAULT_STUB_ARGS = [
    "--fail-rate", "0.10", "--throttle-rate", "0.05", "--reset-rate", "0.02",
    "--reject-rate", "0.01", "--retry-after", "1", "--seed", "7",
]  # fmt: skip
START = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
SAMPLE_SECONDS = 0.25
PIPELINE_TIMEOUT_SECONDS = 1800
STUB_STOP_SECONDS = 15


# --- events ---------------------------------------------------------------------------------


def write_track_events(path: Path, events: int, devices: int, seed: int = 1) -> None:
    """`events` track events, spread evenly over `devices`, in a seeded shuffled order."""
    per_device, extra = divmod(events, devices)
    rows: list[dict[str, Any]] = []
    for device in range(devices):
        count = per_device + (1 if device < extra else 0)
        for index in range(count):
            stamp = START + timedelta(seconds=index, milliseconds=device % 1000)
            rows.append(
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "anonymousId": f"bench-device-{device:05d}",
                    "messageId": f"bench-{device:05d}-{index:03d}",
                    "originalTimestamp": stamp.isoformat(timespec="milliseconds")[:-6] + "Z",
                    "properties": {"sku": f"sku-{index}", "price": 10 + index, "seq": index},
                }
            )
    random.Random(seed).shuffle(rows)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")


# --- child processes ------------------------------------------------------------------------


@dataclass
class Stub:
    """A running woopra-stub child and where it records."""

    process: subprocess.Popen[str]
    url: str
    record: Path


def start_stub(work: Path, name: str, extra_args: Iterable[str] = ()) -> Stub:
    """Starts woopra-stub on a free port; returns once it has printed its URL."""
    record = work / f"{name}-stub.jsonl"
    stderr = open(work / f"{name}-stub.stderr", "w", encoding="utf-8")  # noqa: SIM115
    command = [
        str(BIN_DIR / "woopra-stub"),
        "--port", "0",
        "--latency-ms", str(STUB_LATENCY_MS),
        "--record", str(record),
        *extra_args,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    line = process.stdout.readline().strip() if process.stdout is not None else ""
    if not line.startswith("listening on "):
        stop_stub(process)
        raise RuntimeError(f"woopra-stub did not start: {line!r}")
    return Stub(process, line.removeprefix("listening on "), record)


def stop_stub(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then wait; kill only if it does not end in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STUB_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"  woopra-stub (pid {process.pid}) did not stop on SIGTERM; killing it")
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[parent].append(int(entry))
    return children


def _tree_ticks(pid: int) -> int:
    """CPU ticks of a process and its live descendants."""
    children = _children_of()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _cpu_ticks(current)
        stack.extend(children.get(current, ()))
    return total


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which user already counts
    return total - idle, total


@dataclass
class CpuSample:
    at: float  # time.time(), comparable with the stub's `ts`
    machine_busy: int
    machine_total: int
    pipeline: int
    stub: int


@dataclass
class CpuSampler:
    """Samples machine, pipeline-tree and stub CPU every SAMPLE_SECONDS on a thread."""

    stub_pid: int
    pipeline_pid: int = 0
    samples: list[CpuSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, pipeline_pid: int) -> None:
        self.pipeline_pid = pipeline_pid
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy, total = _machine_ticks()
            self.samples.append(
                CpuSample(
                    time.time(),
                    busy,
                    total,
                    _tree_ticks(self.pipeline_pid),
                    _cpu_ticks(self.stub_pid),
                )
            )
            self._stop.wait(SAMPLE_SECONDS)

    def over(self, start: float, end: float) -> dict[str, float] | None:
        """Average use between the samples nearest inside [start, end]: shares and cores."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        seconds = last.at - first.at
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        machine_total = last.machine_total - first.machine_total
        return {
            "seconds": seconds,
            "machine_busy_share": (last.machine_busy - first.machine_busy) / machine_total,
            "pipeline_cores": (last.pipeline - first.pipeline) / ticks_per_second / seconds,
            "stub_cores": (last.stub - first.stub) / ticks_per_second / seconds,
        }


@dataclass
class PipelineRun:
    returncode: int
    wall_seconds: float
    report: dict[str, Any]
    cpu_seconds: float  # user + system of the pipeline process and what it waited for
    log_tail: str


def run_pipeline(
    work: Path,
    name: str,
    input_path: Path,
    stub: Stub,
    rate_limit: float,
    sampler: CpuSampler | None = None,
) -> PipelineRun:
    """Runs woopra-pipeline as a child against the stub; its output goes under work/name."""
    output = work / name
    command = [
        str(BIN_DIR / "woopra-pipeline"),
        "--input", str(input_path),
        "--project_name", "bench",
        "--sink", "woopra",
        "--woopra_base_url", stub.url,
        "--max_in_flight", str(MAX_IN_FLIGHT),
        "--rate_limit", f"{rate_limit:g}",
        "--output", str(output),
    ]  # fmt: skip
    log_path = work / f"{name}-pipeline.log"
    with open(log_path, "w", encoding="utf-8") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        if sampler is not None:
            sampler.start(process.pid)
        try:
            deadline = started + PIPELINE_TIMEOUT_SECONDS
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    print(f"  woopra-pipeline ran over {PIPELINE_TIMEOUT_SECONDS} s; killing it")
                    process.kill()
                    _, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.05)
        finally:
            if sampler is not None:
                sampler.stop()
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    report_path = output / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    log_lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return PipelineRun(
        returncode=process.returncode,
        wall_seconds=wall,
        report=report,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        log_tail="\n".join(log_lines[-15:]),
    )


# --- what the stub received -----------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    """The stub's records, in arrival order (the file is in answer order)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    records.sort(key=lambda record: record["ts"])
    return records


def request_key(record: dict[str, Any]) -> tuple[str, str]:
    params = record.get("params", {})
    return params.get("cookie", ""), params.get("timestamp", "")


def order_violations(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(devices, devices whose timestamps decrease somewhere in arrival order)."""
    last_seen: dict[str, int] = {}
    broken: set[str] = set()
    for record in records:
        cookie, stamp = request_key(record)
        value = int(stamp or 0)
        if value < last_seen.get(cookie, value):
            broken.add(cookie)
        last_seen[cookie] = value
    return len(last_seen), len(broken)


def repeated(keys: Iterable[tuple[str, str]]) -> int:
    """How many distinct keys occur more than once."""
    return sum(1 for count in Counter(keys).values() if count > 1)


def window_rate(stamps: list[float]) -> tuple[float, float]:
    """(sending window in seconds, requests per second over it)."""
    if len(stamps) < 2:
        return 0.0, 0.0
    span = stamps[-1] - stamps[0]
    return span, (len(stamps) - 1) / span if span > 0 else 0.0


def max_in_one_second(stamps: list[float]) -> tuple[int, float]:
    """The most arrivals in any [ts, ts + 1) with ts an arrival, and where that window starts."""
    best, best_at = 0, stamps[0] if stamps else 0.0
    for index, start in enumerate(stamps):
        count = bisect.bisect_left(stamps, start + 1.0, lo=index) - index
        if count > best:
            best, best_at = count, start
    return best, best_at


# --- printing -------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_run_problems(run: PipelineRun, name: str) -> None:
    if run.returncode != 0 or not run.report:
        print(f"  woopra-pipeline exited {run.returncode}; last lines of {name}-pipeline.log:")
        for line in run.log_tail.splitlines():
            print(f"    | {line}")


def print_order_and_repeats(records: list[dict[str, Any]], *, repeats: bool = True) -> None:
    """Per-device order over every attempt (a retry repeats its timestamp, never an older one)."""
    devices, broken = order_violations(records)
    print(
        f"  per-device order          {devices - broken} of {devices} devices in timestamp order"
        f" ({broken} out of order)"
    )
    if not repeats:
        return
    twice = repeated(request_key(r) for r in records)
    print(f"  requests arriving twice   {twice} (cookie, timestamp) pairs seen more than once")


# --- the three runs -------------------------------------------------------------------------


def throughput_run(work: Path, events: int, devices: int) -> None:
    print(
        f"1. throughput: {events:,} track events over {devices:,} devices, "
        f"stub latency {STUB_LATENCY_MS} ms, --rate_limit 0 --max_in_flight {MAX_IN_FLIGHT}"
    )
    input_path = work / "throughput-events.jsonl"
    write_track_events(input_path, events, devices)
    stub = start_stub(work, "throughput")
    sampler = CpuSampler(stub_pid=stub.process.pid)
    try:
        run = run_pipeline(work, "throughput", input_path, stub, rate_limit=0, sampler=sampler)
    finally:
        stop_stub(stub.process)
    print_run_problems(run, "throughput")
    records = read_records(stub.record)
    stamps = [r["ts"] for r in records]
    span, rate = window_rate(stamps)
    goal = THROUGHPUT_GOAL * THROUGHPUT_LIMIT
    elapsed = run.report.get("wall_seconds") or 0.0
    print(
        f"  requests received         {len(records):,} (expected {events:,}; "
        f"report: sent {run.report.get('sent', '?')}, "
        f"dead-lettered {run.report.get('dead_lettered', '?')})"
    )
    print(
        f"  limit                     {MAX_IN_FLIGHT} in flight / {STUB_LATENCY_MS / 1000:g} s"
        f" = {THROUGHPUT_LIMIT:.0f} requests/s; goal >= {THROUGHPUT_GOAL:.0%} = {goal:.0f}/s"
    )
    print(
        f"  sending window            {span:.2f} s, {rate:.1f} requests/s "
        f"= {rate / THROUGHPUT_LIMIT:.1%} of the limit  {verdict(rate >= goal)}"
    )
    if elapsed:
        print(
            f"  pipeline run time         {elapsed:.2f} s, {len(records) / elapsed:.1f} requests/s"
            f" = {len(records) / elapsed / THROUGHPUT_LIMIT:.1%} of the limit"
        )
    wall_rate = len(records) / run.wall_seconds
    print(
        f"  process wall time         {run.wall_seconds:.2f} s, {wall_rate:.1f} requests/s "
        f"= {wall_rate / THROUGHPUT_LIMIT:.1%} of the limit"
    )
    print_order_and_repeats(records)
    if stamps:
        cpu = sampler.over(stamps[0], stamps[-1])
        if cpu is not None:
            cores = os.cpu_count() or 1
            others = cpu["machine_busy_share"] * cores - cpu["pipeline_cores"] - cpu["stub_cores"]
            print(
                f"  CPU while sending         machine {cpu['machine_busy_share']:.0%} busy "
                f"of {cores} cores: pipeline {cpu['pipeline_cores']:.2f} cores, "
                f"stub {cpu['stub_cores']:.2f}, other processes {max(0.0, others):.2f}"
            )
        print(
            f"  pipeline CPU, whole run   {run.cpu_seconds:.1f} s user+system "
            f"over {run.wall_seconds:.1f} s wall"
        )
        print_concurrency(records, span)
        print_send_profile(records)


def print_concurrency(records: list[dict[str, Any]], span: float) -> None:
    """Requests in flight at the stub, and the sender's own time between a device's requests.

    A device's next request leaves only after the previous answer, so the gap between two
    arrivals of one cookie, less the stub's latency, is time spent in the pipeline process.
    """
    if span <= 0:
        return
    in_flight = len(records) * STUB_LATENCY_MS / 1000 / span
    previous: dict[str, float] = {}
    gaps: list[float] = []
    for record in records:
        cookie = request_key(record)[0]
        if cookie in previous:
            gaps.append((record["ts"] - previous[cookie]) * 1000 - STUB_LATENCY_MS)
        previous[cookie] = record["ts"]
    print(f"  in flight at the stub     {in_flight:.1f} on average (of {MAX_IN_FLIGHT})")
    if gaps:
        gaps.sort()
        p50, p90, p99 = (gaps[int(q * (len(gaps) - 1))] for q in (0.5, 0.9, 0.99))
        print(
            f"  sender turnaround         same-device gap minus latency: p50 {p50:.1f} ms, "
            f"p90 {p90:.1f} ms, p99 {p99:.1f} ms"
        )


def print_send_profile(records: list[dict[str, Any]]) -> None:
    """Requests per second of the sending window, to show stalls (e.g. at bundle boundaries)."""
    if not records:
        return
    first = records[0]["ts"]
    per_second = Counter(int(r["ts"] - first) for r in records)
    seconds = range(max(per_second) + 1)
    counts = [per_second.get(s, 0) for s in seconds]
    print("  requests per second of the window:")
    for start in range(0, len(counts), 10):
        row = " ".join(f"{c:4d}" for c in counts[start : start + 10])
        print(f"    {start:3d}s  {row}")


def rate_cap_run(work: Path, events: int) -> None:
    devices = max(1, events // 10)
    print(
        f"\n2. rate cap: {events:,} track events over {devices:,} devices, "
        f"stub latency {STUB_LATENCY_MS} ms, --rate_limit {RATE_LIMIT} "
        f"--max_in_flight {MAX_IN_FLIGHT}"
    )
    input_path = work / "rate-events.jsonl"
    write_track_events(input_path, events, devices)
    stub = start_stub(work, "rate")
    try:
        run = run_pipeline(work, "rate", input_path, stub, rate_limit=RATE_LIMIT)
    finally:
        stop_stub(stub.process)
    print_run_problems(run, "rate")
    records = read_records(stub.record)
    stamps = [r["ts"] for r in records]
    print(f"  requests received         {len(records):,} (expected {events:,})")
    if not stamps:
        return
    most, at = max_in_one_second(stamps)
    span, rate = window_rate(stamps)
    print(
        f"  max in any 1 s window     {most} (window starting {at - stamps[0]:.3f} s "
        f"into sending); goal <= {RATE_WINDOW_MAX_GOAL}  {verdict(most <= RATE_WINDOW_MAX_GOAL)}"
    )
    print(
        f"  average over the window   {rate:.1f} requests/s over {span:.2f} s; "
        f"goal >= {RATE_AVERAGE_GOAL}  {verdict(rate >= RATE_AVERAGE_GOAL)}"
    )
    print_order_and_repeats(records)


def fault_run(work: Path) -> None:
    print(
        f"\n3. faults: {FAULT_EVENTS:,} track events over {FAULT_DEVICES} devices, "
        f"stub {' '.join(FAULT_STUB_ARGS)}, --rate_limit 0 --max_in_flight {MAX_IN_FLIGHT}"
    )
    input_path = work / "fault-events.jsonl"
    write_track_events(input_path, FAULT_EVENTS, FAULT_DEVICES)
    stub = start_stub(work, "fault", FAULT_STUB_ARGS)
    try:
        run = run_pipeline(work, "fault", input_path, stub, rate_limit=0)
    finally:
        stop_stub(stub.process)
    print_run_problems(run, "fault")
    report = run.report
    records = read_records(stub.record)
    sent = report.get("sent", 0)
    dead = report.get("dead_lettered", 0)
    reasons = report.get("dead_letter_reasons", {})
    print(f"  pipeline wall time        {run.wall_seconds:.1f} s")
    print(f"  sent                      {sent:,}")
    print(f"  dead-lettered             {dead:,}")
    for reason, count in sorted(reasons.items()):
        print(f"    {reason:<23} {count:,}")
    print(f"  retries                   {report.get('retries', 0):,}")
    print(f"  429 answers               {report['http_statuses'].get('429', 0):,}")
    balanced = sent + dead == FAULT_EVENTS
    print(f"  sent + dead-lettered      {sent + dead:,} == {FAULT_EVENTS:,}: {balanced}")
    statuses = Counter(str(r["status"]) for r in records)
    print(
        "  stub answers              "
        + ", ".join(f"{status}: {n:,}" for status, n in sorted(statuses.items()))
        + f" ({len(records):,} requests)"
    )
    rejected = statuses.get("400", 0)
    http_4xx = reasons.get("http_4xx", 0)
    print(f"  stub 400s == http_4xx     {rejected:,} == {http_4xx:,}: {rejected == http_4xx}")
    delivered = Counter(request_key(r) for r in records if r["status"] == 200)
    twice = sum(1 for count in delivered.values() if count > 1)
    share = twice / FAULT_EVENTS
    print(
        f"  delivered more than once  {twice} of {FAULT_EVENTS:,} events = {share:.2%}; "
        f"goal <= {DUPLICATE_SHARE_GOAL:.1%}  {verdict(share <= DUPLICATE_SHARE_GOAL)}"
    )
    print(f"  delivered (200) events    {len(delivered):,} distinct; report sent {sent:,}")
    print_order_and_repeats(records, repeats=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20_000, help="throughput run events")
    parser.add_argument("--devices", type=int, default=2_000, help="throughput run devices")
    parser.add_argument("--rate-events", type=int, default=3_000, help="rate cap run events")
    parser.add_argument("--skip-fault-run", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"woopra sink benchmark; python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {' '.join(load)} before starting\nwork dir {work}\n"
    )
    try:
        throughput_run(work, args.events, args.devices)
        rate_cap_run(work, args.rate_events)
        if not args.skip_fault_run:
            fault_run(work)
    except (OSError, RuntimeError) as error:
        print(f"bench_sink: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
