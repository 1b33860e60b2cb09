"""Every DoFn pickles and runs in several worker processes, as on a remote runner (SPEC §10)."""

from __future__ import annotations

import json

import pytest

from pipeline.stub import WoopraStub
from tests.helpers import SAMPLE_FLAGS, TESTDATA, device_of, run_pipeline

pytestmark = pytest.mark.slow

MULTI_PROCESS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def _sent_to_stub(tmp_path, *flags: str) -> tuple[dict, dict[str, list[str]]]:
    """The report, and per device the requests the stub received, in arrival order."""
    with WoopraStub() as stub:
        report = run_pipeline(
            ["--input", str(TESTDATA / "events.jsonl"), *SAMPLE_FLAGS, *flags,
             "--woopra_base_url", stub.url, "--output", str(tmp_path)]
        )  # fmt: skip
        records = stub.records
    by_device: dict[str, list[str]] = {}
    for record in records:
        assert record["status"] == 200
        line = json.dumps([record["path"], record["params"]], sort_keys=True)
        by_device.setdefault(device_of(record["params"]), []).append(line)
    return report, by_device


def test_two_worker_processes_send_the_same_requests_as_the_default_run(tmp_path):
    default_report, default_requests = _sent_to_stub(tmp_path / "default")
    report, requests = _sent_to_stub(tmp_path / "multi", *MULTI_PROCESS)
    assert requests == default_requests  # the same requests, each device's in the same order
    assert sum(map(len, requests.values())) == report["sent"] == 12
    counts = ("input", "sent", "filtered", "dead_lettered", "dead_letter_reasons")
    assert {k: report[k] for k in counts} == {k: default_report[k] for k in counts}
