"""Dead letters and dry-run requests as files, in batch and in streaming windows (SPEC §8, §9)."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue

from pipeline.options import LOCAL_BATCH_RUNNER, LOCAL_STREAMING_RUNNER
from transforms.core.records import INVALID_JSON, STAGE_PARSE, TOO_LARGE, DeadLetter
from transforms.delivery.file_sink import WriteDeadLetters


def _dead_letter(n: int, reason: str) -> DeadLetter:
    return DeadLetter(f"m{n}", STAGE_PARSE, reason, "detail", event=f"raw {n}")


def _written(output_dir) -> list[dict]:
    files = glob.glob(str(output_dir / "dead_letters-*.jsonl"))
    return [json.loads(line) for f in files for line in open(f, encoding="utf-8") if line.strip()]


def test_spec_9_streaming_dead_letters_are_written_to_windowed_files(tmp_path):
    options = PipelineOptions(runner=LOCAL_STREAMING_RUNNER)
    options.view_as(StandardOptions).streaming = True
    stream = (
        test_stream.TestStream()
        .add_elements([TimestampedValue(_dead_letter(1, INVALID_JSON), 10)])
        .add_elements([TimestampedValue(_dead_letter(2, TOO_LARGE), 70)])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(options=options) as pipeline:
        _ = pipeline | stream | WriteDeadLetters(str(tmp_path), windowed=True)

    files = glob.glob(str(tmp_path / "dead_letters-*.jsonl"))
    assert len(files) == 2  # one per 60-second window
    assert sorted(d["message_id"] for d in _written(tmp_path)) == ["m1", "m2"]


def test_spec_9_dead_letters_are_counted_by_reason(tmp_path):
    letters = [
        _dead_letter(1, INVALID_JSON),
        _dead_letter(2, INVALID_JSON),
        _dead_letter(3, TOO_LARGE),
    ]
    pipeline = beam.Pipeline(runner=LOCAL_BATCH_RUNNER)
    _ = pipeline | beam.Create(letters) | WriteDeadLetters(str(tmp_path))
    result = pipeline.run()
    result.wait_until_finish()

    def counter(name: str) -> int:
        (found,) = result.metrics().query(MetricsFilter().with_name(name))["counters"]
        return found.committed

    assert counter("dead_lettered") == 3
    assert counter("dead_letters_invalid_json") == 2
    assert counter("dead_letters_too_large") == 1
    assert {d["reason"] for d in _written(tmp_path)} == {INVALID_JSON, TOO_LARGE}
