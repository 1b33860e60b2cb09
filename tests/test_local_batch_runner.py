"""The local batch runner's fix: a shuffle's held values are handed back once encoded."""

from __future__ import annotations

import sys

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.execution import GroupingBuffer
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local_runner import memory


def _group(pairs):
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        grouped = (
            pipeline
            | beam.Create(pairs)
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, values: (key, sorted(values)))
        )
        assert_that(grouped, equal_to([("a", [1, 3]), ("b", [2])]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_pages_are_trimmed_once_per_shuffle_and_the_groups_stay_whole(monkeypatch):
    real_trim = memory.malloc_trim()
    assert real_trim is not None  # glibc has it
    calls = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: lambda: calls.append(real_trim()))
    original = GroupingBuffer.__dict__["partition"]
    with memory.returned_shuffle_memory():
        assert GroupingBuffer.__dict__["partition"] is not original
        _group([("a", 1), ("b", 2), ("a", 3)])
    assert len(calls) == 3  # the shuffles of Create, the GroupByKey and assert_that
    assert GroupingBuffer.__dict__["partition"] is original


def test_without_malloc_trim_nothing_is_patched(monkeypatch):
    monkeypatch.setattr(memory, "malloc_trim", lambda: None)
    original = GroupingBuffer.__dict__["partition"]
    with memory.returned_shuffle_memory():
        assert GroupingBuffer.__dict__["partition"] is original
        _group([("a", 1), ("b", 2), ("a", 3)])
