"""Builds the Beam pipeline from options; returns it so that tests and the CLI can run it."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import WoopraOptions, apply_defaults, is_streaming, validate
from pipeline.sources import ReadEventFiles, ReadPubSubMessages
from transforms.file_sink import WriteDeadLetters, WriteRequests
from transforms.filtering import FilterEvents, FilterSettings
from transforms.identity import ResolveIdentity
from transforms.map_to_woopra import MapToWoopra, ValidateEvents
from transforms.mapping import MappingSettings
from transforms.parse import ParseEvents
from transforms.records import DEAD_LETTER_TAG


def mapping_settings(options: WoopraOptions) -> MappingSettings:
    return MappingSettings(
        project_name=options.project_name,
        base_url=options.woopra_base_url,
        idle_timeout_ms=options.idle_timeout_ms,
    )


def filter_settings(options: WoopraOptions) -> FilterSettings:
    return FilterSettings(
        allow_events=frozenset(options.allow_event),
        deny_events=frozenset(options.deny_event),
        consent_categories=frozenset(options.consent_category),
    )


def build_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """Read, parse, filter, validate, resolve identity, map, deliver; dead letters to files."""
    validate(options)
    apply_defaults(options)
    woopra = options.view_as(WoopraOptions)
    mapping = mapping_settings(woopra)
    pipeline = beam.Pipeline(options=options)

    if is_streaming(options):
        records = pipeline | "ReadEvents" >> ReadPubSubMessages(
            woopra.input_subscription, woopra.input_topic
        )
    else:
        records = pipeline | "ReadEvents" >> ReadEventFiles(woopra.input, woopra.input_format)
    parsed = records | "ParseEvents" >> ParseEvents()
    events = parsed.events | "FilterEvents" >> FilterEvents(filter_settings(woopra))
    validated = events | "ValidateEvents" >> ValidateEvents(mapping)
    devices = validated.prepared | "ResolveIdentity" >> ResolveIdentity(
        stitch_identity=not woopra.no_stitch_identity
    )
    mapped = devices | "MapToWoopra" >> MapToWoopra(mapping)
    dead_letters = [parsed[DEAD_LETTER_TAG], validated[DEAD_LETTER_TAG], mapped[DEAD_LETTER_TAG]]

    if woopra.sink == "file":
        _ = mapped.requests | "WriteRequests" >> WriteRequests(woopra.output)
    else:
        raise NotImplementedError("--sink woopra")

    _ = (
        dead_letters
        | "CollectDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(woopra.output)
    )
    return pipeline
