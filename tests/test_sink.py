"""WriteToWoopra against the loopback Woopra stub: order, retries, rate, exactly-once (SPEC §10)."""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, GlobalWindow, IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.stub import WoopraStub
from transforms.core.records import (
    DEAD_LETTER_TAG,
    HTTP_4XX,
    RETRIES_EXHAUSTED,
    STAGE_SEND,
    DeadLetter,
    WoopraRequest,
)
from transforms.delivery.sink import DeliverySettings, WriteToWoopra, _SendFn

# Enough attempts that even a 40% failure rate exhausts them with odds of about 1e-8.
FAST = DeliverySettings(
    max_attempts=20,
    max_in_flight=16,
    timeout_seconds=5.0,
    backoff_base_seconds=0.001,
    backoff_cap_seconds=0.01,
)


class Boom:
    """A parameter value that cannot be put on the wire: a bug, not an HTTP failure."""

    def __str__(self) -> str:
        raise ValueError("cannot render")


def request(base: str, device: str, seq: int, path: str = "/track/ce") -> WoopraRequest:
    message_id = f"{device}-{seq}"
    return WoopraRequest(
        message_id=message_id,
        endpoint=base + path,
        params={"project": "p", "cookie": device, "event": "e", "ce_seq": seq},
        event={"messageId": message_id, "type": "track", "anonymousId": device},
    )


def devices(base: str, count: int, per_device: int) -> list[tuple[str, list[WoopraRequest]]]:
    return [
        (f"dev{d}", [request(base, f"dev{d}", i) for i in range(per_device)]) for d in range(count)
    ]


def drive(
    settings: DeliverySettings, bundles: list[list[tuple[str, list[WoopraRequest]]]]
) -> tuple[list[WoopraRequest], list[DeadLetter]]:
    """Runs the sink's DoFn through its lifecycle by hand: bundles in order, one instance."""
    fn = _SendFn(settings)
    fn.setup()
    outputs: list[Any] = []
    try:
        for bundle in bundles:
            fn.start_bundle()
            for element in bundle:
                outputs.extend(fn.process(element, WindowedValue(element, 0, [GlobalWindow()])))
            outputs.extend(fn.finish_bundle())
    finally:
        fn.teardown()
    sent = [o.value for o in outputs if isinstance(o, WindowedValue)]
    dead = [o.value.value for o in outputs if isinstance(o, TaggedOutput)]
    assert all(o.tag == DEAD_LETTER_TAG for o in outputs if isinstance(o, TaggedOutput))
    return sent, dead


def seqs_by_cookie(records: list[dict[str, Any]], status: int | None) -> dict[str, list[int]]:
    """`ce_seq` of each cookie's records in record order; only those with `status` unless None."""
    by_cookie: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if status is None or record["status"] == status:
            by_cookie[record["params"]["cookie"]].append(int(record["params"]["ce_seq"]))
    return by_cookie


def assert_each_device_in_order(records: list[dict[str, Any]]) -> None:
    """Per cookie, the successful requests and also every attempt go out in sequence order.

    The stub records in answer order, and a device's next attempt starts only after the
    previous answer, so a request sent before its predecessor finished shows up as a step back.
    """
    for status in (200, None):
        for cookie, seqs in seqs_by_cookie(records, status).items():
            assert seqs == sorted(seqs), cookie


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_in_flight"):
        DeliverySettings(max_in_flight=0)
    with pytest.raises(ValueError, match="rate_limit"):
        DeliverySettings(rate_limit=-1)
    assert DeliverySettings().rate_limit_service is None


def test_requests_of_one_device_are_sent_in_order_under_faults():
    with WoopraStub(
        fail_rate=0.2, throttle_rate=0.1, reset_rate=0.05, retry_after=0, seed=3
    ) as stub:
        elements = devices(stub.url, 40, 10)
        sent, dead = drive(FAST, [elements])
        records = stub.records
    assert len(sent) == 400
    assert dead == []
    assert_each_device_in_order(records)
    assert {r["status"] for r in records} == {200, 503, 429, None}


def test_a_device_seen_again_waits_for_its_earlier_requests():
    with WoopraStub(latency_ms=20, fail_rate=0.3, seed=5) as stub:
        first = [(f"dev{d}", [request(stub.url, f"dev{d}", i) for i in range(3)]) for d in range(4)]
        again = [
            (f"dev{d}", [request(stub.url, f"dev{d}", i) for i in range(3, 6)]) for d in range(4)
        ]
        later = [
            (f"dev{d}", [request(stub.url, f"dev{d}", i) for i in range(6, 8)]) for d in range(4)
        ]
        sent, dead = drive(FAST, [first + again, later])
        records = stub.records
    assert (len(sent), dead) == (32, [])
    assert_each_device_in_order(records)
    assert all(seqs == list(range(8)) for seqs in seqs_by_cookie(records, 200).values())


def test_400_is_dead_lettered_after_one_attempt():
    with WoopraStub(reject_rate=1.0) as stub:
        elements = devices(stub.url, 5, 4)
        sent, dead = drive(FAST, [elements])
        records = stub.records
    assert sent == []
    assert len(records) == 20
    originals = {r.message_id: r.event for _, requests in elements for r in requests}
    assert sorted(d.message_id for d in dead) == sorted(originals)
    for letter in dead:
        assert (letter.stage, letter.reason, letter.status, letter.attempts) == (
            STAGE_SEND,
            HTTP_4XX,
            400,
            1,
        )
        assert letter.event == originals[letter.message_id]
        assert letter.detail == "HTTP 400"


def test_retryable_errors_are_retried_until_success():
    with WoopraStub(fail_rate=0.3, reset_rate=0.1, seed=11) as stub:
        sent, dead = drive(FAST, [devices(stub.url, 10, 5)])
        statuses = Counter(r["status"] for r in stub.records)
    assert (len(sent), dead) == (50, [])
    assert statuses[200] == 50
    assert statuses[503] > 0
    assert statuses[None] > 0


def test_retries_exhausted_after_max_attempts():
    settings = DeliverySettings(max_attempts=3, backoff_base_seconds=0.001)
    with WoopraStub(fail_rate=1.0) as stub:
        sent, dead = drive(settings, [devices(stub.url, 4, 2)])
        records = stub.records
    assert sent == []
    assert len(records) == 8 * 3
    assert {(d.reason, d.status, d.attempts) for d in dead} == {(RETRIES_EXHAUSTED, 503, 3)}
    assert len(dead) == 8


def test_retry_after_is_honoured():
    with WoopraStub(throttle_rate=0.3, retry_after=1, seed=2) as stub:
        sent, dead = drive(FAST, [devices(stub.url, 3, 3)])
        records = stub.records
    assert (len(sent), dead) == (9, [])
    by_message: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["ts"]):
        by_message[record["params"]["cookie"], record["params"]["ce_seq"]].append(record)
    gaps = [
        attempts[i + 1]["ts"] - attempt["ts"]
        for attempts in by_message.values()
        for i, attempt in enumerate(attempts[:-1])
        if attempt["status"] == 429
    ]
    assert gaps
    assert min(gaps) >= 1.0


def test_rate_cap_holds():
    settings = DeliverySettings(rate_limit=50, max_in_flight=16)
    with WoopraStub() as stub:
        started = time.time()
        sent, dead = drive(settings, [devices(stub.url, 30, 5)])
        arrivals = sorted(r["ts"] for r in stub.records)
    assert (len(sent), dead) == (150, [])
    most_in_a_second = max(sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals)
    assert most_in_a_second <= 53
    # And the cap is used, not undershot: 150 requests at 50/s take about 3 s.
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) >= 40
    assert time.time() - started < 5


def test_every_request_is_delivered_or_dead_lettered_exactly_once():
    settings = DeliverySettings(max_attempts=2, backoff_base_seconds=0.001)
    with WoopraStub(
        fail_rate=0.3, throttle_rate=0.1, reset_rate=0.05, reject_rate=0.05, retry_after=0, seed=9
    ) as stub:
        elements = devices(stub.url, 50, 4)
        sent, dead = drive(settings, [elements])
    expected = sorted(r.message_id for _, requests in elements for r in requests)
    assert sorted([r.message_id for r in sent] + [d.message_id for d in dead]) == expected
    assert {d.reason for d in dead} == {HTTP_4XX, RETRIES_EXHAUSTED}


def test_no_request_is_delivered_twice_without_faults():
    with WoopraStub() as stub:
        elements = devices(stub.url, 20, 5)
        sent, dead = drive(FAST, [elements])
        records = stub.records
    assert (len(sent), dead) == (100, [])
    assert len(records) == 100
    assert all(
        n == 1
        for n in Counter((r["params"]["cookie"], r["params"]["ce_seq"]) for r in records).values()
    )


def test_a_bug_while_sending_dead_letters_that_request_and_the_device_goes_on():
    with WoopraStub() as stub:
        broken = WoopraRequest("dev0-1", stub.url + "/track/ce", {"cookie": "dev0", "x": Boom()})
        element = ("dev0", [request(stub.url, "dev0", 0), broken, request(stub.url, "dev0", 2)])
        sent, dead = drive(FAST, [[element]])
        records = stub.records
    assert [r.message_id for r in sent] == ["dev0-0", "dev0-2"]
    assert [(d.message_id, d.reason, d.detail) for d in dead] == [
        ("dev0-1", RETRIES_EXHAUSTED, "internal error: ValueError")
    ]
    assert len(records) == 2


def test_process_blocks_while_too_many_device_lists_wait():
    settings = DeliverySettings(max_in_flight=1)
    with WoopraStub(latency_ms=40) as stub:
        elements = devices(stub.url, 12, 1)
        fn = _SendFn(settings)
        fn.setup()
        try:
            fn.start_bundle()
            started = time.monotonic()
            early = []
            for element in elements:
                early.extend(fn.process(element, WindowedValue(element, 0, [GlobalWindow()])))
            # 12 lists, at most 4 waiting: process() had to wait for about 7 of them.
            assert time.monotonic() - started >= 7 * 0.04
            assert early  # and emitted what had finished meanwhile
            rest = list(fn.finish_bundle())
        finally:
            fn.teardown()
    assert len(early) + len(rest) == 12


def test_worker_shares_one_sender_across_dofn_instances():
    fn = _SendFn(DeliverySettings(rate_limit=10))
    copies = [pickle.loads(pickle.dumps(fn)) for _ in range(2)]
    for copy in copies:
        copy.setup()
    try:
        assert copies[0]._sender is copies[1]._sender
        assert copies[0]._sender.throttle is copies[1]._sender.throttle
        other = _SendFn(DeliverySettings(rate_limit=10))
        other.setup()
        assert other._sender is not copies[0]._sender
        other.teardown()
    finally:
        for copy in copies:
            copy.teardown()


def test_spec_10_bundles_running_at_once_share_the_lanes_and_keep_a_device_in_order():
    """Two DoFn copies (two runner threads) send the same device: one lane, in queue order;
    each bundle emits and waits for its own lists only."""
    fn = _SendFn(DeliverySettings(max_in_flight=4))
    first, second = (pickle.loads(pickle.dumps(fn)) for _ in range(2))
    with WoopraStub(latency_ms=30) as stub:
        early = [request(stub.url, "dev0", i) for i in range(5)]
        late = [request(stub.url, "dev0", i) for i in range(5, 10)]
        other = [request(stub.url, "dev1", 0)]
        outputs: dict[str, list[Any]] = {"first": [], "second": []}
        for copy in (first, second):
            copy.setup()
            copy.start_bundle()
        try:
            for name, copy, elements in (
                ("first", first, [("dev0", early)]),
                ("second", second, [("dev0", late), ("dev1", other)]),
            ):
                for element in elements:
                    window = WindowedValue(element, 0, [GlobalWindow()])
                    outputs[name].extend(copy.process(element, window))
            finishing = [
                threading.Thread(target=lambda n=n, c=c: outputs[n].extend(c.finish_bundle()))
                for n, c in (("first", first), ("second", second))
            ]
            for thread in finishing:
                thread.start()
            for thread in finishing:
                thread.join(30)
        finally:
            first.teardown()
            second.teardown()
        records = stub.records
    assert seqs_by_cookie(records, 200)["dev0"] == list(range(10))
    sent = {name: sorted(o.value.message_id for o in out) for name, out in outputs.items()}
    assert sent == {
        "first": sorted(r.message_id for r in early),
        "second": sorted(r.message_id for r in late + other),
    }


def _dead_summary(letter: DeadLetter) -> tuple[str | None, str, int | None, int]:
    return letter.message_id, letter.reason, letter.status, letter.attempts


def test_runs_in_a_beam_pipeline_with_tagged_outputs_and_metrics():
    with WoopraStub(fail_rate=0.2, seed=4) as stub:
        elements = devices(stub.url, 6, 3)
        elements.append(("lost", [request(stub.url, "lost", 0, path="/track/nowhere")]))
        delivered = [r for key, requests in elements if key != "lost" for r in requests]

        pipeline = beam.Pipeline(runner="FnApiRunner")
        result = (
            pipeline
            | "Create" >> beam.Create(elements)
            | "Timestamp" >> beam.Map(lambda e: beam.window.TimestampedValue(e, 90))
            | "Window" >> beam.WindowInto(FixedWindows(60))
            | "Write" >> WriteToWoopra(FAST)
        )
        assert_that(result.sent, equal_to(delivered), label="CheckSent")
        assert_that(
            result[DEAD_LETTER_TAG] | beam.Map(_dead_summary),
            equal_to([("lost-0", HTTP_4XX, 404, 1)]),
            label="CheckDead",
        )
        window = IntervalWindow(60, 120)
        assert_that(
            result.sent | "Windowing" >> beam.ParDo(_Windowing()),
            equal_to([(Timestamp(90), (window,))] * len(delivered)),
            label="CheckWindows",
        )
        run = pipeline.run()
        run.wait_until_finish()

    counters = run.metrics().query(MetricsFilter().with_name("sent"))["counters"]
    assert sum(c.committed for c in counters) == len(delivered)
    failures = run.metrics().query(MetricsFilter().with_name("send_failures"))["counters"]
    assert sum(c.committed for c in failures) == 1
    latency = run.metrics().query(MetricsFilter().with_name("request_latency_ms"))
    assert sum(d.committed.count for d in latency["distributions"]) >= len(delivered) + 1


class _Windowing(beam.DoFn):
    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        yield timestamp, (window,)


# Outputs of the in-process FnApiRunner, gathered by module-level functions (pickled by name).
_COLLECTED: dict[str, list[Any]] = defaultdict(list)


def _collect_sent(sent: WoopraRequest) -> None:
    _COLLECTED["sent"].append(sent.message_id)


def _collect_dead(letter: DeadLetter) -> None:
    _COLLECTED["dead"].append(letter)


@pytest.mark.slow
def test_acceptance_5000_events_over_500_devices_with_faults():
    settings = DeliverySettings(
        max_attempts=10, max_in_flight=32, backoff_base_seconds=0.001, backoff_cap_seconds=0.01
    )
    with WoopraStub(
        fail_rate=0.1, throttle_rate=0.05, reset_rate=0.02, reject_rate=0.01, retry_after=0, seed=7
    ) as stub:
        elements = devices(stub.url, 500, 10)
        pipeline = beam.Pipeline(runner="FnApiRunner")
        result = pipeline | beam.Create(elements) | WriteToWoopra(settings)
        _ = result.sent | "Sent" >> beam.Map(_collect_sent)
        _ = result[DEAD_LETTER_TAG] | "Dead" >> beam.Map(_collect_dead)
        run = pipeline.run()
        run.wait_until_finish()
        records = stub.records

    sent, dead = _COLLECTED.pop("sent", []), _COLLECTED.pop("dead", [])
    assert len(sent) + len(dead) == 5000
    assert len(set(sent) | {d.message_id for d in dead}) == 5000
    rejected = {
        f"{r['params']['cookie']}-{r['params']['ce_seq']}" for r in records if r["status"] == 400
    }
    assert rejected
    assert rejected == {d.message_id for d in dead if d.reason == HTTP_4XX}
    delivered_times = Counter(
        (r["params"]["cookie"], r["params"]["ce_seq"]) for r in records if r["status"] == 200
    )
    assert sum(1 for n in delivered_times.values() if n > 1) <= 5
    assert_each_device_in_order(records)
    counters = run.metrics().query(MetricsFilter().with_name("sent"))["counters"]
    assert sum(c.committed for c in counters) == len(sent)
