"""Pub/Sub reads of the local streaming runner: short, wide pulls read straight from the
protobuf messages, the subscription worked out once, and a read that a drain ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.direct.util import TransformResult
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as google_exceptions
from google.pubsub_v1.types import PullResponse

from pipeline.local_runner.run import LocalStreamingRun

# Messages per local Pub/Sub pull, i.e. per bundle: about a second of a busy stream, large
# enough that the per-bundle cost of the stages is small beside the per-event cost.
DEFAULT_PULL_MAX_MESSAGES = 1000


@contextlib.contextmanager
def short_pubsub_pulls(
    pull_timeout: float = 1.5,
    max_messages: int = DEFAULT_PULL_MAX_MESSAGES,
    idle_wait: float = 0.1,
) -> Iterator[None]:
    """Make the DirectRunner's Pub/Sub pulls short and wide while the block is active.

    The runner reads Pub/Sub with ``pull(max_messages=10, timeout=30)`` on its single
    worker thread, and the emulator holds an idle pull until ~1 s before the
    deadline. So while the subscription is idle nothing else runs for ~29 s:
    processing-time timers, the watermark (event-time timers), GroupIntoBatches
    flushes and ``cancel()`` all wait for the pull. And ten messages a pull make a burst
    trickle in over many seconds, a bundle each, so a device's events published together
    reach its buffer (transforms/identity.py) after it was sent. Here a pull returns at
    once, and an empty one waits ``idle_wait`` before the runner asks again;
    ``pull_timeout`` bounds each call. One pull returns at most 100 messages from the
    emulator (1,000 from Pub/Sub), so more pulls fill the bundle up to ``max_messages``
    while messages are there.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"]
    original_read = evaluator.__dict__["_read_from_pubsub"]

    class _ShortPullClient:
        def __init__(self, client) -> None:
            self._client = client

        def pull(self, subscription: str, **kwargs) -> PullResponse:
            response = PullResponse.pb()()
            response.received_messages.extend(self.pull_raw(subscription))
            return PullResponse.wrap(response)

        def pull_raw(self, subscription: str) -> list:
            """Up to `max_messages` received messages as plain protobuf messages."""
            received: list = []
            while len(received) < max_messages:
                more = self._pull(subscription, max_messages - len(received))
                if not more:
                    break
                received += more
            if not received:
                time.sleep(idle_wait)
            return received

        def _pull(self, subscription: str, max_messages: int) -> list:
            request = {
                "subscription": subscription,
                "max_messages": max_messages,
                "return_immediately": True,
            }
            try:
                response = self._client.pull(request=request, timeout=pull_timeout)
            except google_exceptions.DeadlineExceeded:
                return []
            return list(PullResponse.pb(response).received_messages)

        def __getattr__(self, name: str):
            return getattr(self._client, name)

    def _get_subscriber_client(cls, transform):
        return _ShortPullClient(original.__func__(cls, transform))

    def _read_from_pubsub(self, timestamp_attribute):
        """The payloads and publish times, read from the protobuf messages directly.

        The runner keeps only these unless the read asks for attributes or a timestamp
        attribute, which go the runner's own way.
        """
        if timestamp_attribute or self.source.with_attributes:
            return original_read(self, timestamp_attribute)
        client = self._get_subscriber_client(self._applied_ptransform)
        received = client.pull_raw(self._sub_name)
        if received:
            ack_ids = [message.ack_id for message in received]
            client.acknowledge(subscription=self._sub_name, ack_ids=ack_ids)
        return [
            (publish_timestamp(message.message), PubsubMessage(message.message.data, None))
            for message in received
        ]

    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    evaluator._read_from_pubsub = _read_from_pubsub
    try:
        yield
    finally:
        evaluator._get_subscriber_client = original
        evaluator._read_from_pubsub = original_read


@contextlib.contextmanager
def subscriptions_found_once() -> Iterator[None]:
    """Work out a Pub/Sub read's subscription once a run, not for every pull.

    The runner makes a new read evaluator for every pull, and each one looks its project up
    with `pipeline_options.view_as(GoogleCloudOptions)`, which parses the run's flags again:
    about 1.7 ms a pull, a third of an idle run's CPU (it pulls ten times a second). The
    first evaluator of a read does it the runner's way; later ones take its subscription.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["__init__"]
    subscriptions: dict[object, str] = {}

    def init_once_looked_up(
        self, evaluation_context, applied_ptransform, input_bundle, side_inputs
    ) -> None:
        subscription = subscriptions.get(applied_ptransform)
        if subscription is None:
            original(self, evaluation_context, applied_ptransform, input_bundle, side_inputs)
            subscriptions[applied_ptransform] = self._sub_name
            return
        transform_evaluator._TransformEvaluator.__init__(
            self, evaluation_context, applied_ptransform, input_bundle, side_inputs
        )
        self.source = applied_ptransform.transform._source
        self._sub_name = subscription

    evaluator.__init__ = init_once_looked_up
    try:
        yield
    finally:
        evaluator.__init__ = original


def publish_timestamp(message) -> Timestamp:
    """A protobuf PubsubMessage's publish time, to the microsecond as the runner takes it."""
    publish_time = message.publish_time
    return Timestamp(micros=publish_time.seconds * 1_000_000 + publish_time.nanos // 1000)


@contextlib.contextmanager
def drainable_pubsub_reads(run: LocalStreamingRun) -> Iterator[None]:
    """Once `run.drain()` is called, the Pub/Sub read pulls no more and reports itself done.

    The read normally reschedules itself with a watermark hold at the current time; a read
    that returns no unprocessed work and no hold lets its watermark reach the end of time,
    which is how the runner finishes a bounded source.
    """
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["finish_bundle"]

    def finish_bundle(self) -> TransformResult:
        if run.draining:
            return TransformResult(self, [], [], None, {None: None})
        return original(self)

    evaluator.finish_bundle = finish_bundle
    try:
        yield
    finally:
        evaluator.finish_bundle = original
