"""Smoke test for the Pub/Sub emulator fixtures in tests/pubsub_emulator.py."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineState

if TYPE_CHECKING:
    from tests.pubsub_emulator import PubSubEmulator, PubSubFactory, PubSubPair

# Registers the fixtures of tests/pubsub_emulator.py for this module. A no-op when
# tests/conftest.py already has ``pytest_plugins = ["tests.pubsub_emulator"]``. The
# module is deliberately not imported at runtime here, so pytest can still
# assertion-rewrite it when it loads it as a plugin.
pytest_plugins = ["tests.pubsub_emulator"]

pytestmark = pytest.mark.emulator


def test_publish_and_pull_roundtrip(
    pubsub_emulator: PubSubEmulator, pubsub_factory: PubSubFactory, pubsub_pair: PubSubPair
) -> None:
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator.host_port
    assert pubsub_emulator.host_port.startswith("127.0.0.1:")

    payloads = [b'{"event":"pageview","n":%d}' % i for i in range(5)]
    ids = pubsub_factory.publish(pubsub_pair.topic, payloads, attributes={"source": "test"})
    assert len(ids) == len(payloads)

    messages = pubsub_factory.pull(pubsub_pair.subscription, max_messages=5, timeout=15)
    assert sorted(m.data for m in messages) == sorted(payloads)
    assert all(dict(m.attributes) == {"source": "test"} for m in messages)

    # Messages were acknowledged by pull(): nothing is redelivered.
    assert pubsub_factory.pull(pubsub_pair.subscription, max_messages=1, timeout=0.5) == []


def test_high_level_client_uses_emulator_host(
    pubsub_emulator: PubSubEmulator, pubsub_factory: PubSubFactory
) -> None:
    # google.cloud.pubsub clients (the ones Beam creates) honour PUBSUB_EMULATOR_HOST.
    from google.cloud import pubsub_v1

    pair = pubsub_factory.pair("hl")
    publisher = pubsub_v1.PublisherClient()
    try:
        futures = [publisher.publish(pair.topic_path, b"m%d" % i, kind="hl") for i in range(3)]
        for future in futures:
            future.result(timeout=30)
    finally:
        publisher.stop()

    messages = pubsub_emulator.pull(pair.project, pair.subscription, max_messages=3, timeout=15)
    assert sorted(m.data for m in messages) == [b"m0", b"m1", b"m2"]
    assert {m.attributes["kind"] for m in messages} == {"hl"}


class _Shout(beam.DoFn):
    """Module-level so it is pickled by reference (closures are pickled by value)."""

    def __init__(self) -> None:
        self.seen = Metrics.counter("pubsub_emulator_test", "seen")

    def process(self, data: bytes):
        self.seen.inc()
        yield data.upper()


@pytest.mark.slow
def test_streaming_pipeline_reads_and_writes(
    pubsub_factory: PubSubFactory, direct_streaming
) -> None:
    from tests.pubsub_emulator import run_streaming

    source, sink = pubsub_factory.pair("in"), pubsub_factory.pair("out")
    pipeline = beam.Pipeline(options=direct_streaming())
    _ = (
        pipeline
        | beam.io.ReadFromPubSub(subscription=source.subscription_path)
        | beam.ParDo(_Shout())
        | beam.io.WriteToPubSub(sink.topic_path)
    )
    with run_streaming(pipeline) as result:
        delivered = []
        for round_ in range(3):  # separate rounds -> separate bundles
            pubsub_factory.publish(source.topic, [b"r%d-a" % round_, b"r%d-b" % round_])
            delivered += pubsub_factory.pull(sink.subscription, max_messages=2, timeout=30)
        assert sorted(m.data for m in delivered) == sorted(
            b"R%d-%s" % (r, s) for r in range(3) for s in (b"A", b"B")
        )
        counters = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
        assert [c.committed for c in counters] == [6]
        started = time.monotonic()
    assert result.state == PipelineState.CANCELLED
    assert time.monotonic() - started < 10  # ~0.5 s with fast_pubsub_pulls, ~29 s without
