"""`woopra-pipeline`: build, run, and report where every event ended."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline.builder import build_pipeline
from pipeline.local_runner import local_streaming_fixes, returned_shuffle_memory
from pipeline.options import LOCAL_STREAMING_RUNNER, WoopraOptions, is_streaming
from pipeline.report import build_report, counters_of, format_progress, format_report, write_report
from transforms.identity_state import publish_generation

_LOGGER = logging.getLogger("woopra")


def main(argv: list[str] | None = None) -> int:
    """Run to the end and print the report; a local streaming run goes on until Ctrl-C/SIGTERM.

    A streaming job on a remote runner (Dataflow) is submitted and left running there.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    options = PipelineOptions(sys.argv[1:] if argv is None else argv)
    try:
        pipeline = build_pipeline(options)
    except ValueError as err:
        print(f"woopra-pipeline: {err}", file=sys.stderr)
        return 2
    woopra = options.view_as(WoopraOptions)
    runner = options.view_as(StandardOptions).runner
    local_streaming = is_streaming(options) and runner == LOCAL_STREAMING_RUNNER
    with local_streaming_fixes() if local_streaming else _batch_fixes(options):
        started = time.monotonic()
        result = pipeline.run()
        if is_streaming(options) and not local_streaming:
            _LOGGER.info("streaming job submitted to %s; it runs until stopped there", runner)
            return 0
        if local_streaming:
            follow_streaming(result, woopra.report_interval_seconds, started)
        else:
            result.wait_until_finish()
        report = build_report(counters_of(result.metrics()), time.monotonic() - started)
    if report["input"] == 0 and not local_streaming:
        _LOGGER.warning("no events were read: does --input match any file?")
    report_path = write_report(report, woopra.output)
    print(format_report(report))
    _LOGGER.info("report written to %s", report_path)
    exit_code = 0 if report["balanced"] or local_streaming else 1
    if exit_code == 0 and woopra.identity_state:
        publish_generation(woopra.identity_state, woopra.identity_state_generation)
        _LOGGER.info("identity state: %s published", woopra.identity_state_generation)
    return exit_code


def _batch_fixes(options: PipelineOptions) -> contextlib.AbstractContextManager:
    """A batch run returns its shuffles' memory when the local runner runs it (elsewhere the
    patched runner class is never used)."""
    return contextlib.nullcontext() if is_streaming(options) else returned_shuffle_memory()


def follow_streaming(result: PipelineResult, interval_seconds: float, started: float) -> None:
    """Log the counts every interval until the pipeline ends or is stopped, then cancel it.

    Waiting happens on a helper thread because not every runner's wait_until_finish takes
    a duration; SIGTERM is treated like Ctrl-C.
    """
    waiter = threading.Thread(target=_wait_quietly, args=(result,), daemon=True)
    waiter.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while waiter.is_alive():
            waiter.join(interval_seconds)
            counters = counters_of(result.metrics())
            _LOGGER.info(format_progress(build_report(counters, time.monotonic() - started)))
    except KeyboardInterrupt:
        _LOGGER.info("stopping: cancelling the streaming pipeline")
        result.cancel()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_quietly(result: PipelineResult) -> None:
    try:
        result.wait_until_finish()
    except Exception:  # the main thread reports; a cancelled run may end with an error
        _LOGGER.exception("the streaming pipeline ended with an error")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
