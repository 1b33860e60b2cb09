"""The graphs a Dataflow job is made of, built offline, and the Flex Template's metadata."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.arguments import woopra_actions
from pipeline.builder import build_pipeline
from pipeline.flex_template import metadata

ROOT = Path(__file__).resolve().parent.parent
METADATA = ROOT / "flex_template" / "metadata.json"

# Beam's dry run builds the whole job without submitting it or checking GCS; bucket names it
# accepts keep it from looking up a default bucket.
DATAFLOW = [
    "--runner", "DataflowRunner", "--project", "my-project", "--region", "europe-west1",
    "--temp_location", "gs://my-bucket/tmp", "--max_num_workers", "4", "--dry_run", "true",
    "--experiments=no_use_multiple_sdk_containers", "--project_name", "example.com",
    "--output", "gs://my-bucket/woopra",
]  # fmt: skip
# One line per kind of job; (source flags, Dataflow's job type: 1 batch, 2 streaming).
GRAPHS = {
    "batch": (["--input", "gs://my-bucket/exports/*.jsonl"], 1),
    "streaming": (["--input_subscription", "projects/my-project/subscriptions/events"], 2),
    "replay": (["--dead_letters", "gs://my-bucket/woopra/dead_letters-*.jsonl"], 1),
    "import": (["--input", "gs://my-bucket/exports/*.jsonl", "--mode", "import"], 1),
}
# The steps each graph must hold, by their stable labels (Dataflow --update matches them).
TRACKING_STEPS = {"ReadEvents", "ParseEvents", "MapToWoopra", "WriteToWoopra"}
STEPS = {
    "import": {"ReadEvents", "ParseEvents", "BuildVisits", "PackBodies", "SendImportBodies"},
}


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails the test."""

    def refuse(self, address):
        raise AssertionError(f"the graph tried to reach {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.mark.parametrize("kind", list(GRAPHS))
def test_the_job_graph_builds_with_dataflow_options_without_network(kind, no_network, monkeypatch):
    # Import mode refuses to start without its credentials; the graph never holds them.
    monkeypatch.setenv("WOOPRA_APP_ID", "graph-test-app")
    monkeypatch.setenv("WOOPRA_SECRET_KEY", "graph-test-secret")
    source, job_type = GRAPHS[kind]
    pipeline = build_pipeline(PipelineOptions([*DATAFLOW, *source]))
    proto = pipeline.to_runner_api()
    labels = {t.unique_name for t in proto.components.transforms.values()}
    assert STEPS.get(kind, TRACKING_STEPS) <= labels
    assert "graph-test-secret" not in str(proto)
    result = pipeline.run()  # DataflowRunner, dry run: the job request, not sent
    assert result.job.proto.type == job_type


def test_metadata_json_lists_every_option_with_help_text_and_regex():
    committed = json.loads(METADATA.read_text())
    names = [p["name"] for p in committed["parameters"]]
    options = [action.dest for action in woopra_actions()]
    assert names == options, "run: python -m pipeline.flex_template > flex_template/metadata.json"
    for parameter in committed["parameters"]:
        assert parameter["helpText"], parameter["name"]
        assert parameter["regexes"], parameter["name"]
    assert committed == metadata()


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("input", "gs://bucket/exports/2024-*.jsonl.gz", "exports/*.jsonl"),
        ("input_subscription", "projects/p/subscriptions/s", "p/s"),
        ("sink", "file", "files"),
        ("rate_limit", "100", "fast"),
        ("identity_ttl", "30d", "a month"),
        ("no_stitch_identity", "true", "yes"),
    ],
)
def test_metadata_regexes_tell_good_values_from_bad(name, good, bad):
    (parameter,) = [p for p in metadata()["parameters"] if p["name"] == name]
    (regex,) = parameter["regexes"]
    assert re.fullmatch(regex, good)
    assert not re.fullmatch(regex, bad)
