"""Shared test helpers: running the pipeline on real files and reading what it wrote."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import build_pipeline
from pipeline.report import report_of

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
# The flags ./run_local.sh gives the main job; the golden files were made with them.
SAMPLE_FLAGS = [
    "--project_name",
    "demo.example.com",
    "--consent_category",
    "C0004",
    "--deny_event",
    "Internal Test",
]


def run_pipeline(args: list[str]) -> dict[str, Any]:
    """Build and run the pipeline with CLI-style args; the run report."""
    result = build_pipeline(PipelineOptions(args)).run()
    result.wait_until_finish()
    return report_of(result.metrics(), elapsed_seconds=0)


def run_file_sink(input_glob: str, output_dir: Path, *flags: str) -> dict[str, Any]:
    """The dry-run pipeline over files; the run report."""
    return run_pipeline(
        ["--input", input_glob, "--sink", "file", "--output", str(output_dir), *flags]
    )


def read_json_lines(output_dir: Path, prefix: str) -> list[list[dict[str, Any]]]:
    """Each output file's JSON lines, one list per file."""
    files = sorted(glob.glob(os.path.join(output_dir, f"{prefix}-*.jsonl")))
    return [load_json_lines(Path(f)) for f in files]


def load_json_lines(path: Path) -> list[Any]:
    """The JSON values of a JSON-lines file, blank lines skipped."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def device_of(params: dict[str, Any]) -> str:
    """The device key a request was sent under (SPEC §4)."""
    for name in ("cookie", "cv_id", "cv_email"):
        if name in params:
            return f"{name}:{params[name]}"
    raise AssertionError(f"request without identity: {params}")


def requests_by_device(files: list[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Requests grouped by device, asserting each device's requests are consecutive in one file."""
    devices: dict[str, list[dict[str, Any]]] = {}
    for lines in files:
        previous = None
        for request in lines:
            device = device_of(request["params"])
            if device != previous:
                assert device not in devices, f"{device} is split across the output"
                devices[device] = []
            devices[device].append(request)
            previous = device
    return devices


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    """A real JSON-lines file from text or raw bytes lines."""
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


VISIT_START_MS = 1_709_280_000_000  # 2024-03-01T08:00:00Z


def visitor_events(
    visitors: int, visits: int, per_visit: int, project: str = "demo.example.com"
) -> list[dict[str, Any]]:
    """Events of `visitors` devices, each with `visits` visits (two hours apart) of `per_visit`
    events (five minutes apart): an identify first in every visit, then tracks and pages."""
    events = []
    for v in range(visitors):
        for visit in range(visits):
            start = VISIT_START_MS + visit * 7_200_000 + v * 1000
            for n in range(per_visit):
                event: dict[str, Any] = {
                    "anonymousId": f"anon-{v:05d}",
                    "messageId": f"v{v:05d}-{visit:02d}-{n:03d}",
                    "originalTimestamp": start + n * 300_000,
                    "integrations": {"Woopra": {"projectName": project}},
                }
                if n == 0:
                    event.update(type="identify", userId=f"user-{v}", traits={"plan": "pro"})
                elif n % 3 == 0:
                    event.update(type="page", name="Pricing", properties={"path": "/pricing"})
                else:
                    event.update(type="track", event="Step", properties={"n": n, "v": v})
                events.append(event)
    return events


def write_event_files(folder: Path, events: list[dict[str, Any]], files: int) -> str:
    """`events` spread round-robin over `files` JSON-lines files; the glob that reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        lines = [json.dumps(event) for event in events[index::files]]
        write_lines(folder / f"part-{index}.jsonl", lines)
    return str(folder / "*.jsonl")
