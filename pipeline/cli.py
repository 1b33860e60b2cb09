"""`woopra-pipeline`: build, run, and report where every event ended."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline.arguments import (
    HELP_FLAGS,
    PROG,
    UserError,
    check_flags,
    help_text,
    normalize_switches,
)
from pipeline.builder import build_pipeline, discard
from pipeline.exit_codes import exit_code, failures
from pipeline.graceful_stop import StopSignal, graceful_stop
from pipeline.local_runner import (
    LocalStreamingRun,
    local_streaming_fixes,
    returned_shuffle_memory,
)
from pipeline.options import (
    LOCAL_BATCH_RUNNER,
    LOCAL_STREAMING_RUNNER,
    WoopraOptions,
    is_streaming,
)
from pipeline.preflight import check_run
from pipeline.progress import Progress
from pipeline.report import (
    build_report,
    counters_of,
    format_progress,
    format_report,
    run_report,
    write_report,
)
from transforms.delivery.import_limits import longest_window_seconds, parse_limits
from transforms.delivery.ledger import compact
from transforms.delivery.ledger_lock import LedgerLock, LedgerLockedError, LedgerUnavailableError
from transforms.identity_state import publish_generation

_LOGGER = logging.getLogger("woopra")
# How soon a streaming run notices Ctrl-C or SIGTERM.
_SIGNAL_CHECK_SECONDS = 0.2


def main(argv: list[str] | None = None, wait: bool = True) -> int:
    """Run to the end and print the report; a local streaming run goes on until Ctrl-C/SIGTERM.

    A streaming job on a remote runner (Dataflow) is submitted and left running there, and so
    is a batch job when not `wait` (the Flex Template launcher only submits). A user error
    (an unknown flag, a missing input, ...) is one line on stderr and exit 2.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg in HELP_FLAGS for arg in args):
        print(help_text())
        return 0
    pipeline = None
    try:
        options = parse_command_line(args)
        pipeline = build_pipeline(options)
        check_run(options)
    except (UserError, ValueError) as err:
        if pipeline is not None:
            discard(pipeline)
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    return run(pipeline, options, wait)


def parse_command_line(args: list[str]) -> PipelineOptions:
    """`[replay] --flag value ...` as options, every flag checked (UserError if unknown)."""
    replay = bool(args) and args[0] == "replay"
    if replay:
        args = args[1:]
    args = normalize_switches(args)
    check_flags(args)
    options = PipelineOptions(args)
    if replay and not options.view_as(WoopraOptions).dead_letters:
        raise UserError("replay needs --dead_letters GLOB (the dead-letter files to send again)")
    return options


def run(pipeline: beam.Pipeline, options: PipelineOptions, wait: bool = True) -> int:
    """Runs the pipeline, shows progress, prints and writes the report; the exit code."""
    woopra = options.view_as(WoopraOptions)
    runner = options.view_as(StandardOptions).runner
    local_streaming = is_streaming(options) and runner == LOCAL_STREAMING_RUNNER
    try:
        ledger = hold_ledger(woopra)
    except (LedgerLockedError, LedgerUnavailableError, ValueError) as err:
        discard(pipeline)
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    local_batch = not is_streaming(options) and runner in (LOCAL_BATCH_RUNNER, "DirectRunner")
    # A graceful stop needs the sink in this process: a local batch run sending to Woopra.
    graceful = local_batch and woopra.sink == "woopra"
    stopping = graceful_stop() if graceful else contextlib.nullcontext(StopSignal())
    streaming_stop: int | None = None
    if local_streaming:
        local_fixes = local_streaming_fixes(woopra.local_pull_max_messages)
    else:  # a local batch run hands its shuffles' memory back (see local_runner)
        local_fixes = returned_shuffle_memory() if local_batch else contextlib.nullcontext()
    with ledger, local_fixes as local_run, stopping as stop:
        started = time.monotonic()
        with Progress(woopra.report_interval_seconds) if local_batch else contextlib.nullcontext():
            result = pipeline.run()
            if is_streaming(options) and not local_streaming:
                _LOGGER.info("streaming job submitted to %s; it runs until stopped there", runner)
                return 0
            if not wait:
                _LOGGER.info("job submitted to %s; its report is in that runner's metrics", runner)
                return 0
            if local_streaming:
                streaming_stop = follow_streaming(
                    result, woopra.report_interval_seconds, started, local_run
                )
            else:
                result.wait_until_finish()
        if woopra.plan_only:
            _LOGGER.info("plan written to %s; nothing sent (--plan_only)", woopra.output)
            return 0
        report = run_report(result, time.monotonic() - started, woopra.output)
    stopped_by = stop.number if stop.number is not None else streaming_stop
    report["interrupted"] = None if stopped_by is None else signal.Signals(stopped_by).name
    if report["input"] == 0 and not local_streaming:
        _LOGGER.warning("no events were read: do the files hold any?")
    report_path = write_report(report, woopra.output)
    print(format_report(report))
    _LOGGER.info("report written to %s", report_path)
    for line in failures(report, woopra.circuit_open_seconds):
        print(f"woopra-pipeline: {line}", file=sys.stderr)
    code = exit_code(report, stopped_by)
    if code == 0 and woopra.identity_state:  # only a run that did its job leaves its identities
        publish_generation(woopra.identity_state, woopra.identity_state_generation)
        _LOGGER.info("identity state: %s published", woopra.identity_state_generation)
    return code


def hold_ledger(woopra: WoopraOptions) -> contextlib.AbstractContextManager:
    """The ledger's lock for a run that writes the ledger, compacting it on the way in and
    out; nothing for runs that only read it (--sink file, --plan_only) or have none."""
    if not woopra.ledger or woopra.sink == "file" or woopra.plan_only:
        return contextlib.nullcontext()
    keep_seconds = longest_window_seconds(parse_limits(woopra.import_limits))
    lock = LedgerLock(woopra.ledger).acquire()
    stack = contextlib.ExitStack()
    stack.callback(lock.release)
    try:
        compact(woopra.ledger, keep_seconds)
    except Exception as err:
        stack.close()
        raise LedgerUnavailableError(
            f"the ledger {woopra.ledger} could not be compacted before the run "
            f"({type(err).__name__}: {err}); nothing was sent"
        ) from err
    except BaseException:  # Ctrl-C: the lock goes, the interruption goes on
        stack.close()
        raise
    stack.callback(_compact_after_the_run, woopra.ledger, keep_seconds)
    return stack


def _compact_after_the_run(ledger_dir: str, keep_seconds: float) -> None:
    """Folds the run's own ledger files; a failure leaves them for the next run to fold, so it
    must not cost this run its report (compaction writes the new file before deleting)."""
    try:
        compact(ledger_dir, keep_seconds)
    except Exception as err:
        _LOGGER.warning(
            "the ledger %s was not compacted after the run (%s: %s); the next run folds it",
            ledger_dir,
            type(err).__name__,
            err,
        )


def follow_streaming(
    result: PipelineResult, interval_seconds: float, started: float, run: LocalStreamingRun
) -> int | None:
    """Log the counts every interval until the pipeline ends; Ctrl-C or SIGTERM drains it.

    A drain stops pulling and lets everything already pulled be delivered or dead-lettered
    (the local runner acknowledges messages as it pulls them, so a cancel would lose them);
    a second Ctrl-C or SIGTERM cancels at once. Returns the first signal that stopped the run,
    if one did: a stopped run exits 130/143 like a stopped batch run (SPEC §16).
    Waiting happens on a helper thread because not every runner's wait_until_finish takes
    a duration, and signals only count requests: an exception raised inside a thread join
    can leave the thread looking finished.
    """
    finished = threading.Event()
    waiter = threading.Thread(target=_wait_quietly, args=(result, finished), daemon=True)
    waiter.start()
    stops: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: stops.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    next_progress = time.monotonic() + interval_seconds
    try:
        while not finished.wait(_SIGNAL_CHECK_SECONDS):
            if len(stops) == 1 and not run.draining:
                _LOGGER.info(
                    "draining: no more pulls; what was pulled is delivered or dead-lettered "
                    "(Ctrl-C again to cancel)"
                )
                run.drain()
            elif len(stops) > 1:
                _LOGGER.info("stopping now: cancelling the streaming pipeline")
                result.cancel()
                return stops[0]
            if time.monotonic() >= next_progress:
                next_progress += interval_seconds
                counters = counters_of(result.metrics())
                _LOGGER.info(format_progress(build_report(counters, time.monotonic() - started)))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return stops[0] if stops else None


def _wait_quietly(result: PipelineResult, finished: threading.Event) -> None:
    try:
        result.wait_until_finish()
    except Exception:  # the main thread reports; a cancelled run may end with an error
        _LOGGER.exception("the streaming pipeline ended with an error")
    finally:
        finished.set()
