"""Builds the Beam pipeline from options; returns it so that tests and the CLI can run it."""

from __future__ import annotations

import shutil
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions

from pipeline.options import WoopraOptions, apply_defaults, is_streaming, validate
from pipeline.plan import MakePlan
from pipeline.replay import ReadDeadLetters
from pipeline.sources import RECORDS, ReadEventFiles, ReadPubSubMessages
from transforms.core.mapping import MappingSettings
from transforms.core.records import DEAD_LETTER_TAG
from transforms.core.redact import redact_url
from transforms.delivery.file_sink import WriteDeadLetters, WriteRequests
from transforms.delivery.import_sink import ImportSettings, SendImportBodies
from transforms.delivery.ledger import ReadLedgerKeys
from transforms.delivery.sink import DeliverySettings, WriteToWoopra
from transforms.filtering import FilterEvents, FilterSettings
from transforms.identity import ResolveIdentity, StreamingSettings
from transforms.identity_state import (
    IdentityStateSettings,
    new_generation,
    newest_generation_files,
)
from transforms.import_bodies import BuildVisits, PackBodies, VisitSettings, WriteImportBodies
from transforms.map_to_woopra import MapToWoopra, ValidateEvents
from transforms.parse import ParseEvents
from transforms.warehouse import RowsToEvents


def mapping_settings(options: WoopraOptions) -> MappingSettings:
    base_url = options.woopra_base_url
    return MappingSettings(
        project_name=options.project_name,
        # A dry run writes its endpoints: without the credentials a URL may hold.
        base_url=redact_url(base_url) if options.sink == "file" else base_url,
        idle_timeout_ms=options.idle_timeout_ms,
    )


def filter_settings(options: WoopraOptions) -> FilterSettings:
    return FilterSettings(
        allow_events=frozenset(options.allow_event),
        deny_events=frozenset(options.deny_event),
        consent_categories=frozenset(options.consent_category),
    )


def delivery_settings(options: PipelineOptions) -> DeliverySettings:
    woopra = options.view_as(WoopraOptions)
    workers = options.view_as(WorkerOptions)
    return DeliverySettings(
        rate_limit=woopra.rate_limit,
        max_in_flight=woopra.max_in_flight,
        max_attempts=woopra.max_attempts,
        max_retry_seconds=woopra.max_retry_seconds,
        num_workers=max(workers.max_num_workers or 0, workers.num_workers or 0, 1),
        rate_limit_service=woopra.rate_limit_service,
        circuit_open_seconds=woopra.circuit_open_seconds,
        circuit_retry_seconds=woopra.circuit_open_seconds if is_streaming(options) else None,
        ledger_dir=woopra.ledger,
    )


def streaming_settings(options: WoopraOptions) -> StreamingSettings:
    return StreamingSettings(
        max_buffering_seconds=options.max_buffering_seconds,
        max_buffering_wait_seconds=options.max_buffering_wait_seconds,
        identity_ttl_seconds=options.identity_ttl,
        dedup_window_seconds=options.dedup_window,
    )


def visit_settings(options: WoopraOptions) -> VisitSettings:
    return VisitSettings(
        visit_gap_minutes=options.visit_gap_minutes,
        import_batch_bytes=options.import_batch_bytes,
    )


def import_settings(options: PipelineOptions, run_id: str) -> ImportSettings:
    woopra = options.view_as(WoopraOptions)
    return ImportSettings(
        base_url=woopra.woopra_base_url,
        import_limits=woopra.import_limits,
        max_wait_seconds=woopra.max_wait_seconds,
        ledger_dir=woopra.ledger,
        run_id=run_id,
        max_attempts=woopra.max_attempts,
        max_retry_seconds=woopra.max_retry_seconds,
    )


def add_import(devices, options: PipelineOptions, resolve: ResolveIdentity) -> list:
    """Import mode (SPEC §14): visits, bodies, the plan, then the Import API or body files.

    Returns the dead-letter PCollections it adds.
    """
    woopra = options.view_as(WoopraOptions)
    visits = visit_settings(woopra)
    lines = devices | "BuildVisits" >> BuildVisits(mapping_settings(woopra), visits)
    bodies = lines.lines | "PackBodies" >> PackBodies(visits)
    plan = bodies | "Plan" >> MakePlan(
        woopra.output, woopra.import_limits, woopra.ledger, resolve.already_delivered
    )
    dead_letters = [lines[DEAD_LETTER_TAG]]
    if woopra.plan_only:
        return dead_letters
    if woopra.sink == "file":
        _ = bodies | "WriteImportBodies" >> WriteImportBodies(woopra.output)
        return dead_letters
    run_id = uuid.uuid4().hex
    sent = bodies | "SendImportBodies" >> SendImportBodies(import_settings(options, run_id), plan)
    dead_letters.append(sent[DEAD_LETTER_TAG])
    return dead_letters


def identity_state_settings(options: WoopraOptions) -> IdentityStateSettings | None:
    """Where this run's identities come from and go (SPEC §13); the generation it writes is
    chosen here, once, and kept in the options for the launcher to publish."""
    if not options.identity_state:
        return None
    if not options.identity_state_generation:
        options.identity_state_generation = new_generation(options.identity_state)
    return IdentityStateSettings(
        previous_files=tuple(newest_generation_files(options.identity_state)),
        generation=options.identity_state_generation,
        ttl_seconds=options.identity_ttl,
    )


def build_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """The run's pipeline, its options checked first; if building it fails, nothing of it is
    left behind."""
    validate(options)
    apply_defaults(options)
    woopra = options.view_as(WoopraOptions)
    mapping = mapping_settings(woopra)
    streaming = is_streaming(options)
    pipeline = beam.Pipeline(options=options)
    try:
        return _add_stages(pipeline, options, woopra, mapping, streaming)
    except BaseException:
        discard(pipeline)
        raise


def discard(pipeline: beam.Pipeline) -> None:
    """Removes what Beam made for a pipeline that will not run: a local temp folder, which it
    makes for every Pipeline and removes only when `run()` ends."""
    shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)


def _add_stages(
    pipeline: beam.Pipeline,
    options: PipelineOptions,
    woopra: WoopraOptions,
    mapping: MappingSettings,
    streaming: bool,
) -> beam.Pipeline:
    """Read, parse, filter, validate, resolve identity, map, deliver; dead letters to files."""
    unreadable_files = []
    if streaming:
        records = pipeline | "ReadEvents" >> ReadPubSubMessages(
            woopra.input_subscription, woopra.input_topic
        )
    elif woopra.dead_letters:
        records = pipeline | "ReadEvents" >> ReadDeadLetters(woopra.dead_letters, woopra.reason)
    else:
        warehouse = woopra.warehouse_table
        to_events = RowsToEvents(warehouse, woopra.input) if warehouse else None
        files = pipeline | "ReadEvents" >> ReadEventFiles(
            woopra.input,
            woopra.input_format,
            with_filename=to_events is not None,
            avro_columns=to_events.columns_used() if to_events else None,
        )
        records, unreadable_files = files[RECORDS], [files[DEAD_LETTER_TAG]]
    if woopra.warehouse_table:
        # Rows become events in the same fused step that reads them (parsed as ParseEvents
        # would): rows of Avro and Parquet are costly to encode between steps, events less so.
        parsed = records | "RowsToEvents" >> to_events
    else:
        parsed = records | "ParseEvents" >> ParseEvents()
    events = parsed.events | "FilterEvents" >> FilterEvents(filter_settings(woopra))
    importing = woopra.mode == "import"
    validated = events | "ValidateEvents" >> ValidateEvents(mapping, require_action_time=importing)
    ledger_keys = None
    if woopra.ledger and not streaming:
        ledger_keys = pipeline | "ReadLedger" >> ReadLedgerKeys(woopra.ledger)
    resolve = ResolveIdentity(
        stitch_identity=not woopra.no_stitch_identity,
        streaming=streaming_settings(woopra) if streaming else None,
        identity_state=identity_state_settings(woopra),
        ledger_keys=ledger_keys,
    )
    devices = validated.prepared | "ResolveIdentity" >> resolve
    dead_letters = [*unreadable_files, parsed[DEAD_LETTER_TAG], validated[DEAD_LETTER_TAG]]
    if importing:
        dead_letters += add_import(devices, options, resolve)
        return _write_dead_letters(pipeline, dead_letters, woopra, streaming)
    mapped = devices | "MapToWoopra" >> MapToWoopra(mapping)
    dead_letters.append(mapped[DEAD_LETTER_TAG])

    if woopra.sink == "file":
        _ = mapped.requests | "WriteRequests" >> WriteRequests(woopra.output, windowed=streaming)
    else:
        delivered = mapped.requests | "WriteToWoopra" >> WriteToWoopra(delivery_settings(options))
        dead_letters.append(delivered[DEAD_LETTER_TAG])

    return _write_dead_letters(pipeline, dead_letters, woopra, streaming)


def _write_dead_letters(
    pipeline: beam.Pipeline, dead_letters: list, woopra: WoopraOptions, streaming: bool
) -> beam.Pipeline:
    _ = (
        dead_letters
        | "CollectDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters"
        >> WriteDeadLetters(woopra.output, windowed=streaming, topic=woopra.dead_letter_topic)
    )
    return pipeline
