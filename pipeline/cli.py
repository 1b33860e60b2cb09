"""`woopra-pipeline`: build, run, and report where every event ended."""

from __future__ import annotations

import logging
import sys
import time

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import build_pipeline
from pipeline.options import WoopraOptions
from pipeline.report import build_report, counters_of, format_report, write_report

_LOGGER = logging.getLogger("woopra")


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline to the end (batch) or until stopped (streaming); print the report."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    options = PipelineOptions(sys.argv[1:] if argv is None else argv)
    try:
        pipeline = build_pipeline(options)
    except ValueError as err:
        print(f"woopra-pipeline: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    result = pipeline.run()
    result.wait_until_finish()
    report = build_report(counters_of(result.metrics()), time.monotonic() - started)
    report_path = write_report(report, options.view_as(WoopraOptions).output)
    print(format_report(report))
    _LOGGER.info("report written to %s", report_path)
    return 0 if report["balanced"] else 1
