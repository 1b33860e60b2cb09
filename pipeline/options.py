"""The pipeline's own command-line options, beside all of Beam's (DESIGN.md "Interfaces")."""

from __future__ import annotations

import argparse
import math

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, WorkerOptions

from pipeline.local_runner import DEFAULT_PULL_MAX_MESSAGES
from pipeline.replay import KNOWN_REASONS
from transforms.core.mapping import DEFAULT_BASE_URL
from transforms.core.visits import DEFAULT_IMPORT_BATCH_BYTES, DEFAULT_VISIT_GAP_MINUTES
from transforms.delivery.import_limits import DEFAULT_IMPORT_LIMITS, parse_limits
from transforms.delivery.import_sink import APP_ID_ENV, SECRET_KEY_ENV, credentials_from_environment

# Beam's DirectRunner first tries the Prism runner, which downloads a binary: these local
# runners need nothing from the network and are what the DirectRunner falls back to.
LOCAL_BATCH_RUNNER = "FnApiRunner"
LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"


class WoopraOptions(PipelineOptions):
    """Where events come from, how they map, and how they are delivered."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        source = parser.add_argument_group("input")
        source.add_argument(
            "--input", help="Glob of event files (.jsonl, .ndjson, .json, .avro, .gz)."
        )
        source.add_argument(
            "--input_format",
            choices=("auto", "jsonl", "json", "avro", "parquet"),
            default="auto",
            help="File format; auto follows each file's extension.",
        )
        source.add_argument("--input_subscription", help="projects/P/subscriptions/S (streaming).")
        source.add_argument("--input_topic", help="projects/P/topics/T (streaming).")
        source.add_argument(
            "--warehouse_table",
            help="The files hold rows of RudderStack's warehouse schema: identifies, users, "
            "tracks, pages, screens, a per-event table's name, or auto (from each file's path).",
        )

        mapping = parser.add_argument_group("mapping")
        mapping.add_argument("--project_name", help="Woopra project when an event names none.")
        mapping.add_argument(
            "--woopra_base_url", default=DEFAULT_BASE_URL, help="Where requests are sent."
        )
        mapping.add_argument(
            "--idle_timeout_ms", type=int, help="Sent as `timeout` with every request."
        )
        mapping.add_argument(
            "--no_stitch_identity",
            action="store_true",
            help="Do not fill cv_id/cv_email from the device's other events.",
        )
        mapping.add_argument(
            "--allow_event",
            action="append",
            default=[],
            help="Send only track events of this name (repeatable).",
        )
        mapping.add_argument(
            "--deny_event",
            action="append",
            default=[],
            help="Do not send track events of this name (repeatable).",
        )
        mapping.add_argument(
            "--consent_category",
            action="append",
            default=[],
            help="Drop events whose deniedConsentIds contain this category (repeatable).",
        )
        mapping.add_argument(
            "--identity_state",
            help="Batch: directory (or gs:// path) of the identities earlier runs learned; "
            "this run starts from them and, when it succeeds, leaves its own for the next.",
        )
        mapping.add_argument(
            "--identity_state_generation",
            help="Folder this run writes its identities to, published when it succeeds; "
            "default: a new generation-<UTC time>-<random> under --identity_state.",
        )

        sink = parser.add_argument_group("delivery")
        sink.add_argument(
            "--sink",
            choices=("woopra", "file"),
            default="woopra",
            help="woopra sends over HTTP; file writes the requests it would send (dry run).",
        )
        sink.add_argument("--output", default="out", help="Directory for files and report.json.")
        sink.add_argument(
            "--rate_limit",
            type=float,
            default=100.0,
            help="Requests per second across all workers; 0 for no cap.",
        )
        sink.add_argument(
            "--max_in_flight", type=int, default=32, help="Concurrent requests per worker."
        )
        sink.add_argument(
            "--max_attempts", type=int, default=6, help="Tries per request, the first included."
        )
        sink.add_argument(
            "--max_retry_seconds",
            type=float,
            default=300.0,
            help="Time budget for retrying one request.",
        )
        sink.add_argument(
            "--rate_limit_service",
            help="host:port of an Envoy rate limit service for one limit across workers.",
        )
        sink.add_argument(
            "--circuit_open_seconds",
            type=float,
            default=60.0,
            help="Stop sending once every request failed (connection error, 5xx) for this long.",
        )

        backfill = parser.add_argument_group("import and ledger")
        backfill.add_argument(
            "--mode",
            choices=("track", "import"),
            default="track",
            help="track sends one request per event; import POSTs visits to the Import API.",
        )
        backfill.add_argument(
            "--visit_gap_minutes",
            type=float,
            default=DEFAULT_VISIT_GAP_MINUTES,
            help="import: a new visit starts after this long without an event.",
        )
        backfill.add_argument(
            "--import_batch_bytes",
            type=int,
            default=DEFAULT_IMPORT_BATCH_BYTES,
            help="import: the largest body of one request, in bytes.",
        )
        backfill.add_argument(
            "--import_limits",
            default=DEFAULT_IMPORT_LIMITS,
            help="import: requests per window per project, e.g. 300/60s,600/3600s,3000/86400s.",
        )
        backfill.add_argument(
            "--max_wait_seconds",
            type=float,
            default=600.0,
            help="import with --ledger: stop (exit 3) when the next slot is further away.",
        )
        backfill.add_argument(
            "--plan_only",
            action="store_true",
            help="import: write and print plan.json, send nothing.",
        )
        backfill.add_argument(
            "--ledger",
            help="Directory (local or gs://) recording what Woopra accepted; runs skip it.",
        )

        streaming = parser.add_argument_group("streaming")
        streaming.add_argument(
            "--identity_ttl",
            type=duration_seconds,
            default=duration_seconds("30d"),
            help="How long a device's identity is remembered after its last event (e.g. 30d).",
        )
        streaming.add_argument(
            "--max_buffering_seconds",
            type=float,
            default=2.0,
            help="Longest wait of an event for others of its device before it is sent.",
        )
        streaming.add_argument(
            "--dedup_window",
            type=duration_seconds,
            default=duration_seconds("24h"),
            help="Repeats of a messageId within this time are dropped (e.g. 24h).",
        )
        streaming.add_argument(
            "--dead_letter_topic",
            help="projects/P/topics/T for dead letters; else windowed files under --output.",
        )
        streaming.add_argument(
            "--report_interval_seconds",
            type=float,
            default=30.0,
            help="How often a run logs its counts (a batch run on a terminal shows them live).",
        )

        replay = parser.add_argument_group("replay (woopra-pipeline replay)")
        replay.add_argument(
            "--dead_letters",
            help="Glob of dead-letter files of earlier runs whose events are sent again.",
        )
        replay.add_argument(
            "--reason",
            action="append",
            default=[],
            help="Replay only dead letters of this reason code (repeatable; default all).",
        )
        streaming.add_argument(
            "--max_buffering_wait_seconds",
            type=float,
            default=30.0,
            help="Longest wait of a device's buffer while its events keep coming.",
        )
        streaming.add_argument(
            "--local_pull_max_messages",
            type=int,
            default=DEFAULT_PULL_MAX_MESSAGES,
            help="Local streaming runner only: Pub/Sub messages per pull, i.e. per bundle.",
        )


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """`30d`, `24h`, `15m`, `90s` or plain seconds, as seconds."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from err
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"a duration must be positive: {text!r}")
    return seconds


def duration_text(seconds: float) -> str:
    """The shortest `duration_seconds` text for a number of seconds: 2592000 as `30d`."""
    for unit, size in sorted(_DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


def validate(options: PipelineOptions) -> None:
    """Reject contradictory settings before anything runs."""
    woopra = options.view_as(WoopraOptions)
    sources = [woopra.input, woopra.input_subscription, woopra.input_topic, woopra.dead_letters]
    if sum(source is not None for source in sources) != 1:
        raise ValueError(
            "give exactly one of --input, --input_subscription, --input_topic"
            " (or replay --dead_letters)"
        )
    unknown_reasons = sorted(set(woopra.reason) - KNOWN_REASONS)
    if unknown_reasons:
        raise ValueError(f"--reason {unknown_reasons[0]} is not a dead-letter reason code")
    if woopra.reason and not woopra.dead_letters:
        raise ValueError("--reason chooses what replay --dead_letters sends again")
    if woopra.allow_event and woopra.deny_event:
        raise ValueError("--allow_event and --deny_event cannot be combined")
    if woopra.max_in_flight < 1 or woopra.max_attempts < 1:
        raise ValueError("--max_in_flight and --max_attempts must be at least 1")
    if woopra.rate_limit < 0:
        raise ValueError("--rate_limit must be 0 (no cap) or positive")
    if not 0 < woopra.max_buffering_seconds < math.inf:
        raise ValueError("--max_buffering_seconds must be a positive number")
    validate_ranges(woopra)
    if woopra.local_pull_max_messages < 1:
        raise ValueError("--local_pull_max_messages must be at least 1")
    if woopra.dead_letter_topic and not is_streaming(options):
        raise ValueError("--dead_letter_topic is for streaming; batch runs write files")
    if woopra.input and woopra.input.lower().endswith(".avro.gz"):
        raise ValueError("Avro files compress inside (their codec); .avro.gz is not read")
    if (woopra.warehouse_table or woopra.identity_state) and not woopra.input:
        raise ValueError("--warehouse_table and --identity_state are for batch runs (--input)")
    if woopra.identity_state and woopra.no_stitch_identity:
        raise ValueError("--identity_state keeps identities for stitching: drop one of them")
    validate_backfill(options)
    runner = options.view_as(StandardOptions).runner
    workers = options.view_as(WorkerOptions)
    shared_cap = woopra.sink == "woopra" and woopra.rate_limit > 0
    if (
        shared_cap
        and runner not in (None, LOCAL_BATCH_RUNNER, LOCAL_STREAMING_RUNNER, "DirectRunner")
        and not (woopra.rate_limit_service or workers.num_workers or workers.max_num_workers)
    ):
        raise ValueError(
            "--rate_limit is split over workers: give --max_num_workers (or --num_workers), "
            "or --rate_limit_service for one limit across any number of them"
        )


def validate_backfill(options: PipelineOptions) -> None:
    """Import mode and the ledger (SPEC §14, §15): batch only, and credentials to send."""
    woopra = options.view_as(WoopraOptions)
    if woopra.ledger and is_streaming(options):
        raise ValueError("--ledger is for batch runs")
    if woopra.mode != "import":
        if woopra.plan_only:
            raise ValueError("--plan_only is for --mode import")
        return
    if is_streaming(options):
        raise ValueError("--mode import is for batch runs (files)")
    parse_limits(woopra.import_limits)
    if not 0 < woopra.visit_gap_minutes < math.inf:
        raise ValueError("--visit_gap_minutes must be a positive number")
    if woopra.import_batch_bytes < 1:
        raise ValueError("--import_batch_bytes must be at least 1")
    if not 0 <= woopra.max_wait_seconds < math.inf:
        raise ValueError("--max_wait_seconds must be 0 or positive")
    needs_credentials = woopra.sink == "woopra" and not woopra.plan_only
    if needs_credentials and credentials_from_environment() is None:
        raise ValueError(
            f"--mode import sends with {APP_ID_ENV} and {SECRET_KEY_ENV} from the environment: "
            "set both (or use --sink file or --plan_only)"
        )


# Beam's backoff (FuzzedExponentialIntervals) takes at most 10,000 retries after the first try.
MAX_ATTEMPTS = 10_001


def validate_ranges(woopra: WoopraOptions) -> None:
    """Numbers within what they can mean: NaN, infinities and negative times are refused."""
    if woopra.max_attempts > MAX_ATTEMPTS:
        raise ValueError(f"--max_attempts must be at most {MAX_ATTEMPTS:,}")
    if not 0 <= woopra.rate_limit < math.inf:
        raise ValueError("--rate_limit must be 0 (no cap) or a finite positive number")
    if woopra.idle_timeout_ms is not None and woopra.idle_timeout_ms < 0:
        raise ValueError("--idle_timeout_ms must not be negative")
    for name in ("max_retry_seconds", "circuit_open_seconds", "report_interval_seconds"):
        if not 0 < getattr(woopra, name) < math.inf:
            raise ValueError(f"--{name} must be a finite positive number")
    if not woopra.max_buffering_seconds <= woopra.max_buffering_wait_seconds < math.inf:
        raise ValueError(
            "--max_buffering_wait_seconds must be finite and at least --max_buffering_seconds"
        )


def is_streaming(options: PipelineOptions) -> bool:
    woopra = options.view_as(WoopraOptions)
    return bool(woopra.input_subscription or woopra.input_topic)


def apply_defaults(options: PipelineOptions) -> None:
    """Streaming follows the source; locally, a runner that needs no download."""
    standard = options.view_as(StandardOptions)
    if is_streaming(options):
        standard.streaming = True
    if standard.runner is None:
        standard.runner = LOCAL_STREAMING_RUNNER if standard.streaming else LOCAL_BATCH_RUNNER
