"""Live progress of a batch run: the counts the workers send while the run goes on."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import build_pipeline
from pipeline.progress import Progress, format_progress_line
from pipeline.report import build_report, counters_of
from pipeline.stub import WoopraStub
from tests.helpers import write_lines

EVENTS = 60


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events(tmp_path):
    events = [
        {"type": "track", "event": "e", "anonymousId": f"a{n}", "messageId": f"m{n}"}
        for n in range(EVENTS)
    ]
    return write_lines(tmp_path / "in.jsonl", [json.dumps(e) for e in events] + ["not json"])


def test_counts_arrive_while_the_run_goes_on_and_end_equal_to_the_report(tmp_path, caplog):
    path = _events(tmp_path)
    seen: list[dict[str, int]] = []
    caplog.set_level(logging.INFO, logger="woopra")
    with WoopraStub(latency_ms=20) as stub:
        args = ["--input", str(path), "--project_name", "p", "--rate_limit", "20"]
        args += ["--woopra_base_url", stub.url, "--output", str(tmp_path / "out")]
        pipeline = build_pipeline(PipelineOptions(args))
        started = time.monotonic()
        with Progress(interval_seconds=0.5, stream=io.StringIO()) as progress:
            outcome: dict = {}
            runner = threading.Thread(target=lambda: outcome.update(result=pipeline.run()))
            runner.start()
            while runner.is_alive():
                seen.append(progress.snapshot())
                time.sleep(0.1)
            runner.join()
            outcome["result"].wait_until_finish()
        final = progress.snapshot()
        wall = time.monotonic() - started
    report = build_report(counters_of(outcome["result"].metrics()), elapsed_seconds=1)
    # Sending 60 requests at 20/s takes 3 s: the counts were seen part way through.
    assert any(0 < s.get("sent", 0) < EVENTS for s in seen)
    assert final == {"input": report["input"], "sent": EVENTS, "dead_lettered": 1}
    assert report["sent"] == EVENTS
    # Held back by the 20/s cap for about the 3 s of sending: wall time, where a sum over the
    # 60 requests' waits would be some 30 times as much.
    assert 2.0 < report["throttled_seconds"] < wall
    lines = [r.message for r in caplog.records if r.message.startswith("progress: read")]
    assert lines, "a log line every interval when not on a terminal"


def test_on_a_terminal_a_bar_is_redrawn_in_place(tmp_path):
    terminal = _Terminal()
    path = _events(tmp_path)
    args = ["--input", str(path), "--project_name", "p", "--sink", "file"]
    with Progress(interval_seconds=30, stream=terminal):
        build_pipeline(PipelineOptions([*args, "--output", str(tmp_path / "o")])).run()
    drawn = terminal.getvalue()
    assert "\r" in drawn
    assert f"{EVENTS + 1}/{EVENTS + 1}" in drawn  # every event read resolved
    assert "dead_lettered=1" in drawn


def test_the_log_line_gives_rate_and_time_left():
    line = format_progress_line(
        {"input": 1000, "sent": 300, "filtered": 50, "dead_lettered": 50}, elapsed_seconds=4
    )
    assert line == (
        "progress: read 1000, sent 300, filtered 50, dead-lettered 50; 100.0 events/s, "
        "about 00:06 left for the events read so far"
    )
