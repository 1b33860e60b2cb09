"""ResolveIdentity in streaming: buffering, TTL of the device state, late data, dedup (SPEC §4)."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.options import LOCAL_STREAMING_RUNNER
from transforms.core.mapping import MappingSettings, prepare_event
from transforms.identity import ResolveIdentity, StreamingSettings

SETTINGS = StreamingSettings(
    max_buffering_seconds=5, identity_ttl_seconds=100, dedup_window_seconds=50
)


def _event(message_id: str, at: int, **fields) -> TimestampedValue:
    raw = {"type": "track", "anonymousId": "a1", "messageId": message_id, "timestamp": at * 1000}
    prepared = prepare_event({**raw, **fields}, MappingSettings(project_name="p"))
    return TimestampedValue(prepared, at)


def _streaming_options() -> PipelineOptions:
    options = PipelineOptions(runner=LOCAL_STREAMING_RUNNER)
    options.view_as(StandardOptions).streaming = True
    return options


def _run(
    stream: test_stream.TestStream, expected: list, settings: StreamingSettings = SETTINGS
) -> None:
    with beam.Pipeline(options=_streaming_options()) as pipeline:
        batches = (
            pipeline
            | stream
            | ResolveIdentity(streaming=settings)
            | beam.MapTuple(
                lambda device, events: (
                    device,
                    [(e.message_id, e.cv_id, e.cv_email) for e in events],
                )
            )
        )
        assert_that(batches, equal_to(expected))


def test_spec_4_streaming_buffers_then_flushes_one_ordered_stitched_batch():
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m2", 2), _event("m1", 1, userId="u1"), _event("m3", 3)])
        .advance_processing_time(10)
        .advance_watermark_to_infinity()
    )
    _run(stream, [("cookie:a1", [("m1", "u1", None), ("m2", "u1", None), ("m3", "u1", None)])])


def test_spec_4_streaming_identity_applies_to_later_batches_until_the_ttl_expires():
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m1", 1, userId="u1", traits={"email": "e@x"})])
        .advance_processing_time(10)
        .add_elements([_event("m2", 12)])
        .advance_processing_time(10)
        .add_elements([_event("m3", 22, userId="u2")])
        .advance_processing_time(10)
        .advance_watermark_to(60)  # not yet 100 s after m3: the identity is kept
        .advance_processing_time(200)
        .advance_watermark_to(200)  # more than 100 s after m3: the device's state expires
        .add_elements([_event("m4", 235)])
        .advance_processing_time(20)
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            ("cookie:a1", [("m1", "u1", "e@x")]),
            ("cookie:a1", [("m2", "u1", "e@x")]),
            ("cookie:a1", [("m3", "u2", "e@x")]),
            ("cookie:a1", [("m4", None, None)]),
        ],
    )


class _AppendToFile(beam.DoFn):
    """Writes what reaches it to a file; assert_that would drop output made at window end."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, element):
        device, events = element
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps([device, [e.message_id for e in events]]) + "\n")


def test_streaming_buffered_events_are_flushed_when_the_input_ends(tmp_path):
    output = tmp_path / "batches.jsonl"
    stream = test_stream.TestStream().add_elements([_event("m1", 1), _event("m2", 2)])
    with beam.Pipeline(options=_streaming_options()) as pipeline:
        _ = (
            pipeline
            | stream.advance_watermark_to_infinity()
            | ResolveIdentity(streaming=SETTINGS)
            | beam.ParDo(_AppendToFile(str(output)))
        )
    assert output.read_text().splitlines() == ['["cookie:a1", ["m1", "m2"]]']


def test_spec_4_streaming_late_event_is_sent_after_what_was_already_sent():
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m5", 5, userId="u1")])
        .advance_processing_time(10)
        .add_elements([TimestampedValue(_event("m1", 1).value, 12)])
        .advance_processing_time(10)
        .advance_watermark_to_infinity()
    )
    _run(stream, [("cookie:a1", [("m5", "u1", None)]), ("cookie:a1", [("m1", "u1", None)])])


def test_streaming_repeated_message_id_is_dropped_within_the_dedup_window_only():
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m1", 1), _event("m1", 2)])
        .advance_processing_time(30)
        .add_elements([_event("m1", 30)])
        .advance_processing_time(60)
        .add_elements([_event("m1", 90)])
        .advance_processing_time(10)
        .advance_watermark_to_infinity()
    )
    _run(stream, [("cookie:a1", [("m1", None, None)]), ("cookie:a1", [("m1", None, None)])])


def test_spec_4_streaming_buffer_waits_for_the_device_to_be_quiet():
    # m5 opens the buffer at 5 s and m6 comes at 9 s: the buffer waits until 14 s (5 s of
    # quiet), so m1, arriving late at 11 s, still goes out first.
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m5", 5)])
        .advance_processing_time(9)
        .add_elements([_event("m6", 9)])
        .advance_processing_time(2)
        .add_elements([TimestampedValue(_event("m1", 1).value, 11)])
        .advance_processing_time(20)
        .advance_watermark_to_infinity()
    )
    _run(stream, [("cookie:a1", [("m1", None, None), ("m5", None, None), ("m6", None, None)])])


def test_spec_4_streaming_buffer_of_a_busy_device_waits_no_longer_than_the_maximum():
    settings = StreamingSettings(
        max_buffering_seconds=5,
        max_buffering_wait_seconds=8,
        identity_ttl_seconds=100,
        dedup_window_seconds=50,
    )
    stream = (
        test_stream.TestStream()
        .add_elements([_event("m5", 5)])
        .advance_processing_time(9)
        .add_elements([_event("m6", 9)])  # quiet until 14 s, but the buffer is due at 13 s
        .advance_processing_time(5)
        .add_elements([TimestampedValue(_event("m1", 1).value, 14)])
        .advance_processing_time(20)
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            ("cookie:a1", [("m5", None, None), ("m6", None, None)]),
            ("cookie:a1", [("m1", None, None)]),
        ],
        settings,
    )
