"""ResolveIdentity: events grouped by device, in send order, with stitched identities (SPEC §4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import NamedTuple

import apache_beam as beam

from transforms.mapping import PreparedEvent

COOKIE_KEY_PREFIX = "cookie:"


class Identity(NamedTuple):
    """A device's current cv_id and cv_email, each updated on its own."""

    cv_id: str | None = None
    cv_email: str | None = None


def in_send_order(events: Iterable[PreparedEvent]) -> list[PreparedEvent]:
    """Timestamp order, ties broken by messageId, events without a timestamp last."""
    return sorted(events, key=lambda event: event.send_order)


NO_IDENTITY = Identity()


def stitch(
    ordered: list[PreparedEvent], known: Identity = NO_IDENTITY
) -> tuple[list[PreparedEvent], Identity]:
    """Fill each event's missing cv_id / cv_email from the device's current identity.

    `ordered` is one device's events in send order; `known` is what earlier events of the
    device established (streaming). Events before the first carrier of a value get the
    first value seen. An event's own identifiers always win. Returns the events and the
    identity current after the last of them.
    """
    current = Identity(
        known.cv_id or next((e.cv_id for e in ordered if e.cv_id is not None), None),
        known.cv_email or next((e.cv_email for e in ordered if e.cv_email is not None), None),
    )
    stitched = []
    for event in ordered:
        current = Identity(event.cv_id or current.cv_id, event.cv_email or current.cv_email)
        if (event.cv_id, event.cv_email) != current:
            event = replace(event, cv_id=current.cv_id, cv_email=current.cv_email)
        stitched.append(event)
    return stitched, current


def resolve_device(
    device_key: str, events: Iterable[PreparedEvent], stitch_identity: bool
) -> list[PreparedEvent]:
    """One device's events in send order, stitched when the device is a cookie."""
    ordered = in_send_order(events)
    if stitch_identity and device_key.startswith(COOKIE_KEY_PREFIX):
        ordered, _ = stitch(ordered)
    return ordered


class ResolveIdentity(beam.PTransform):
    """PreparedEvents to (device key, [PreparedEvent]) in send order, one keyed shuffle.

    The one GroupByKey by device serves stitching, ordering and the sink's per-device
    sequencing together.
    """

    def __init__(self, stitch_identity: bool = True) -> None:
        super().__init__()
        self.stitch_identity = stitch_identity

    def expand(self, events):
        stitch_identity = self.stitch_identity
        return (
            events
            | "KeyByDevice" >> beam.Map(lambda event: (event.device_key, event))
            | "GroupByDevice" >> beam.GroupByKey()
            | "OrderAndStitch"
            >> beam.MapTuple(
                lambda device, grouped: (device, resolve_device(device, grouped, stitch_identity))
            )
        )
