"""ValidateEvents and MapToWoopra: the Beam stages around the pure mapping functions."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.core.mapping import MappingSettings, PreparedEvent, build_request, prepare_event
from transforms.core.records import DEAD_LETTER_TAG, DeadLetter
from transforms.core.visits import needs_action_time


class _ValidateFn(beam.DoFn):
    def __init__(self, settings: MappingSettings, require_action_time: bool = False) -> None:
        self.settings = settings
        self.require_action_time = require_action_time

    def process(self, event: dict[str, Any]):
        prepared = prepare_event(event, self.settings)
        if self.require_action_time and not isinstance(prepared, DeadLetter):
            prepared = needs_action_time(prepared) or prepared
        if isinstance(prepared, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, prepared)
        else:
            yield prepared


class ValidateEvents(beam.PTransform):
    """Events to PreparedEvents: type, project, identity and timestamp checks (SPEC §1).

    These run before the shuffle by device because the device is part of what they find.
    Returns the prepared events as the main output and dead letters under DEAD_LETTER_TAG.
    """

    def __init__(self, settings: MappingSettings, require_action_time: bool = False) -> None:
        super().__init__()
        self.settings = settings
        # Import mode: a track, page or screen without a timestamp fails (SPEC §14).
        self.require_action_time = require_action_time

    def expand(self, events):
        return events | "Validate" >> beam.ParDo(
            _ValidateFn(self.settings, self.require_action_time)
        ).with_outputs(DEAD_LETTER_TAG, main="prepared")


class _MapDeviceFn(beam.DoFn):
    def __init__(self, settings: MappingSettings) -> None:
        self.settings = settings

    def process(self, element: tuple[str, list[PreparedEvent]]):
        device, events = element
        requests = []
        for event in events:
            request = build_request(event, self.settings)
            if isinstance(request, DeadLetter):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, request)
            else:
                requests.append(request)
        if requests:
            yield device, requests


class MapToWoopra(beam.PTransform):
    """(device, [PreparedEvent]) to (device, [WoopraRequest]) in the same order (SPEC §5-§7).

    Returns the requests as the main output and `request_too_large` dead letters under
    DEAD_LETTER_TAG.
    """

    def __init__(self, settings: MappingSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, devices):
        return devices | "BuildRequests" >> beam.ParDo(_MapDeviceFn(self.settings)).with_outputs(
            DEAD_LETTER_TAG, main="requests"
        )
