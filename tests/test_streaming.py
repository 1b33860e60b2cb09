"""Streaming from the Pub/Sub emulator to woopra-stub, end to end (SPEC §4, §10)."""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.runner import PipelineState

from pipeline.builder import build_pipeline
from pipeline.local_runner import local_streaming_fixes
from pipeline.report import build_report, counters_of
from pipeline.stub import WoopraStub
from tests.pubsub_emulator import PubSubFactory, run_streaming

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

DEVICES = 50
TRACKS_PER_DEVICE = 9


def _events() -> list[dict]:
    """Per device an identify, then tracks without identity, in timestamp order."""
    events = []
    for device in range(DEVICES):
        events.append(
            {
                "type": "identify",
                "anonymousId": f"anon-{device}",
                "userId": f"user-{device}",
                "traits": {"email": f"user-{device}@example.com"},
                "messageId": f"{device}-00",
                "originalTimestamp": f"2024-06-01T10:00:{device:02d}Z",
            }
        )
        events.extend(
            {
                "type": "track",
                "event": f"step {n}",
                "anonymousId": f"anon-{device}",
                "messageId": f"{device}-{n:02d}",
                "originalTimestamp": f"2024-06-01T10:{n:02d}:{device:02d}Z",
            }
            for n in range(1, TRACKS_PER_DEVICE + 1)
        )
    return events


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_spec_4_pubsub_events_reach_woopra_once_stitched_and_in_order(
    pubsub_factory: PubSubFactory, tmp_path
):
    events_pair = pubsub_factory.pair("events")
    dead_topic = pubsub_factory.topic("dead")
    dead_subscription = pubsub_factory.subscription(dead_topic, "dead-sub")
    events = _events()
    repeats = random.Random(5).sample(events, 50)
    malformed = [b"not json at all", b"\xff\xfe not utf-8", b'{"x": "' + b"y" * 40_000 + b'"}']

    with WoopraStub() as stub:
        options = PipelineOptions(
            [
                "--input_subscription", events_pair.subscription_path,
                "--project_name", "stream.example.com",
                "--woopra_base_url", stub.url,
                "--rate_limit", "0",
                "--max_buffering_seconds", "1",
                "--dead_letter_topic", f"projects/{pubsub_factory.project}/topics/{dead_topic}",
                "--output", str(tmp_path),
            ]
        )  # fmt: skip
        with local_streaming_fixes():
            result = build_pipeline(options).run()
            try:
                to_publish = [json.dumps(e).encode() for e in events]
                pubsub_factory.publish(events_pair.topic, to_publish[: len(events) // 2])
                pubsub_factory.publish(events_pair.topic, malformed)
                pubsub_factory.publish(events_pair.topic, to_publish[len(events) // 2 :])
                pubsub_factory.publish(events_pair.topic, [json.dumps(e).encode() for e in repeats])
                assert _wait_for(lambda: len(stub.records) >= len(events), timeout=120)
                time.sleep(3)  # long enough for any duplicate to follow
                dead_letters = pubsub_factory.pull(dead_subscription, max_messages=3, timeout=30)
                report = build_report(counters_of(result.metrics()), elapsed_seconds=1)
            finally:
                result.cancel()
        assert result.state == PipelineState.CANCELLED
        records = stub.records

    assert len(records) == len(events)
    assert all(record["status"] == 200 for record in records)
    sent = {(r["params"]["cookie"], r["params"]["timestamp"]) for r in records}
    assert len(sent) == len(events)  # each event once: no repeat got through
    by_device: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: r["ts"]):
        by_device.setdefault(record["params"]["cookie"], []).append(record["params"])
    assert len(by_device) == DEVICES
    for device in range(DEVICES):
        sent = by_device[f"anon-{device}"]
        assert [p["timestamp"] for p in sent] == sorted(p["timestamp"] for p in sent)
        assert len(sent) == 1 + TRACKS_PER_DEVICE
        assert {p["cv_id"] for p in sent} == {f"user-{device}"}
        assert {p["cv_email"] for p in sent} == {f"user-{device}@example.com"}

    reasons = sorted(json.loads(message.data)["reason"] for message in dead_letters)
    assert reasons == ["invalid_json", "invalid_json", "too_large"]
    published = len(events) + len(malformed) + len(repeats)
    assert (report["input"], report["sent"], report["dead_lettered"]) == (published, 500, 3)
    assert report["filtered"] == len(repeats)  # repeats of a messageId count as filtered
    assert report["balanced"]


def test_streaming_cli_logs_counts_at_an_interval_and_stops_on_sigterm(
    pubsub_factory: PubSubFactory, tmp_path
):
    pair = pubsub_factory.pair("cli")
    events = [
        {"type": "track", "anonymousId": f"a{n % 7}", "messageId": f"m{n}", "timestamp": n}
        for n in range(40)
    ]
    with WoopraStub() as stub:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "pipeline",
                "--input_subscription", pair.subscription_path,
                "--project_name", "p",
                "--woopra_base_url", stub.url,
                "--output", str(tmp_path),
                "--report_interval_seconds", "1",
                "--max_buffering_seconds", "0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            pubsub_factory.publish(pair.topic, [json.dumps(e).encode() for e in events])
            pubsub_factory.publish(pair.topic, [b"{broken"])
            assert _wait_for(lambda: len(stub.records) >= len(events), timeout=90)
            time.sleep(2.5)  # at least two more report intervals
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, output  # SPEC §16: 143
    progress = [line for line in output.splitlines() if "woopra: input=" in line]
    assert len(progress) >= 2
    assert "input=41 sent=40 filtered=0 dead_lettered=1 (invalid_json=1)" in progress[-1]
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["input"], report["sent"], report["dead_lettered"]) == (41, 40, 1)
    assert "counts add up" in output


def test_spec_10_sigterm_mid_burst_drains_what_was_pulled_and_pulls_no_more(
    pubsub_factory: PubSubFactory, tmp_path
):
    """The local runner acknowledges what it pulls, so a stop must deliver all of it:
    published = sent + dead-lettered + still in the subscription."""
    pair = pubsub_factory.pair("drain")
    early = [
        {"type": "track", "anonymousId": f"a{n % 200}", "messageId": f"m{n}", "timestamp": n}
        for n in range(2000)
    ]
    late = [dict(event, messageId=f"late{n}") for n, event in enumerate(early[:500])]
    with WoopraStub(latency_ms=20) as stub:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "pipeline",
                "--input_subscription", pair.subscription_path,
                "--project_name", "p",
                "--woopra_base_url", stub.url,
                "--rate_limit", "0",
                "--max_in_flight", "4",
                "--local_pull_max_messages", "300",
                "--max_buffering_seconds", "0.5",
                "--output", str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            for start in range(0, len(early), 1000):  # Pub/Sub takes 1,000 per request
                chunk = early[start : start + 1000]
                pubsub_factory.publish(pair.topic, [json.dumps(e).encode() for e in chunk])
            assert _wait_for(lambda: len(stub.records) >= 100, timeout=90)
            process.send_signal(signal.SIGTERM)
            time.sleep(2)  # a pull under way when the signal came has returned by now
            pubsub_factory.publish(pair.topic, [json.dumps(e).encode() for e in late])
            output, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        records = stub.records
    remaining = pubsub_factory.pull(pair.subscription, max_messages=3000, timeout=10)

    assert process.returncode == 128 + signal.SIGTERM, output  # SPEC §16: 143
    assert "draining" in output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["balanced"]
    assert len(remaining) >= len(late)  # nothing was pulled after the stop
    assert report["input"] + len(remaining) == len(early) + len(late)
    assert report["sent"] + report["dead_lettered"] == report["input"]
    assert report["sent"] == len(records) == len({r["params"]["timestamp"] for r in records})


def test_spec_4_batch_published_late_is_still_sent_in_timestamp_order(
    pubsub_factory: PubSubFactory, tmp_path
):
    """Each device's later events first, its earlier ones 1.5 s after: none out of order.

    The emulator hands each burst over in portions across up to ~1.5 s more (longer on a busy
    machine), so the quiet time given covers the delay and that.
    """
    pair = pubsub_factory.pair("late")
    events = _events()
    later = [e for e in events if e["messageId"].split("-")[1] >= "05"]
    earlier = [e for e in events if e["messageId"].split("-")[1] < "05"]
    with WoopraStub() as stub:
        options = PipelineOptions(
            [
                "--input_subscription", pair.subscription_path,
                "--project_name", "stream.example.com",
                "--woopra_base_url", stub.url,
                "--rate_limit", "0",
                "--max_buffering_seconds", "3",
                "--output", str(tmp_path),
            ]
        )  # fmt: skip
        with local_streaming_fixes():
            result = build_pipeline(options).run()
            try:
                pubsub_factory.publish(pair.topic, [json.dumps(e).encode() for e in later])
                time.sleep(1.5)
                pubsub_factory.publish(pair.topic, [json.dumps(e).encode() for e in earlier])
                assert _wait_for(lambda: len(stub.records) >= len(events), timeout=120)
            finally:
                result.cancel()
        records = stub.records

    assert len(records) == len(events)
    by_device: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: r["ts"]):
        by_device.setdefault(record["params"]["cookie"], []).append(record["params"]["timestamp"])
    violations = sum(1 for sent in by_device.values() for a, b in itertools.pairwise(sent) if b < a)
    assert violations == 0
    assert all(len(sent) == 1 + TRACKS_PER_DEVICE for sent in by_device.values())


def test_local_runner_pulls_and_flushes_while_the_sink_waits_for_woopra(
    pubsub_factory: PubSubFactory, tmp_path
):
    """An event published while Woopra is slow to answer is pulled and buffered meanwhile.

    With one executor thread the runner would pull it only once the first request was
    answered, and then wait out the buffering time: the second request would leave at least
    latency + buffering after the first. Pipelined, it is ready when the sink is free.
    """
    pair = pubsub_factory.pair("pipelined")
    latency, buffering = 3.0, 1.0

    def publish(device: str) -> None:
        event = {"type": "track", "anonymousId": device, "messageId": device, "timestamp": 1}
        pubsub_factory.publish(pair.topic, [json.dumps(event).encode()])

    with WoopraStub(latency_ms=latency * 1000) as stub:
        options = PipelineOptions(
            [
                "--input_subscription", pair.subscription_path,
                "--project_name", "p",
                "--woopra_base_url", stub.url,
                "--rate_limit", "0",
                "--max_buffering_seconds", str(buffering),
                "--output", str(tmp_path),
            ]
        )  # fmt: skip
        with local_streaming_fixes():
            result = build_pipeline(options).run()
            try:
                publish("first")
                assert _wait_for(lambda: stub.in_flight == 1, timeout=60)
                publish("second")
                assert _wait_for(lambda: len(stub.records) == 2, timeout=60)
            finally:
                result.cancel()
        arrived = {record["params"]["cookie"]: record["ts"] for record in stub.records}

    assert latency <= arrived["second"] - arrived["first"] < latency + buffering / 2


_READ: list[bytes] = []


def _record_read(payload: bytes) -> None:
    _READ.append(payload)


def test_local_runner_works_out_the_subscription_once_not_for_every_pull(
    pubsub_factory: PubSubFactory, direct_streaming, monkeypatch
):
    read = transform_evaluator._PubSubReadEvaluator
    patched_init = read.__dict__["__init__"]
    find_subscription = read.__dict__["get_subscription"].__func__
    pulls, lookups = [], []

    def counted_init(self, *args):
        pulls.append(1)
        patched_init(self, *args)

    def counted_lookup(cls, *args):
        lookups.append(1)
        return find_subscription(cls, *args)

    monkeypatch.setattr(read, "__init__", counted_init)
    monkeypatch.setattr(read, "get_subscription", classmethod(counted_lookup))
    pair = pubsub_factory.pair("once")
    pipeline = beam.Pipeline(options=direct_streaming())
    _ = (
        pipeline
        | beam.io.ReadFromPubSub(subscription=pair.subscription_path)
        | beam.Map(_record_read)
    )
    _READ.clear()
    with run_streaming(pipeline):
        for round_ in range(3):
            pubsub_factory.publish(pair.topic, [b"round-%d" % round_])
            assert _wait_for(lambda n=round_: len(_READ) > n, timeout=30)
    assert sorted(_READ) == [b"round-0", b"round-1", b"round-2"]
    assert len(pulls) >= 3  # an evaluator for every pull, empty ones too
    assert len(lookups) == 1  # without the fix: one for each of them
