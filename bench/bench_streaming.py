"""Streaming benchmark: the local streaming runner from the Pub/Sub emulator to woopra-stub.

Starts the Pub/Sub emulator (tests/pubsub_emulator.py's launcher) and `woopra-stub --record FILE`
as children, runs `woopra-pipeline --input_subscription ... --rate_limit 0` as a third child,
publishes generated `track` events and reads the stub's record as it grows. Every event carries
its sequence number (`properties.seq`, sent as `ce_seq`); its latency is the stub's arrival time
(`ts`) less the time just before the publish call that carried it. Events are one per device
and second apart in `originalTimestamp`, so per-device order is checkable from `timestamp`.

1. Steady: `--steady-rate` events/s (500) for `--steady-seconds` (60) over `--steady-devices`
   (2,500) in turn, published every 0.1 s: each device sends every 5 s, as in the issue's
   first measurement (100/s over 500 devices). A device flushes once it has been quiet for
   `--max_buffering_seconds`, at the latest `--max_buffering_wait_seconds` after its first
   buffered event, so devices that send more often than the buffering time wait up to the
   latter by design (e.g. `--steady-devices 500`). Printed: events delivered per second over
   the phase (events / (last arrival - first publish)), whether it kept up (everything
   delivered within `--max_buffering_seconds` + 2 s of the phase's end) and latency
   p50/p90/p99/max; goal p99 <= `--max_buffering_seconds` + 2 s.
2. Burst: `--burst-events` (10,000) over `--burst-devices` (1,000), published at once. Printed:
   events/s from the first publish to the last arrival (goal >= 1,000), the same over the
   sending window only (from the first arrival), and latency percentiles. Then, as the
   reference measured in the same invocation, the sink alone: its lanes and client
   (`transforms/delivery/sink.py`) without Beam, at the run's `--max_in_flight`, sending the
   same number of device lists of the same length to a fresh stub of the same latency, all
   queued at once. Printed: its requests/s, the sending window's share of it, and what the
   burst would have reached at that rate with every event ready at the first arrival, and
   with every device flushed `--max_buffering_seconds` after the last publish, which no
   faster pipeline can pass.
   After both: per-device order, repeats, and the run report after SIGTERM (a drain).
3. Hot device (skipped with `--skip-cost`): a fresh pipeline against a stub without latency
   (`--latency-ms 0`, so that one device's strictly sequential requests do not set the pace).
   It first fills the dedup window: `--hot-window` (5,000) events of one device and 5 events
   each of `--quiet-devices` (1,000). Then it times `--cost-events` (1,000) more events of the
   hot device, then as many spread over the quiet devices (one each), as the CPU time of the
   pipeline process per delivered event (utime + stime, so that other work on the machine
   counts less than in wall time). Goal: hot <= 2 x quiet.
4. Device state alone (skipped with `--skip-state`; no emulator): ResolveIdentity's streaming
   DoFn driven by hand on the local runner's own state classes (`DirectUserStateContext`),
   one event per bundle, so each event pays its state's read and commit as in a steady
   stream. The same fill, then the time per event of `--cost-events` more of the hot device
   and of the quiet devices; the difference between them is what the state costs per event
   of what a device sent. Goal: hot <= 2 x quiet.
5. Timer looks (skipped with `--skip-looks`; no emulator): a step's keyed states as a long
   run leaves them, `--look-devices` (100,000) devices with an expiry and an end-of-input
   timer each, none due. Printed: the time of one look for due timers (the monitor looks
   every 0.5 s), Beam's own look against the local runner's, after a first look of each.

The load average (`/proc/loadavg`) is printed beside every figure: the machine is shared and
the figures move with it. PASS/MISS lines are information only; the script exits 0 unless a
child could not be started. Run from the repository root:

    .venv/bin/python bench/bench_streaming.py [--steady-seconds N] [--burst-events N]
        [--skip-steady] [--skip-burst] [--skip-cost] [--skip-state] [--skip-looks]
        [--max-buffering-seconds S] [--keep] [-- more woopra-pipeline flags]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import apache_beam as beam  # noqa: E402
from apache_beam.coders import StrUtf8Coder  # noqa: E402
from apache_beam.runners.direct.clock import RealClock  # noqa: E402
from apache_beam.runners.direct.direct_userstate import DirectUserStateContext  # noqa: E402
from apache_beam.runners.direct.evaluation_context import (  # noqa: E402
    DirectStepContext,
    DirectUnmergedState,
)
from apache_beam.runners.direct.watermark_manager import _TransformWatermarks  # noqa: E402
from apache_beam.transforms.core import _StateDoFnParam, _TimerDoFnParam  # noqa: E402
from apache_beam.transforms.timeutil import TimeDomain  # noqa: E402
from apache_beam.transforms.window import GlobalWindow  # noqa: E402
from apache_beam.utils.timestamp import Timestamp  # noqa: E402
from apache_beam.utils.windowed_value import WindowedValue  # noqa: E402

from bench.bench_sink import (  # noqa: E402
    BIN_DIR,
    Stub,
    _cpu_ticks,
    order_violations,
    start_stub,
    stop_stub,
    verdict,
)
from pipeline.local_runner import local_streaming_fixes  # noqa: E402
from tests.pubsub_emulator import EMULATOR_HOST_ENV, PubSubEmulator  # noqa: E402
from transforms.core.mapping import PreparedEvent  # noqa: E402
from transforms.core.records import WoopraRequest  # noqa: E402
from transforms.delivery.sink import DeliverySettings, _BundleSends, _Sender  # noqa: E402
from transforms.identity import StreamingSettings, _StreamingResolveFn  # noqa: E402

PROJECT = "bench-project"
PUBLISH_BATCH = 1000  # Pub/Sub's most messages per publish request
BURST_RATE_GOAL = 1000.0
STUB_LATENCY_MS = 20
DEFAULT_MAX_IN_FLIGHT = 32  # woopra-pipeline's default
COST_RATIO_GOAL = 2.0
STEADY_TICK_SECONDS = 0.1
PIPELINE_STOP_SECONDS = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GLOBAL = GlobalWindow()


def load() -> str:
    """The 1-minute load average, for beside every figure."""
    return f"load {os.getloadavg()[0]:.2f}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class StubRecord:
    """The stub's record file, read as it grows: arrival time per `ce_seq`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = ""
        self.arrivals: dict[int, float] = {}
        self.records: list[dict[str, Any]] = []

    def poll(self) -> None:
        if not self._path.exists():
            return
        with open(self._path, encoding="utf-8") as handle:
            handle.seek(self._offset)
            text = handle.read()
            self._offset = handle.tell()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            self.records.append(record)
            seq = record["params"].get("ce_seq")
            if record["status"] == 200 and seq is not None:
                self.arrivals.setdefault(int(seq), record["ts"])

    def wait_for(self, seqs: Iterable[int], timeout: float) -> bool:
        """Waits until every sequence number arrived; False on timeout."""
        wanted = set(seqs)
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if wanted <= self.arrivals.keys():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@dataclass
class Publisher:
    """Publishes numbered track events; remembers when each was handed to Pub/Sub."""

    emulator: PubSubEmulator
    topic: str
    published_at: dict[int, float] = field(default_factory=dict)
    _next_seq: int = 0
    _per_device: dict[str, int] = field(default_factory=dict)

    def publish(self, devices: list[str]) -> list[int]:
        """One event per entry of `devices` (a device may repeat), in publish calls of 1,000."""
        seqs = []
        for start in range(0, len(devices), PUBLISH_BATCH):
            batch, payloads = devices[start : start + PUBLISH_BATCH], []
            for device in batch:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
                count = self._per_device.get(device, 0)
                self._per_device[device] = count + 1
                payloads.append(_event(device, seq, count))
                seqs.append(seq)
            now = time.time()
            self.emulator.publish(PROJECT, self.topic, payloads)
            self.published_at.update((seq, now) for seq in seqs[-len(batch) :])
        return seqs


def _event(device: str, seq: int, count: int) -> bytes:
    return json.dumps(
        {
            "type": "track",
            "event": "bench",
            "anonymousId": device,
            "messageId": f"m-{seq}",
            "timestamp": 1_717_200_000_000 + count * 1000,
            "properties": {"seq": seq},
        }
    ).encode()


@dataclass
class Pipeline:
    process: subprocess.Popen[str]
    output: Path
    log: Path


def start_pipeline(
    work: Path, name: str, subscription: str, stub: Stub, emulator: PubSubEmulator, extra: list
) -> Pipeline:
    output = work / f"{name}-out"
    log = work / f"{name}-pipeline.log"
    command = [
        str(BIN_DIR / "woopra-pipeline"),
        "--input_subscription", subscription,
        "--project_name", "bench.example.com",
        "--woopra_base_url", stub.url,
        "--rate_limit", "0",
        "--output", str(output),
        "--report_interval_seconds", "10",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, EMULATOR_HOST_ENV: emulator.host_port}
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT
        )
    return Pipeline(process, output, log)


def stop_pipeline(pipeline: Pipeline) -> dict[str, Any] | None:
    """SIGTERM (a drain), wait, and return its report.json (None when it did not write one)."""
    started = time.monotonic()
    if pipeline.process.poll() is None:
        pipeline.process.send_signal(signal.SIGTERM)
        try:
            pipeline.process.wait(timeout=PIPELINE_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"  the pipeline did not stop within {PIPELINE_STOP_SECONDS} s; killing it")
            pipeline.process.kill()
            pipeline.process.wait()
    print(
        f"  stopped with SIGTERM: exit {pipeline.process.returncode} "
        f"after {time.monotonic() - started:.1f} s"
    )
    report = pipeline.output / "report.json"
    return json.loads(report.read_text()) if report.exists() else None


def warm_up(publisher: Publisher, record: StubRecord, devices: int = 50) -> bool:
    """A first small batch end to end: the runner, the connections and the JIT-less paths."""
    seqs = publisher.publish([f"warm-{n}" for n in range(devices)])
    return record.wait_for(seqs, timeout=120)


def print_latencies(name: str, seqs: list[int], publisher: Publisher, record: StubRecord) -> None:
    latencies = [
        record.arrivals[seq] - publisher.published_at[seq] for seq in seqs if seq in record.arrivals
    ]
    if not latencies:
        print(f"  {name}: nothing delivered")
        return
    print(
        f"  {name} latency (publish -> stub): p50 {percentile(latencies, 0.5):.2f} s, "
        f"p90 {percentile(latencies, 0.9):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
        f"max {max(latencies):.2f} s  ({load()})"
    )


def steady_phase(
    publisher: Publisher, record: StubRecord, rate: int, seconds: int, devices: int, budget: float
) -> list[int]:
    names = [f"steady-{n}" for n in range(devices)]
    per_tick = max(1, round(rate * STEADY_TICK_SECONDS))
    seqs: list[int] = []
    started = time.monotonic()
    tick = 0
    while tick * STEADY_TICK_SECONDS < seconds:
        wake = started + tick * STEADY_TICK_SECONDS
        time.sleep(max(0.0, wake - time.monotonic()))
        batch = [names[(len(seqs) + n) % devices] for n in range(per_tick)]
        seqs += publisher.publish(batch)
        tick += 1
    published = time.monotonic() - started
    print(f"  published {len(seqs)} events in {published:.1f} s ({len(seqs) / published:.0f}/s)")
    kept_up = record.wait_for(seqs, timeout=budget)
    if not record.wait_for(seqs, timeout=120):
        print(f"  only {sum(s in record.arrivals for s in seqs)} of {len(seqs)} arrived")
    last_publish = max(publisher.published_at[s] for s in seqs)
    arrived = [record.arrivals[s] for s in seqs if s in record.arrivals]
    if arrived:
        span = max(arrived) - min(publisher.published_at[s] for s in seqs)
        print(
            f"  steady: {len(arrived)} delivered at {len(arrived) / span:.0f} events/s "
            f"(first publish -> last arrival); last arrival {max(arrived) - last_publish:.2f} s "
            f"after the last publish  ({load()})"
        )
    print(f"  {verdict(kept_up)} kept up: all delivered within {budget:.0f} s of the last publish")
    print_latencies("steady", seqs, publisher, record)
    latencies = [
        record.arrivals[s] - publisher.published_at[s] for s in seqs if s in record.arrivals
    ]
    p99 = percentile(latencies, 0.99)
    print(f"  {verdict(p99 <= budget)} p99 {p99:.2f} s <= {budget:.0f} s")
    return seqs


def burst_phase(
    publisher: Publisher, record: StubRecord, events: int, devices: int, seed: int = 3
) -> BurstTiming | None:
    names = [f"burst-{n % devices}" for n in range(events)]
    random.Random(seed).shuffle(names)
    seqs = publisher.publish(names)
    first_publish = min(publisher.published_at[s] for s in seqs)
    print(f"  published {len(seqs)} events in {time.time() - first_publish:.1f} s")
    if not record.wait_for(seqs, timeout=600):
        print(f"  only {sum(s in record.arrivals for s in seqs)} of {len(seqs)} arrived")
    arrived = sorted(record.arrivals[s] for s in seqs if s in record.arrivals)
    if len(arrived) < 2:
        return None
    rate = len(arrived) / (arrived[-1] - first_publish)
    window = (len(arrived) - 1) / (arrived[-1] - arrived[0])
    print(
        f"  burst: {len(arrived)} delivered at {rate:.0f} events/s (first publish -> last "
        f"arrival, {arrived[-1] - first_publish:.1f} s), {window:.0f}/s over the sending window "
        f"from the first arrival {arrived[0] - first_publish:.1f} s after the first publish "
        f"({load()})"
    )
    print(f"  {verdict(rate >= BURST_RATE_GOAL)} >= {BURST_RATE_GOAL:.0f} events/s")
    print_latencies("burst", seqs, publisher, record)
    last_publish = max(publisher.published_at[s] for s in seqs)
    return BurstTiming(
        len(arrived), last_publish - first_publish, arrived[0] - first_publish, window
    )


@dataclass(frozen=True)
class BurstTiming:
    """A burst's delivery; times in seconds after the first publish."""

    delivered: int
    last_publish: float
    first_arrival: float
    sending_rate: float  # events/s over the sending window


def sink_alone_rate(work: Path, events: int, devices: int, max_in_flight: int) -> float:
    """Requests/s of the sink's own lanes and client, without Beam, against a fresh stub of the
    same latency: `devices` lists of `events / devices` requests, all queued at once, as a
    flushed burst is. The most the burst's sending could reach on this machine at this hour."""
    stub = start_stub(work, "sink-alone", ["--latency-ms", str(STUB_LATENCY_MS)])
    sender = _Sender(DeliverySettings(rate_limit=0, max_in_flight=max_in_flight))
    source = WindowedValue(None, 0, (GLOBAL,))
    per_device = max(1, events // devices)
    lists = [
        [
            WoopraRequest(
                f"alone-{device}-{n}",
                stub.url + "/track/ce",
                {"project": PROJECT, "cookie": f"alone-{device}", "event": "bench", "ce_n": n},
            )
            for n in range(per_device)
        ]
        for device in range(devices)
    ]
    try:
        bundle = _BundleSends()
        started = time.perf_counter()
        for device, requests in enumerate(lists):
            sender.lanes.submit(device, requests, source, bundle)
        while not bundle.wait(0, 1.0):
            pass
        elapsed = time.perf_counter() - started
        failed = sum(not outcome.delivered for _, outcome in bundle.take())
    finally:
        sender.pool.shutdown()
        sender.client.close()
        stop_stub(stub.process)
    if failed:
        print(f"  the sink alone: {failed} requests not delivered")
    return devices * per_device / elapsed


def print_sink_reference(
    work: Path,
    timing: BurstTiming,
    devices: int,
    max_in_flight: int,
    buffering_seconds: float,
) -> None:
    """The burst against what the sink alone does now, at the same concurrency: the sending
    window's share of it, and two ceilings of the burst's rate with the sink at that rate:
    every event ready at the first arrival, and (what no faster pipeline can pass) every device
    flushed as soon as buffering allows, `buffering_seconds` after the last publish."""
    alone = sink_alone_rate(work, timing.delivered, devices, max_in_flight)
    sending = timing.delivered / alone

    def ceiling(start: float) -> str:
        return f"{timing.delivered / (start + sending):.0f}"

    print(
        f"  the sink alone (lanes and client, no Beam, {max_in_flight} in flight): {alone:.0f} "
        f"requests/s; the sending window was {timing.sending_rate / alone:.0%} of it ({load()})"
    )
    soonest = timing.last_publish + buffering_seconds
    print(
        f"  at that rate the burst could reach {ceiling(timing.first_arrival)} events/s with "
        f"every event ready at the first arrival, {ceiling(soonest)} with every device "
        f"flushed {buffering_seconds:g} s after the last publish"
    )


def flag_value(flags: list[str], name: str, default: int) -> int:
    """An integer woopra-pipeline flag among `flags` (`--name N` or `--name=N`), else default."""
    for n, flag in enumerate(flags):
        if flag == name and n + 1 < len(flags):
            return int(flags[n + 1])
        if flag.startswith(name + "="):
            return int(flag.split("=", 1)[1])
    return default


def print_report_check(report: dict[str, Any] | None, published: int) -> None:
    if report is None:
        print("  MISS no report.json written")
        return
    counts = {k: report[k] for k in ("input", "sent", "filtered", "dead_lettered")}
    print(f"  report: {counts} balanced={report['balanced']}")
    print(f"  {verdict(report['input'] == published and report['balanced'])} input = published")


def start_run(
    work: Path, emulator: PubSubEmulator, topic: str, latency_ms: int, flags: list[str]
) -> tuple[Stub, Pipeline, StubRecord, Publisher]:
    """A fresh topic and subscription, a stub with that latency, and the pipeline between."""
    emulator.create_topic(PROJECT, topic)
    subscription = emulator.create_subscription(PROJECT, topic, f"{topic}-sub", 60)
    stub = start_stub(work, topic, ["--latency-ms", str(latency_ms)])
    pipeline = start_pipeline(work, topic, subscription, stub, emulator, flags)
    return stub, pipeline, StubRecord(stub.record), Publisher(emulator, topic)


def throughput_run(work: Path, emulator: PubSubEmulator, args: argparse.Namespace) -> None:
    print(f"\n== steady and burst: stub latency {STUB_LATENCY_MS} ms, --rate_limit 0  ({load()})")
    buffering = ["--max_buffering_seconds", str(args.max_buffering_seconds)]
    stub, pipeline, record, publisher = start_run(
        work, emulator, "steady-burst", STUB_LATENCY_MS, buffering + args.extra
    )
    try:
        if not warm_up(publisher, record):
            print(f"  the pipeline delivered nothing; see {pipeline.log}")
            return
        budget = args.max_buffering_seconds + 2
        if not args.skip_steady:
            print(f"-- steady: {args.steady_rate} events/s for {args.steady_seconds} s")
            cpu = _PhaseCpu(pipeline)
            steady_phase(
                publisher,
                record,
                args.steady_rate,
                args.steady_seconds,
                args.steady_devices,
                budget,
            )
            cpu.print()
        if not args.skip_burst:
            print(f"-- burst: {args.burst_events} events over {args.burst_devices} devices")
            cpu = _PhaseCpu(pipeline)
            timing = burst_phase(publisher, record, args.burst_events, args.burst_devices)
            cpu.print()
            if timing is not None:
                in_flight = flag_value(args.extra, "--max_in_flight", DEFAULT_MAX_IN_FLIGHT)
                print_sink_reference(
                    work, timing, args.burst_devices, in_flight, args.max_buffering_seconds
                )
    finally:
        report = stop_pipeline(pipeline)
        stop_stub(stub.process)
    record.poll()
    devices, broken = order_violations(sorted(record.records, key=lambda r: r["ts"]))
    print(f"  {verdict(broken == 0)} per-device order kept ({broken} of {devices} out of order)")
    repeats = len(record.records) - len({r["params"]["ce_seq"] for r in record.records})
    print(f"  {verdict(repeats == 0)} no event delivered twice ({repeats} repeats)")
    print_report_check(report, len(publisher.published_at))


class _PhaseCpu:
    """The pipeline process's CPU over a phase: near 1 core means it is its own limit, far
    below means the machine's other work held it back."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pid = pipeline.process.pid
        self._ticks = _cpu_ticks(self._pid)
        self._started = time.monotonic()

    def print(self) -> None:
        seconds = (_cpu_ticks(self._pid) - self._ticks) / CLOCK_TICKS
        wall = time.monotonic() - self._started
        share = seconds / wall
        print(f"  pipeline process: {seconds:.1f} s CPU in {wall:.1f} s ({share:.2f} cores)")


def _cpu_per_event(
    pipeline: Pipeline, record: StubRecord, send: Callable[[], list[int]]
) -> float | None:
    """Pipeline CPU seconds per event for what `send` publishes, once all of it arrived."""
    before = _cpu_ticks(pipeline.process.pid)
    seqs = send()
    if not record.wait_for(seqs, timeout=300):
        print("  not everything arrived")
        return None
    return (_cpu_ticks(pipeline.process.pid) - before) / CLOCK_TICKS / len(seqs)


def cost_run(work: Path, emulator: PubSubEmulator, args: argparse.Namespace) -> None:
    print(f"\n== hot device vs quiet devices: stub latency 0  ({load()})")
    stub, pipeline, record, publisher = start_run(work, emulator, "cost", 0, args.extra)
    quiet = [f"quiet-{n}" for n in range(args.quiet_devices)]
    try:
        if not warm_up(publisher, record):
            print(f"  the pipeline delivered nothing; see {pipeline.log}")
            return
        fill = publisher.publish(["hot"] * args.hot_window + quiet * 5)
        if not record.wait_for(fill, timeout=600):
            print("  the window did not fill")
            return
        print(
            f"  window filled: {args.hot_window} events of the hot device, 5 each of "
            f"{len(quiet)} quiet devices"
        )
        hot_events = ["hot"] * args.cost_events
        hot = _cpu_per_event(pipeline, record, lambda: publisher.publish(hot_events))
        spread = quiet[: args.cost_events]
        calm = _cpu_per_event(pipeline, record, lambda: publisher.publish(spread))
    finally:
        stop_pipeline(pipeline)
        stop_stub(stub.process)
    if hot is None or calm is None:
        return
    print(
        f"  per-event CPU: hot device {hot * 1e3:.2f} ms, quiet devices {calm * 1e3:.2f} ms, "
        f"ratio {hot / calm:.2f}  ({load()})"
    )
    print(f"  {verdict(hot <= COST_RATIO_GOAL * calm)} hot <= {COST_RATIO_GOAL:.0f} x quiet")


def _drive_one(fn, keyed_state: dict, device: str, event, now: Timestamp) -> None:
    """One bundle of one event through the DoFn, as the local runner runs it: state copied
    from the step's store for the bundle, handed back to it when the bundle commits."""
    step = DirectStepContext(keyed_state)
    context = DirectUserStateContext(step, fn, StrUtf8Coder())
    arguments = {}
    for name, default in inspect.signature(fn.process).parameters.items():
        if isinstance(default.default, _StateDoFnParam):
            arguments[name] = context.get_state(default.default.state_spec, device, GLOBAL)
        elif isinstance(default.default, _TimerDoFnParam):
            timer_spec = default.default.timer_spec
            arguments[name] = context.get_timer(timer_spec, device, GLOBAL, now, None)
        elif default.default is beam.DoFn.TimestampParam:
            arguments[name] = now
    for _ in fn.process((device, event), **arguments):
        pass
    context.commit()
    keyed_state.update(step.partial_keyed_state)


def state_run(args: argparse.Namespace) -> None:
    print(f"\n== device state alone, the local runner's state classes  ({load()})")
    fn = _StreamingResolveFn(True, StreamingSettings())
    keyed_state: dict = {}
    counts: dict[str, int] = {}
    clock = [1_717_200_000_000_000]

    def one(name: str) -> None:
        count = counts.get(name, 0)
        counts[name] = count + 1
        clock[0] += 1000
        event = PreparedEvent(
            {}, "track", "p", f"{name}-{count}", count, None, None, name.removeprefix("cookie:")
        )
        _drive_one(fn, keyed_state, name, event, Timestamp(micros=clock[0]))

    def per_event(names: list[str]) -> float:
        started = time.perf_counter()
        for name in names:
            one(name)
        return (time.perf_counter() - started) / len(names)

    quiet = [f"cookie:quiet-{n}" for n in range(args.quiet_devices)]
    with local_streaming_fixes():  # as in a local run: DoFn specs inspected once
        per_event(["cookie:hot"] * args.hot_window + quiet * 5)
        hot = per_event(["cookie:hot"] * args.cost_events)
        calm = per_event([quiet[n % len(quiet)] for n in range(args.cost_events)])
    print(
        f"  per event, one per bundle: hot device ({args.hot_window} in its window) "
        f"{hot * 1e6:.0f} us, quiet devices (5 each) {calm * 1e6:.0f} us, ratio "
        f"{hot / calm:.2f}  ({load()})"
    )
    print(f"  {verdict(hot <= COST_RATIO_GOAL * calm)} hot <= {COST_RATIO_GOAL:.0f} x quiet")


LOOKS = 10
EXPIRY_MICROS = 10**17  # far ahead: no expiry timer is due


def looks_run(args: argparse.Namespace) -> None:
    print(f"\n== a look for due timers, {args.look_devices} devices, 2 timers each  ({load()})")
    keyed_states = {}
    for n in range(args.look_devices):
        state = keyed_states[f"device-{n}".encode()] = DirectUnmergedState()
        state.set_timer(
            GLOBAL, "user/expire", TimeDomain.WATERMARK, Timestamp(micros=EXPIRY_MICROS + n)
        )
        state.set_timer(GLOBAL, "user/drain", TimeDomain.WATERMARK, GLOBAL.max_timestamp())

    def per_look() -> float:
        step = _TransformWatermarks(RealClock(), keyed_states, "step")
        step._input_watermark = Timestamp.now()
        step.extract_transform_timers()  # the first (the local runner's indexes the keys)
        started = time.perf_counter()
        for _ in range(LOOKS):
            fired, _ = step.extract_transform_timers()
            assert not fired
        return (time.perf_counter() - started) / LOOKS

    beams_own = per_look()
    with local_streaming_fixes():
        local = per_look()
    print(
        f"  per look, none due: Beam's own {beams_own * 1e3:.1f} ms, the local runner's "
        f"{local * 1e3:.3f} ms  ({load()})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady-rate", type=int, default=500)
    parser.add_argument("--steady-seconds", type=int, default=60)
    parser.add_argument("--steady-devices", type=int, default=2_500)
    parser.add_argument("--burst-events", type=int, default=10_000)
    parser.add_argument("--burst-devices", type=int, default=1_000)
    parser.add_argument("--hot-window", type=int, default=5_000)
    parser.add_argument("--quiet-devices", type=int, default=1_000)
    parser.add_argument("--cost-events", type=int, default=1_000)
    parser.add_argument("--max-buffering-seconds", type=float, default=2.0)
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-state", action="store_true")
    parser.add_argument("--skip-looks", action="store_true")
    parser.add_argument("--look-devices", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "extra", nargs="*", help="more woopra-pipeline flags (after --), e.g. --max_in_flight 64"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    print(f"work directory {work}  ({load()}, {os.cpu_count()} cores)")
    try:
        if not (args.skip_steady and args.skip_burst and args.skip_cost):
            with PubSubEmulator() as emulator:
                print(f"Pub/Sub emulator on {emulator.host_port}")
                if not (args.skip_steady and args.skip_burst):
                    throughput_run(work, emulator, args)
                if not args.skip_cost:
                    cost_run(work, emulator, args)
        if not args.skip_state:
            state_run(args)
        if not args.skip_looks:
            looks_run(args)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
