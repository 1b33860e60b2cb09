"""The import plan (SPEC §14): what will be sent and when the last body can start, written to
plan.json and printed before anything is sent."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.delivery.import_limits import ImportWindows, parse_limits
from transforms.delivery.ledger import read_request_log, write_immutable
from transforms.import_bodies import body_stats

_LOGGER = logging.getLogger("woopra")

PLAN_FILE = "plan.json"
_COUNTS = ("events", "visitors", "visits", "lines", "bodies", "bytes")


class _SumStatsFn(beam.CombineFn):
    def create_accumulator(self) -> dict[str, Any]:
        return {**dict.fromkeys(_COUNTS, 0), "bodies_per_project": {}}

    def add_input(self, accumulator: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        for name in _COUNTS:
            accumulator[name] += stats[name]
        for project, bodies in stats["bodies_per_project"].items():
            per_project = accumulator["bodies_per_project"]
            per_project[project] = per_project.get(project, 0) + bodies
        return accumulator

    def merge_accumulators(self, accumulators) -> dict[str, Any]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        return accumulator


def estimated_seconds(
    bodies_per_project: dict[str, int],
    import_limits: str,
    sent_ms: dict[str, list[int]],
    now_ms: int,
) -> float:
    """When the last body can start, from now: projects are paced each on its own windows,
    from the state the ledger left them in; latency left out."""
    windows = parse_limits(import_limits)
    last = now_ms
    for project, bodies in bodies_per_project.items():
        project_windows = ImportWindows(windows, sent_ms.get(project, ()))
        last = max(last, project_windows.schedule(bodies, now_ms))
    return round((last - now_ms) / 1000, 1)


def build_plan(
    stats: dict[str, Any],
    already_imported: int,
    import_limits: str,
    ledger_dir: str | None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    log = read_request_log(ledger_dir)
    plan: dict[str, Any] = {name: stats[name] for name in _COUNTS}
    plan["already_imported"] = already_imported
    plan["estimated_seconds"] = estimated_seconds(
        stats["bodies_per_project"], import_limits, log.sent_ms, now_ms
    )
    plan["import_limits"] = import_limits
    plan["bodies_per_project"] = dict(sorted(stats["bodies_per_project"].items()))
    plan["created_ms"] = now_ms
    return plan


def format_plan(plan: dict[str, Any]) -> str:
    lines = ["import plan"]
    lines += [f"  {name:<18}{plan[name]:>12}" for name in (*_COUNTS, "already_imported")]
    lines.append(f"  {'estimated_seconds':<18}{plan['estimated_seconds']:>12}")
    lines.append(f"  limits            {plan['import_limits']}")
    return "\n".join(lines)


def _write_plan(
    stats: dict[str, Any],
    already_imported: int,
    output_dir: str,
    import_limits: str,
    ledger_dir: str | None,
) -> dict[str, Any]:
    plan = build_plan(stats, already_imported, import_limits, ledger_dir)
    write_immutable(
        FileSystems.join(output_dir, PLAN_FILE), (json.dumps(plan, indent=2) + "\n").encode()
    )
    print(format_plan(plan), flush=True)
    return plan


class MakePlan(beam.PTransform):
    """(project, [ImportBody]) and the ledger's per-device skip counts to one plan, written to
    `<output>/plan.json` and printed; the plan is the output, a singleton."""

    def __init__(
        self,
        output_dir: str,
        import_limits: str,
        ledger_dir: str | None,
        already_delivered: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.import_limits = import_limits
        self.ledger_dir = ledger_dir
        self.already_delivered = already_delivered

    def expand(self, bodies):
        stats = (
            bodies
            | "BodyStats" >> beam.Map(body_stats)
            | "SumStats" >> beam.CombineGlobally(_SumStatsFn())
        )
        skipped = (
            self.already_delivered
            if self.already_delivered is not None
            else bodies.pipeline | "NoLedger" >> beam.Create([0])
        )
        already = skipped | "SumAlreadyImported" >> beam.CombineGlobally(sum)
        return stats | "WritePlan" >> beam.Map(
            _write_plan,
            beam.pvalue.AsSingleton(already),
            self.output_dir,
            self.import_limits,
            self.ledger_dir,
        )
