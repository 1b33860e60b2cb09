"""Command-line options: durations, defaults and contradictions rejected before a run."""

from __future__ import annotations

import argparse

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.cli import main
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
    ("flag", "value", "message"),
    [
        ("--max_attempts", "100000", "at most 10,001"),
        ("--rate_limit", "nan", "finite"),
        ("--rate_limit", "inf", "finite"),
        ("--idle_timeout_ms", "-5", "must not be negative"),
        ("--max_retry_seconds", "nan", "finite positive"),
        ("--max_retry_seconds", "0", "finite positive"),
        ("--circuit_open_seconds", "-1", "finite positive"),
        ("--circuit_open_seconds", "inf", "finite positive"),
        ("--report_interval_seconds", "0", "finite positive"),
        ("--max_buffering_wait_seconds", "1", "at least --max_buffering_seconds"),
        ("--max_buffering_wait_seconds", "nan", "at least --max_buffering_seconds"),
    ],
)
def test_numbers_are_refused_outside_their_real_range(flag, value, message):
    with pytest.raises(ValueError, match=message):
        validate(PipelineOptions(["--input", "a", flag, value]))


def test_the_largest_attempts_beam_backoff_allows_is_accepted():
    validate(PipelineOptions(["--input", "a", "--max_attempts", "10001", "--idle_timeout_ms", "0"]))


@pytest.mark.parametrize(
    "flags",
    [["--max_attempts", "100000"], ["--rate_limit", "nan"], ["--idle_timeout_ms", "-5"]],
)
def test_cli_refuses_an_out_of_range_number_with_one_line_and_exit_2(tmp_path, capsys, flags):
    code = main(["--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path), *flags])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("woopra-pipeline: ")
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "report.json").exists()


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
