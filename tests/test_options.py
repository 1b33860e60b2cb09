"""Command-line options: durations, defaults and contradictions rejected before a run."""

from __future__ import annotations

import argparse

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.options import (
    LOCAL_BATCH_RUNNER,
    LOCAL_STREAMING_RUNNER,
    apply_defaults,
    duration_seconds,
    validate,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2_592_000), ("24h", 86_400), ("15m", 900), ("90s", 90), ("2.5", 2.5)],
)
def test_durations_take_a_unit(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1h", "0", "inf", "nan", "tomorrow"])
def test_durations_must_be_positive_finite_numbers(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of"),
        (["--input", "a", "--input_topic", "projects/p/topics/t"], "exactly one of"),
        (["--input", "a", "--allow_event", "x", "--deny_event", "y"], "cannot be combined"),
        (["--input", "a", "--dead_letter_topic", "projects/p/topics/d"], "for streaming"),
        (["--input", "a/*.avro.gz"], "avro.gz"),
        (["--input", "a", "--runner", "DataflowRunner"], "--max_num_workers"),
        (["--input", "a", "--max_buffering_seconds", "0"], "positive"),
    ],
)
def test_contradictory_settings_are_rejected_before_anything_runs(args, message):
    with pytest.raises(ValueError, match=message):
        validate(PipelineOptions(args))


@pytest.mark.parametrize(
    "extra",
    [
        ["--max_num_workers", "4"],
        ["--rate_limit_service", "127.0.0.1:8081"],
        ["--rate_limit", "0"],
        ["--sink", "file"],
    ],
)
def test_a_remote_runner_needs_a_worker_count_only_to_split_a_rate_cap(extra):
    validate(PipelineOptions(["--input", "a", "--runner", "DataflowRunner", *extra]))


def test_local_runners_need_no_download_and_pubsub_switches_streaming_on():
    batch = PipelineOptions(["--input", "a"])
    apply_defaults(batch)
    assert batch.view_as(StandardOptions).runner == LOCAL_BATCH_RUNNER
    streaming = PipelineOptions(["--input_subscription", "projects/p/subscriptions/s"])
    apply_defaults(streaming)
    assert streaming.view_as(StandardOptions).streaming
    assert streaming.view_as(StandardOptions).runner == LOCAL_STREAMING_RUNNER
