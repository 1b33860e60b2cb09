"""The run report: where every input event ended (SPEC §10), from the pipeline's metrics."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipeline.file_records import DAMAGED_FILES_METRIC
from pipeline.replay import REPLAY_SKIPPED
from pipeline.samples import dead_letter_samples
from transforms.core.records import DEAD_LETTER_REASONS, METRICS_NAMESPACE
from transforms.delivery.circuit import UNREACHABLE_SERVICES, circuit_open_metric
from transforms.delivery.file_sink import dead_letter_metric
from transforms.delivery.sink import DROPPED, HTTP_STATUS_PREFIX, THROTTLED_WALL_MS

REPORT_FILE = "report.json"
FILTERED_PREFIX = "filtered_"
NEXT_RUN_AFTER_METRIC = "next_run_after_ms"


def counters_of(metrics: MetricResults) -> dict[str, int]:
    """This pipeline's counters by name, committed values where the runner has them."""
    results = metrics.query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for counter in results["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def damaged_files_of(metrics: MetricResults) -> list[str]:
    """The input files that could not be read to their end, in order."""
    name_filter = MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(DAMAGED_FILES_METRIC)
    files: set[str] = set()
    for result in metrics.query(name_filter).get(MetricResults.STRINGSETS, []):
        files.update(result.committed or result.attempted or ())
    return sorted(files)


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


def report_of(metrics: MetricResults, elapsed_seconds: float) -> dict[str, Any]:
    """The run report from a pipeline result's metrics."""
    report = build_report(counters_of(metrics), elapsed_seconds, next_run_after_of(metrics))
    report["damaged_files"] = damaged_files_of(metrics)
    return report


def run_report(result: PipelineResult, elapsed_seconds: float, output_dir: str) -> dict[str, Any]:
    """The report of a finished run, with one dead letter per reason read back from its files."""
    report = report_of(result.metrics(), elapsed_seconds)
    report["dead_letter_samples"] = dead_letter_samples(output_dir, report["dead_letter_reasons"])
    return report


def build_report(
    counters: dict[str, int], elapsed_seconds: float, next_run_after: str | None = None
) -> dict[str, Any]:
    """Where every input event ended, then how delivery went (SPEC §16; README "The report").

    `elapsed_seconds` is the run's wall time. `dead_letter_samples` is left empty: run_report
    fills it from the files the run wrote.
    """
    report: dict[str, Any] = {
        name: counters.get(name, 0)
        for name in ("input", "sent", "filtered", "dead_lettered", "deferred")
    }
    report["filtered_reasons"] = filtered_reasons(counters)
    report["dead_letter_reasons"] = {
        reason: counters[dead_letter_metric(reason)]
        for reason in DEAD_LETTER_REASONS
        if counters.get(dead_letter_metric(reason))
    }
    if counters.get(REPLAY_SKIPPED):
        report["skipped"] = counters[REPLAY_SKIPPED]
    # Import (SPEC §14): events left for the next run, and when the limits allow it.
    report["next_run_after"] = next_run_after
    report["balanced"] = report["input"] == (
        report["sent"] + report["filtered"] + report["dead_lettered"] + report["deferred"]
    )
    report.update(delivery_figures(counters, elapsed_seconds, report["sent"]))
    report["dead_letter_samples"] = {}
    report["damaged_files"] = []
    report["unreachable"] = [
        service for service in UNREACHABLE_SERVICES if counters.get(circuit_open_metric(service))
    ]
    return report


def filtered_reasons(counters: dict[str, int]) -> dict[str, int]:
    """The `filtered_<reason>` counters beside `filtered`, by reason."""
    return {
        name.removeprefix(FILTERED_PREFIX): value
        for name, value in sorted(counters.items())
        if name.startswith(FILTERED_PREFIX) and value
    }


def http_statuses(counters: dict[str, int]) -> dict[str, int]:
    """Woopra's answers by status, in status order, dropped connections last."""
    answers = {
        name.removeprefix(HTTP_STATUS_PREFIX): value
        for name, value in counters.items()
        if name.startswith(HTTP_STATUS_PREFIX) and value
    }
    return dict(sorted(answers.items(), key=lambda item: (item[0] == DROPPED, item[0])))


def delivery_figures(counters: dict[str, int], wall_seconds: float, sent: int) -> dict[str, Any]:
    """Answers, retries, time held back by the rate cap and 429s, and the rate achieved.

    Requests are HTTP requests made, retries included (what --rate_limit caps); with the
    file sink, the requests written.
    """
    answers = http_statuses(counters)
    requests = sum(answers.values()) if answers else sent
    return {
        "http_statuses": answers,
        "retries": counters.get("retries", 0),
        "throttled_seconds": round(counters.get(THROTTLED_WALL_MS, 0) / 1000, 3),
        "requests_per_second": round(requests / wall_seconds, 1) if wall_seconds > 0 else 0.0,
        "wall_seconds": round(wall_seconds, 3),
    }


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
        + f" rate={report.get('requests_per_second', 0)}/s"
    )


def format_report(report: dict[str, Any]) -> str:
    """The summary printed at the end of a run: where the events went, then how delivery
    went, then what went wrong with one example each (as Hightouch and Census show a sync)."""
    lines = ["run report", *_count_rows(report), ""]
    lines += ["delivery", *_delivery_rows(report)]
    problems = _problem_rows(report)
    if problems:
        lines += ["", "what stopped the run", *problems]
    if report["dead_letter_reasons"]:
        lines += ["", "what went wrong (one example each)"]
        lines += _sample_rows(report)
    return "\n".join(lines)


def _row(label: str, value: Any, unit: str = "", indent: int = 2) -> str:
    return f"{' ' * indent}{label:<{26 - indent}}{value:>10}{' ' + unit if unit else ''}"


def _count_rows(report: dict[str, Any]) -> list[str]:
    rows = [_row("input", report["input"]), _row("sent", report["sent"])]
    rows.append(_row("filtered", report["filtered"]))
    rows += [_row(r, n, indent=4) for r, n in report["filtered_reasons"].items()]
    below = "(by reason below)" if report["dead_letter_reasons"] else ""
    rows.append(_row("dead-lettered", report["dead_lettered"], below))
    if report.get("deferred") or report.get("next_run_after"):
        rows.append(_row("deferred", report["deferred"], "left for the next run"))
        rows.append(f"    next run after {report['next_run_after']}")
    if "skipped" in report:
        rows.append(_row("skipped", report["skipped"], "not replayable, outside input"))
    verdict = "counts add up" if report["balanced"] else "COUNTS DO NOT ADD UP"
    rows.append(f"  {verdict}: sent + filtered + dead-lettered = input")
    return rows


def _delivery_rows(report: dict[str, Any]) -> list[str]:
    answers = report["http_statuses"]
    rows = []
    if answers:
        rows.append(_row("requests", sum(answers.values())))
        rows += [_row(status, n, indent=4) for status, n in answers.items()]
    rows.append(_row("retries", report["retries"]))
    rows.append(_row("throttled", f"{report['throttled_seconds']:.1f}", "s"))
    rows.append(_row("wall time", f"{report['wall_seconds']:.1f}", "s"))
    rows.append(_row("rate", f"{report['requests_per_second']:.1f}", "requests/s"))
    return rows


def _problem_rows(report: dict[str, Any]) -> list[str]:
    rows = [f"  damaged file   {path}" for path in report.get("damaged_files", [])]
    rows += [f"  unreachable    {service}" for service in report.get("unreachable", [])]
    if report.get("interrupted"):
        rows.append(f"  interrupted by {report['interrupted']}")
    return rows


def _sample_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for reason, count in report["dead_letter_reasons"].items():
        sample = report["dead_letter_samples"].get(reason)
        if sample is None:
            rows.append(_row(reason, count))
            continue
        status = f" HTTP {sample['status']}" if sample.get("status") else ""
        rows.append(f"{_row(reason, count)}  {sample.get('stage')}{status}: {sample.get('detail')}")
        rows.append(f"      e.g. {_one_line(sample.get('event'))}")
    return rows


def _one_line(event: Any, width: int = 90) -> str:
    text = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
