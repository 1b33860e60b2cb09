"""The run report: where every input event ended (SPEC §10), from the pipeline's metrics."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricResults, MetricsFilter

from pipeline.file_records import DAMAGED_FILES_METRIC
from transforms.circuit import UNREACHABLE_SERVICES, circuit_open_metric
from transforms.file_sink import dead_letter_metric
from transforms.records import DEAD_LETTER_REASONS, METRICS_NAMESPACE

REPORT_FILE = "report.json"
NEXT_RUN_AFTER_METRIC = "next_run_after_ms"
# Counters of filtered events by reason: `filtered_<reason>`.
FILTERED_PREFIX = "filtered_"
# Delivery figures the HTTP sink adds to the report when it ran.
_DELIVERY_COUNTERS = (
    "retries",
    "throttled_responses",
    "throttled_ms",
    "import_requests",
    "import_bodies_accepted",
)


def counters_of(metrics: MetricResults) -> dict[str, int]:
    """This pipeline's counters by name, committed values where the runner has them."""
    results = metrics.query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for counter in results["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def next_run_after_of(metrics: MetricResults) -> str | None:
    """When the import limits let the next run go on (SPEC §14), as ISO UTC; None if no
    sender stopped."""
    results = metrics.query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(NEXT_RUN_AFTER_METRIC)
    )
    latest = None
    for distribution in results["distributions"]:
        value = distribution.committed or distribution.attempted
        if value is not None and value.count:
            latest = max(latest or value.max, value.max)
    if latest is None:
        return None
    moment = datetime.datetime.fromtimestamp(latest / 1000, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def damaged_files_of(metrics: MetricResults) -> list[str]:
    """The input files that could not be read to their end, in order."""
    name_filter = MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(DAMAGED_FILES_METRIC)
    files: set[str] = set()
    for result in metrics.query(name_filter).get(MetricResults.STRINGSETS, []):
        files.update(result.committed or result.attempted or ())
    return sorted(files)


def report_of(metrics: MetricResults, elapsed_seconds: float) -> dict[str, Any]:
    """The run report from a pipeline result's metrics."""
    report = build_report(counters_of(metrics), elapsed_seconds, next_run_after_of(metrics))
    report["damaged_files"] = damaged_files_of(metrics)
    return report


def build_report(
    counters: dict[str, int], elapsed_seconds: float, next_run_after: str | None = None
) -> dict[str, Any]:
    """input, sent, filtered, dead_lettered and its reasons (and deferred, in import); they add
    up when nothing is lost."""
    report: dict[str, Any] = {
        name: counters.get(name, 0)
        for name in ("input", "sent", "filtered", "dead_lettered", "deferred")
    }
    report["filtered_reasons"] = {
        name[len(FILTERED_PREFIX) :]: n
        for name, n in sorted(counters.items())
        if name.startswith(FILTERED_PREFIX) and n
    }
    report["dead_letter_reasons"] = {
        reason: counters[dead_letter_metric(reason)]
        for reason in DEAD_LETTER_REASONS
        if counters.get(dead_letter_metric(reason))
    }
    report["next_run_after"] = next_run_after
    report["balanced"] = report["input"] == (
        report["sent"] + report["filtered"] + report["dead_lettered"] + report["deferred"]
    )
    report.update({name: counters[name] for name in _DELIVERY_COUNTERS if name in counters})
    report["damaged_files"] = []
    report["unreachable"] = [
        service for service in UNREACHABLE_SERVICES if counters.get(circuit_open_metric(service))
    ]
    report["elapsed_seconds"] = round(elapsed_seconds, 3)
    if elapsed_seconds > 0:
        report["sent_per_second"] = round(report["sent"] / elapsed_seconds, 1)
    return report


def write_report(report: dict[str, Any], output_dir: str) -> str:
    """report.json under --output (a local directory or any Beam filesystem path)."""
    report_path = FileSystems.join(output_dir, REPORT_FILE)
    if not FileSystems.exists(output_dir) and "://" not in output_dir:
        os.makedirs(output_dir, exist_ok=True)
    with FileSystems.create(report_path) as handle:
        handle.write((json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report_path


def format_progress(report: dict[str, Any]) -> str:
    """One log line of a streaming run's counts so far."""
    reasons = ", ".join(f"{k}={v}" for k, v in report["dead_letter_reasons"].items())
    return (
        f"input={report['input']} sent={report['sent']} filtered={report['filtered']} "
        f"dead_lettered={report['dead_lettered']}"
        + (f" ({reasons})" if reasons else "")
        + f" rate={report.get('sent_per_second', 0)}/s"
    )


def format_report(report: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lines = [
        "run report",
        f"  input          {report['input']:>10}",
        f"  sent           {report['sent']:>10}",
        f"  filtered       {report['filtered']:>10}",
        f"  dead-lettered  {report['dead_lettered']:>10}",
    ]
    lines += [f"    {reason:<20} {n:>8}" for reason, n in report["dead_letter_reasons"].items()]
    if report.get("deferred") or report.get("next_run_after"):
        lines.append(f"  deferred       {report['deferred']:>10}")
        lines.append(f"  next run after {report['next_run_after']}")
    lines += [f"  {name:<15}{report[name]:>10}" for name in _DELIVERY_COUNTERS if name in report]
    lines.append(f"  elapsed        {report['elapsed_seconds']:>10} s")
    if "sent_per_second" in report:
        lines.append(f"  achieved rate  {report['sent_per_second']:>10} requests/s")
    lines += [f"  damaged file   {path}" for path in report.get("damaged_files", [])]
    lines += [f"  unreachable    {service}" for service in report.get("unreachable", [])]
    if report.get("interrupted"):
        lines.append(f"  interrupted by {report['interrupted']}")
    verdict = "counts add up" if report["balanced"] else "COUNTS DO NOT ADD UP"
    lines.append(f"  {verdict}: sent + filtered + dead-lettered = input")
    return "\n".join(lines)
