"""Credentials in URLs never reach what is written or logged (SPEC §9 "Secrets")."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from tests.helpers import read_json_lines, write_lines
from transforms.core.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@woopra.example/x?y=1", "https://user:***@woopra.example/x?y=1"),
        ("https://token@woopra.example", "https://***@woopra.example"),
        ("https://u:p@ss@woopra.example:8443/", "https://u:***@woopra.example:8443/"),
        ("https://www.woopra.com", "https://www.woopra.com"),
    ],
)
def test_redact_url_hides_the_password_or_a_bare_token(url, shown):
    assert redact_url(url) == shown


def test_spec_8_dry_run_endpoint_has_no_password_and_nothing_written_or_printed_has(
    tmp_path, capsys
):
    events = write_lines(
        tmp_path / "events.jsonl",
        [json.dumps({"type": "track", "event": "e", "anonymousId": "a", "messageId": "m1"})],
    )
    output = tmp_path / "out"
    code = main(
        ["--input", str(events), "--sink", "file", "--output", str(output), "--project_name", "p",
         "--woopra_base_url", "https://user:s3cret@woopra.example"]
    )  # fmt: skip
    assert code == 0
    [[request]] = read_json_lines(output, "requests")
    assert request["endpoint"] == "https://user:***@woopra.example/track/ce"
    printed = capsys.readouterr()
    assert "s3cret" not in printed.out + printed.err
    assert all("s3cret" not in path.read_text() for path in output.iterdir())
