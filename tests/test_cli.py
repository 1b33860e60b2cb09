"""`woopra-pipeline` as a user runs it: --help, mistyped flags and user errors (SPEC §16 exit 2)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.arguments import all_options_parser, closest_flag, flag_names, normalize_switches
from pipeline.options import WoopraOptions
from tests.helpers import SAMPLE_FLAGS, TESTDATA

SAMPLE = str(TESTDATA / "events.jsonl")


def woopra_flags() -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    WoopraOptions._add_argparse_args(parser)
    return [name for action in parser._actions for name in action.option_strings]


def cli(
    *args: str, cwd: Path | None = None, temp_dir: Path | None = None
) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; with `temp_dir`, that is where it makes its temporary files."""
    env = None if temp_dir is None else {**os.environ, "TMPDIR": str(temp_dir)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_help_lists_every_option_grouped_with_defaults_before_beams():
    completed = cli("--help")
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    beam_section = text.index("Apache Beam options")
    for flag in woopra_flags():
        assert -1 < text.find(flag + " ") < beam_section, flag
    for group in ("input:", "mapping:", "delivery:", "streaming:", "replay"):
        assert text.index(group) < beam_section
    words = " ".join(text.split())
    assert "Where requests are sent. (default: https://www.woopra.com)" in words
    assert "(e.g. 30d). (default: 30d)" in words  # a duration shown as one
    assert text.index("--runner") > beam_section
    assert "--temp_location" in text


def _assert_refused(completed: subprocess.CompletedProcess, *fragments: str) -> None:
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("woopra-pipeline: ")
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert completed.stdout == ""


def test_spec_16_a_mistyped_flag_exits_2_naming_the_right_one_before_anything_is_sent():
    completed = cli("--input", SAMPLE, "--woopra-base-url", "http://127.0.0.1:9", "--sink", "file")
    _assert_refused(completed, "unknown flag --woopra-base-url", "did you mean --woopra_base_url")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("--woopra-base-url", "--woopra_base_url"),
        ("--Rate_Limit", "--rate_limit"),
        ("--max_inflight", "--max_in_flight"),
        ("--dead_leter_topic", "--dead_letter_topic"),
        ("--temp-location", "--temp_location"),  # Beam's own flags too
    ],
)
def test_the_closest_known_flag_is_named(typo, meant):
    assert closest_flag(typo, flag_names(all_options_parser())) == meant


def test_flex_template_switches_take_true_or_false():
    assert normalize_switches(["--no_stitch_identity=true", "--input=x"]) == [
        "--no_stitch_identity",
        "--input=x",
    ]
    assert normalize_switches(["--no_stitch_identity=false"]) == []


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("missing_input", ["--input", "matches no file"]),
        ("directory_input", ["is a directory", "*.jsonl"]),
        ("output_is_a_file", ["--output", "is a file"]),
        ("bad_value", ["--rate_limit", "invalid float value"]),
        ("stray_argument", ["unexpected argument 'oops'"]),
        ("no_source", ["exactly one of"]),
        ("replay_without_dead_letters", ["replay needs --dead_letters"]),
        ("replay_unknown_reason", ["--reason no_such_reason"]),
        ("replay_onto_its_own_dead_letters", ["holds the dead letters being replayed"]),
        ("pubsub_project_beam_rejects", ["Invalid PubSub project name", "local"]),
    ],
)
def test_spec_16_each_user_error_is_one_line_and_exit_2(tmp_path, case, fragments):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a directory\n")
    letters = tmp_path / "dead_letters-00000-of-00001.jsonl"
    letters.write_text('{"reason": "http_4xx", "event": {"type": "track"}}\n')
    args = {
        "missing_input": ["--input", str(tmp_path / "nothing-*.jsonl")],
        "directory_input": ["--input", str(tmp_path)],
        "output_is_a_file": ["--input", SAMPLE, "--output", str(a_file)],
        "bad_value": ["--input", SAMPLE, "--rate_limit", "fast"],
        "stray_argument": ["--input", SAMPLE, "oops"],
        "no_source": ["--sink", "file"],
        "replay_without_dead_letters": ["replay", "--sink", "file"],
        "replay_unknown_reason": [
            "replay",
            *("--dead_letters", str(letters), "--reason", "no_such_reason"),
        ],
        "replay_onto_its_own_dead_letters": [
            "replay",
            "--dead_letters",
            str(letters),
            "--output",
            str(tmp_path),
        ],
        "pubsub_project_beam_rejects": [
            "--input_subscription",
            "projects/local/subscriptions/events",
        ],
    }[case]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    _assert_refused(cli(*args, *SAMPLE_FLAGS, temp_dir=temp_dir), *fragments)
    assert list(temp_dir.iterdir()) == []  # Beam's folder for the pipeline went with it


@pytest.mark.emulator
def test_spec_16_a_subscription_that_does_not_exist_is_one_line_and_exit_2(
    pubsub_factory, tmp_path
):
    missing = f"projects/{pubsub_factory.project}/subscriptions/never-created"
    completed = cli("--input_subscription", missing, "--output", str(tmp_path), *SAMPLE_FLAGS)
    _assert_refused(completed, missing, "no such subscription")
