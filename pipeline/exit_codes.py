"""How a run ends (SPEC §16): its exit code, and one line for each reason it failed."""

from __future__ import annotations

from typing import Any

from transforms.core.records import RETRIES_EXHAUSTED
from transforms.delivery.circuit import service_name

OK = 0  # every event accounted for; dead letters of single events are data
FAILED = 1  # damaged input, an open circuit, or counts that do not add up
REFUSED = 2  # a user error: the run did not start
DEFERRED = 3  # import stopped by the limits with work left (SPEC §14): the next run goes on
# Interrupted: 128 + the signal's number, as shells report it (130 SIGINT, 143 SIGTERM).
_SIGNAL_BASE = 128


def exit_code(report: dict[str, Any], signal_number: int | None = None) -> int:
    if signal_number is not None:
        return _SIGNAL_BASE + signal_number
    if failures(report):
        return FAILED
    return DEFERRED if report.get("deferred") else OK


def failures(report: dict[str, Any], circuit_open_seconds: float | None = None) -> list[str]:
    """Why the run could not do its job, one line each; empty when it did."""
    lines = []
    waited = f" for {circuit_open_seconds:g} s" if circuit_open_seconds else ""
    given_up = report["dead_letter_reasons"].get(RETRIES_EXHAUSTED, 0)
    lines += [
        f"{service_name(service)} was unreachable{waited}: sending stopped, "
        f"{given_up} events dead-lettered {RETRIES_EXHAUSTED} (replayable)"
        for service in report.get("unreachable", [])
    ]
    damaged = report.get("damaged_files", [])
    if damaged:
        lines.append(
            f"{len(damaged)} input file(s) could not be read to their end: {', '.join(damaged)}"
            " (see the unreadable_file dead letters)"
        )
    if not report["balanced"]:
        lines.append("the counts do not add up: sent + filtered + dead-lettered != input")
    return lines
