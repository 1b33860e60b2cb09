"""ResolveIdentity: events grouped by device, in send order, with stitched identities (SPEC §4)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.core.duplicates import drop_duplicates
from transforms.core.event_bytes import event_from_bytes, event_to_bytes
from transforms.core.mapping import PreparedEvent
from transforms.core.records import METRICS_NAMESPACE
from transforms.delivery.ledger import Delivered, ledger_key
from transforms.device_records import DeviceRecord, split_by_kind
from transforms.identity_state import (
    DeviceIdentity,
    IdentityStateSettings,
    ReadIdentityState,
    WriteIdentityState,
)
from transforms.streaming_dedup import SEEN_LOG, SEEN_VERSION, seen_message_ids

COOKIE_KEY_PREFIX = "cookie:"


class PreparedEventCoder(beam.coders.Coder):
    """PreparedEvents through the shuffle as plain tuples: Beam's fast coder handles those
    natively, where a dataclass would fall back to pickle at twice the cost per event. The
    event object itself travels as compact JSON bytes (event_bytes), a fraction of the cost
    of Beam's coder walking it value by value."""

    _FIELDS = beam.coders.FastPrimitivesCoder()

    def encode(self, value: PreparedEvent) -> bytes:
        return self._FIELDS.encode(
            (
                event_to_bytes(value.event),
                value.event_type,
                value.project,
                value.message_id,
                value.timestamp_ms,
                value.cv_id,
                value.cv_email,
                value.cookie,
            )
        )

    def decode(self, encoded: bytes) -> PreparedEvent:
        event, *fields = self._FIELDS.decode(encoded)
        return PreparedEvent(event_from_bytes(event), *fields)

    def is_deterministic(self) -> bool:
        return False


beam.coders.registry.register_coder(PreparedEvent, PreparedEventCoder)


class Identity(NamedTuple):
    """A device's current cv_id and cv_email, each updated on its own."""

    cv_id: str | None = None
    cv_email: str | None = None


def in_send_order(events: Iterable[PreparedEvent]) -> list[PreparedEvent]:
    """Timestamp order, ties broken by messageId, events without a timestamp last."""
    return sorted(events, key=lambda event: event.send_order)


NO_IDENTITY = Identity()


def stitch(
    ordered: list[PreparedEvent], known: Identity = NO_IDENTITY
) -> tuple[list[PreparedEvent], Identity]:
    """Fill each event's missing cv_id / cv_email from the device's current identity.

    `ordered` is one device's events in send order; `known` is what earlier events of the
    device established (streaming). Events before the first carrier of a value get the
    first value seen. An event's own identifiers always win. Returns the events and the
    identity current after the last of them.
    """
    current = Identity(
        known.cv_id or next((e.cv_id for e in ordered if e.cv_id is not None), None),
        known.cv_email or next((e.cv_email for e in ordered if e.cv_email is not None), None),
    )
    stitched = []
    for event in ordered:
        current = Identity(event.cv_id or current.cv_id, event.cv_email or current.cv_email)
        if (event.cv_id, event.cv_email) != current:
            event = event.with_identity(current.cv_id, current.cv_email)
        stitched.append(event)
    return stitched, current


def resolve_device(
    device_key: str,
    events: Iterable[PreparedEvent],
    stitch_identity: bool,
    known: Identity = NO_IDENTITY,
) -> tuple[list[PreparedEvent], Identity]:
    """One device's events in send order, stitched (from `known` on) when it is a cookie.

    Returns the events and the device's identity after them.
    """
    ordered = in_send_order(events)
    if stitch_identity and device_key.startswith(COOKIE_KEY_PREFIX):
        return stitch(ordered, known)
    return ordered, known


def skip_delivered(ordered: list[PreparedEvent], delivered: set[str]) -> list[PreparedEvent]:
    """The events the ledger does not hold (SPEC §15), after stitching: identities stay as a
    full run gives them."""
    if not delivered:
        return ordered
    return [e for e in ordered if ledger_key(e.message_id, e.event) not in delivered]


ALREADY_DELIVERED = "already_delivered"


@dataclass(frozen=True)
class StreamingSettings:
    """How long a device's events wait to be sent together, and what it remembers."""

    max_buffering_seconds: float = 2.0
    max_buffered_events: int = 500
    max_buffering_wait_seconds: float = 30.0
    identity_ttl_seconds: float = 30 * 24 * 3600
    dedup_window_seconds: float = 24 * 3600


# An element that reaches the pipeline within this long of its timestamp is live: its device's
# quiet time counts from when it arrived. Older ones are a backlog, timed by their timestamps.
MAX_ARRIVAL_LAG_SECONDS = 60


def arrival_time(timestamp: Timestamp) -> Timestamp:
    """When a live element arrived (the clock now), else its own timestamp.

    Pub/Sub hands a burst of messages over in portions, seconds apart: counted from the
    publish time, a device's earlier events published a little late would arrive after its
    buffer was already sent. A backlog, and TestStream's clock, keep element time.
    """
    now = Timestamp.now()
    if Duration(0) <= now - timestamp < Duration(seconds=MAX_ARRIVAL_LAG_SECONDS):
        return now
    return timestamp


class _StreamingResolveFn(beam.DoFn):
    """Per device: drop repeated messageIds, buffer briefly, then order and stitch.

    Times are measured from the element timestamp (Pub/Sub publish time), so TestStream
    controls them and a backlog flushes at once. The buffering flush is a processing-time
    timer, `max_buffering_seconds` after the device's latest event (so a batch that arrives a
    little late still joins the others) but no later than `max_buffering_wait_seconds` after
    the first buffered one. The TTL of the device's identity and seen messageIds is an
    event-time timer, which, unlike a processing-time one, holds no watermark back for as
    long as it waits. The dedup window prunes old messageIds, which are kept so that a
    device costs per event what any other does however many it sent
    (transforms/streaming_dedup.py).
    Every flush clears the pending flush timers, so a quiet device keeps only its TTL timer.
    """

    BUFFER = BagStateSpec("buffer", PreparedEventCoder())
    BUFFERED = ReadModifyWriteStateSpec("buffered", VarIntCoder())
    # When the buffer is due to flush and the latest it may, in micros (element time).
    FLUSH_AT = ReadModifyWriteStateSpec("flush_at", TupleCoder((VarIntCoder(), VarIntCoder())))
    IDENTITY = ReadModifyWriteStateSpec("identity", PickleCoder())
    SEEN_LOG = SEEN_LOG
    SEEN_VERSION = SEEN_VERSION
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)
    # Fires when the input ends (drain, a bounded test stream) so no buffered event is lost.
    DRAIN = TimerSpec("drain", TimeDomain.WATERMARK)

    def __init__(self, stitch_identity: bool, settings: StreamingSettings) -> None:
        self.stitch_identity = stitch_identity
        self.settings = settings
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "filtered_duplicate")
        self.filtered = Metrics.counter(METRICS_NAMESPACE, "filtered")
        self.expired = Metrics.counter(METRICS_NAMESPACE, "device_state_expired")
        # Names this stage's memory of seen messageIds in each worker process.
        self.stage_id = uuid.uuid4().hex

    def process(
        self,
        element: tuple[str, PreparedEvent],
        now=beam.DoFn.TimestampParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        buffered=beam.DoFn.StateParam(BUFFERED),
        identity=beam.DoFn.StateParam(IDENTITY),
        seen_log=beam.DoFn.StateParam(SEEN_LOG),
        seen_version=beam.DoFn.StateParam(SEEN_VERSION),
        flush=beam.DoFn.TimerParam(FLUSH),
        expire=beam.DoFn.TimerParam(EXPIRE),
        drain=beam.DoFn.TimerParam(DRAIN),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
    ):
        device, event = element
        if self._is_duplicate(device, event.message_id, now, seen_log, seen_version):
            self.duplicates.inc()
            self.filtered.inc()
            return
        buffer.add(event)
        count = (buffered.read() or 0) + 1
        buffered.write(count)
        expire.set(now + Duration(seconds=self.settings.identity_ttl_seconds))
        quiet = Duration(seconds=self.settings.max_buffering_seconds)
        quiet_until = (arrival_time(now) + quiet).micros
        if count == 1:
            wait = Duration(seconds=self.settings.max_buffering_wait_seconds)
            due, latest = quiet_until, (now + wait).micros
            drain.set(GlobalWindow().max_timestamp())
        else:
            due, latest = flush_at.read()
        due = min(max(due, quiet_until), latest)
        flush_at.write((due, latest))
        flush.set(Timestamp(micros=due))
        if count >= self.settings.max_buffered_events:
            yield from self._flush(device, buffer, buffered, identity, (flush, drain), flush_at)

    @on_timer(FLUSH)
    @on_timer(DRAIN)
    def on_flush(
        self,
        key=beam.DoFn.KeyParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        buffered=beam.DoFn.StateParam(BUFFERED),
        identity=beam.DoFn.StateParam(IDENTITY),
        flush=beam.DoFn.TimerParam(FLUSH),
        drain=beam.DoFn.TimerParam(DRAIN),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
    ):
        yield from self._flush(key, buffer, buffered, identity, (flush, drain), flush_at)

    @on_timer(EXPIRE)
    def on_expire(
        self,
        key=beam.DoFn.KeyParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        buffered=beam.DoFn.StateParam(BUFFERED),
        identity=beam.DoFn.StateParam(IDENTITY),
        seen_log=beam.DoFn.StateParam(SEEN_LOG),
        seen_version=beam.DoFn.StateParam(SEEN_VERSION),
        flush=beam.DoFn.TimerParam(FLUSH),
        drain=beam.DoFn.TimerParam(DRAIN),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
    ):
        yield from self._flush(key, buffer, buffered, identity, (flush, drain), flush_at)
        identity.clear()
        seen_log.clear()
        seen_version.clear()
        seen_message_ids(self.stage_id, self.settings.dedup_window_seconds).forget(key)
        self.expired.inc()

    def _is_duplicate(
        self, device: str, message_id: str | None, now: Timestamp, seen_log, seen_version
    ) -> bool:
        """Whether the messageId came before within the dedup window; remembers it if not."""
        if message_id is None:
            return False
        seen = seen_message_ids(self.stage_id, self.settings.dedup_window_seconds)
        return seen.seen_before(device, message_id, now.micros, seen_log, seen_version)

    def _flush(self, device: str, buffer, buffered, identity, timers, flush_at):
        events = list(buffer.read())
        buffer.clear()
        buffered.clear()
        flush_at.clear()
        for timer in timers:
            timer.clear()
        if not events:
            return
        known = identity.read() or NO_IDENTITY
        ordered, current = resolve_device(device, events, self.stitch_identity, known)
        if current != known:
            identity.write(current)
        yield device, ordered


# Tagged outputs of the batch resolution when identity state is kept (SPEC §13).
IDENTITY_STATE_TAG = "identity_state"
NEWEST_EVENT_TAG = "newest_event"


class _BatchResolveFn(beam.DoFn):
    """Per device, over the whole input: drop duplicates, then order and stitch from what
    earlier runs knew; with identity state, also what the next run is to know."""

    def __init__(self, stitch_identity: bool, keep_state: bool) -> None:
        self.stitch_identity = stitch_identity
        self.keep_state = keep_state
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "filtered_duplicate")
        self.filtered = Metrics.counter(METRICS_NAMESPACE, "filtered")
        self.already_delivered = Metrics.counter(METRICS_NAMESPACE, "filtered_already_delivered")

    def process(self, element: tuple[str, Iterable[object]]):
        device, grouped = element
        events, others = split_by_kind(grouped)
        events, dropped = drop_duplicates(events)
        if dropped:
            self.duplicates.inc(dropped)
            self.filtered.inc(dropped)
        previous = next(iter(others.get(DeviceIdentity, ())), None)
        known = NO_IDENTITY if previous is None else Identity(previous.cv_id, previous.cv_email)
        ordered, current = resolve_device(device, events, self.stitch_identity, known)
        # The ledger's entries (SPEC §15): left out after stitching; the state sees them all.
        delivered = {entry.key for entry in others.get(Delivered, ())}
        kept = skip_delivered(ordered, delivered)
        if len(kept) < len(ordered):
            skipped = len(ordered) - len(kept)
            self.filtered.inc(skipped)
            self.already_delivered.inc(skipped)
            yield beam.pvalue.TaggedOutput(ALREADY_DELIVERED, skipped)
        if kept:
            yield device, kept
        if self.keep_state:
            yield from self._state_of(device, ordered, current, previous)

    def _state_of(self, device, ordered, current: Identity, previous: DeviceIdentity | None):
        newest = max((e.timestamp_ms for e in ordered if e.timestamp_ms is not None), default=None)
        if newest is not None:
            yield beam.pvalue.TaggedOutput(NEWEST_EVENT_TAG, newest)
        if not device.startswith(COOKIE_KEY_PREFIX) or current == NO_IDENTITY:
            return
        times = [t for t in (newest, previous and previous.last_event_ms) if t is not None]
        cookie = device[len(COOKIE_KEY_PREFIX) :]
        identity = DeviceIdentity(cookie, current.cv_id, current.cv_email, max(times, default=None))
        yield beam.pvalue.TaggedOutput(IDENTITY_STATE_TAG, identity)


class ResolveIdentity(beam.PTransform):
    """PreparedEvents to (device key, [PreparedEvent]) in send order, in one keyed shuffle.

    Batch: one GroupByKey by device serves dropping duplicate messageIds (SPEC §13),
    stitching over the whole input, ordering and the sink's per-device sequencing; with
    identity state, what earlier runs knew of each device joins the same GroupByKey as
    records of another kind (DeviceRecord), and what this run knows leaves it for the next.
    Streaming: keyed state does the same per buffered batch, remembering each device's
    identity for later events and dropping repeats.
    """

    def __init__(
        self,
        stitch_identity: bool = True,
        streaming: StreamingSettings | None = None,
        identity_state: IdentityStateSettings | None = None,
        ledger_keys: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.stitch_identity = stitch_identity
        self.streaming = streaming
        self.identity_state = identity_state
        # (device, Delivered) from the ledger (batch only): joined into the same shuffle.
        self.ledger_keys = ledger_keys
        # With a ledger: how many events each device had delivered before (ints).
        self.already_delivered: beam.PCollection | None = None

    def expand(self, events):
        # Batch groups events with records of other kinds, hence the wider type (and coder).
        value_type = PreparedEvent if self.streaming is not None else DeviceRecord
        keyed = events | "KeyByDevice" >> beam.Map(
            lambda event: (event.device_key, event)
        ).with_output_types(KV[str, value_type])
        if self.streaming is not None:
            return keyed | "BufferOrderAndStitch" >> beam.ParDo(
                _StreamingResolveFn(self.stitch_identity, self.streaming)
            )
        state = self.identity_state
        if state is not None:
            previous = (
                events.pipeline
                | "ReadIdentityState" >> ReadIdentityState(list(state.previous_files))
                | "KeyStateByDevice"
                >> beam.Map(
                    lambda identity: (COOKIE_KEY_PREFIX + identity.cookie, identity)
                ).with_output_types(KV[str, DeviceRecord])
            )
            keyed = (keyed, previous) | "WithIdentityState" >> beam.Flatten()
        if self.ledger_keys is not None:
            keyed = (keyed, self.ledger_keys) | "JoinLedger" >> beam.Flatten().with_output_types(
                KV[str, DeviceRecord]
            )
        resolved = (
            keyed
            | "GroupByDevice" >> beam.GroupByKey()
            | "OrderAndStitch"
            >> beam.ParDo(_BatchResolveFn(self.stitch_identity, state is not None)).with_outputs(
                IDENTITY_STATE_TAG, NEWEST_EVENT_TAG, ALREADY_DELIVERED, main="devices"
            )
        )
        if self.ledger_keys is not None:
            self.already_delivered = resolved[ALREADY_DELIVERED]
        if state is not None:
            _ = (
                resolved[IDENTITY_STATE_TAG],
                resolved[NEWEST_EVENT_TAG],
            ) | "WriteIdentityState" >> WriteIdentityState(state.generation, state.ttl_seconds)
        return resolved.devices
