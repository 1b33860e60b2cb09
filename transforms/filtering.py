"""FilterEvents: events the user asked not to send to Woopra (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.core.fields import non_empty, path, woopra_integration
from transforms.core.records import METRICS_NAMESPACE
from transforms.progress import ProgressCounter

BY_INTEGRATIONS = "integrations"
BY_EVENT_NAME = "event_name"
BY_CONSENT = "consent"


@dataclass(frozen=True)
class FilterSettings:
    """The allowlist or denylist of track event names, and the consent categories."""

    allow_events: frozenset[str] = frozenset()
    deny_events: frozenset[str] = frozenset()
    consent_categories: frozenset[str] = frozenset()


def filter_reason(event: dict[str, Any], settings: FilterSettings) -> str | None:
    """Why the event is not to be sent, or None when it is."""
    if not _integrations_allow(event):
        return BY_INTEGRATIONS
    if not _event_name_allowed(event, settings):
        return BY_EVENT_NAME
    if settings.consent_categories and _consent_denied(event, settings.consent_categories):
        return BY_CONSENT
    return None


def _integrations_allow(event: dict[str, Any]) -> bool:
    """`integrations.<woopra>: false` drops; `All: false` drops unless Woopra is turned on."""
    named, woopra = woopra_integration(event)
    if woopra is False:
        return False
    integrations = event.get("integrations")
    all_off = isinstance(integrations, dict) and integrations.get("All") is False
    return not all_off or (named and not _is_off(woopra))


def _is_off(value: Any) -> bool:
    """Absent-like values: null, false, 0 and "" (True, although equal to 1, is on)."""
    if value is None or value is False or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _event_name_allowed(event: dict[str, Any], settings: FilterSettings) -> bool:
    if not (settings.allow_events or settings.deny_events):
        return True
    event_type = event.get("type")
    if not isinstance(event_type, str) or event_type.lower() != "track":
        return True
    name = event.get("event")
    if settings.allow_events:
        return isinstance(name, str) and name in settings.allow_events
    return not (isinstance(name, str) and name in settings.deny_events)


def _consent_denied(event: dict[str, Any], categories: frozenset[str]) -> bool:
    denied = path(event, "context", "consentManagement", "deniedConsentIds")
    if not isinstance(denied, list):
        return False
    return any(non_empty(consent_id) in categories for consent_id in denied)


class _FilterFn(beam.DoFn):
    def __init__(self, settings: FilterSettings) -> None:
        self.settings = settings
        self.filtered = ProgressCounter("filtered")
        self.filtered_by = {
            reason: Metrics.counter(METRICS_NAMESPACE, f"filtered_{reason}")
            for reason in (BY_INTEGRATIONS, BY_EVENT_NAME, BY_CONSENT)
        }

    def process(self, event: dict[str, Any]):
        reason = filter_reason(event, self.settings)
        if reason is None:
            yield event
        else:
            self.filtered.inc()
            self.filtered_by[reason].inc()


class FilterEvents(beam.PTransform):
    """Drops (and counts as `filtered`) the events SPEC §3 says are not to be sent."""

    def __init__(self, settings: FilterSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, events):
        return events | "Filter" >> beam.ParDo(_FilterFn(self.settings))
