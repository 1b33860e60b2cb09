"""`woopra-pipeline replay` (SPEC §16): dead letters sent again through the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.replay import replay_record
from pipeline.stub import WoopraStub
from tests.helpers import SAMPLE_FLAGS, TESTDATA, load_json_lines
from transforms.delivery.ledger import read_keys

SAMPLE = str(TESTDATA / "events.jsonl")


def run_cli(*args: str) -> tuple[int, dict]:
    output = args[args.index("--output") + 1]
    code = main(list(args))
    return code, json.loads((Path(output) / "report.json").read_text())


def dead_letters(output: Path) -> list[dict]:
    return [d for f in sorted(output.glob("dead_letters-*.jsonl")) for d in load_json_lines(f)]


def sent_requests(stub: WoopraStub) -> list[tuple[str, str]]:
    return sorted(
        (record["path"], json.dumps(record["params"], sort_keys=True))
        for record in stub.records
        if record["status"] == 200
    )


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """The sample run against a Woopra that answers every request 503."""
    output = tmp_path_factory.mktemp("failed")
    with WoopraStub(fail_rate=1.0) as stub:
        code, report = run_cli(
            "--input", SAMPLE, *SAMPLE_FLAGS, "--woopra_base_url", stub.url,
            "--max_attempts", "2", "--output", str(output),
        )  # fmt: skip
    assert code == 0
    assert report["sent"] == 0
    assert report["dead_letter_reasons"]["retries_exhausted"] == 12
    assert report["http_statuses"] == {"503": 24}
    assert report["retries"] == 12
    return output, report


@pytest.fixture(scope="module")
def direct_requests(tmp_path_factory) -> list[tuple[str, str]]:
    """What the sample run sends to a healthy Woopra."""
    with WoopraStub() as direct:
        run_cli(
            "--input", SAMPLE, *SAMPLE_FLAGS, "--woopra_base_url", direct.url,
            "--output", str(tmp_path_factory.mktemp("direct")),
        )  # fmt: skip
        return sent_requests(direct)


def test_spec_16_dead_letters_of_a_failing_woopra_replayed_to_a_healthy_one_arrive_once(
    failed_run, direct_requests, tmp_path
):
    failed, _ = failed_run
    with WoopraStub() as healthy:
        code, report = run_cli(
            "replay", "--dead_letters", str(failed / "dead_letters-*.jsonl"),
            "--reason", "retries_exhausted", *SAMPLE_FLAGS,
            "--woopra_base_url", healthy.url, "--output", str(tmp_path / "replay"),
        )  # fmt: skip
        replayed = sent_requests(healthy)
    assert code == 0
    assert len(replayed) == 12
    assert replayed == direct_requests  # each once, stitched as in a healthy first run
    assert (report["input"], report["sent"], report["dead_lettered"]) == (12, 12, 0)
    assert report["http_statuses"] == {"200": 12}
    assert report["balanced"]


def test_spec_16_replay_of_every_reason_accounts_for_each_and_skips_unreadable_files(
    failed_run, tmp_path
):
    failed, first = failed_run
    letters = tmp_path / "letters"
    letters.mkdir()
    lines = (failed / "dead_letters-00000-of-00001.jsonl").read_text().splitlines()
    unreadable = {"message_id": None, "stage": "read", "reason": "unreadable_file",
                  "detail": "in.avro: 3 records read", "status": None, "attempts": 0,
                  "event": None}  # fmt: skip
    (letters / "dead_letters-1.jsonl").write_text("\n".join([*lines, json.dumps(unreadable)]))
    with WoopraStub() as healthy:
        code, report = run_cli(
            "replay", "--dead_letters", str(letters / "*.jsonl"), *SAMPLE_FLAGS,
            "--woopra_base_url", healthy.url, "--output", str(tmp_path / "replay"),
        )  # fmt: skip
    assert code == 0
    assert report["skipped"] == 1  # outside input
    assert report["input"] == len(lines) == first["dead_lettered"]
    assert report["sent"] == 12
    # The parse and map failures fail again, for the same reasons, as new dead letters.
    again = {k: v for k, v in first["dead_letter_reasons"].items() if k != "retries_exhausted"}
    assert report["dead_letter_reasons"] == again
    assert len(dead_letters(tmp_path / "replay")) == report["dead_lettered"]
    assert report["balanced"]


def test_replay_records_give_raw_text_back_and_events_as_json():
    raw = {"reason": "invalid_json", "stage": "parse", "event": '{"type": "tr'}
    mapped = {"reason": "http_4xx", "stage": "send", "event": {"type": "track", "é": 1}}
    assert replay_record(json.dumps(raw).encode(), frozenset()) == (b'{"type": "tr', False)
    assert replay_record(json.dumps(mapped).encode(), frozenset()) == (
        '{"type":"track","é":1}'.encode(),
        False,
    )
    assert replay_record(json.dumps(mapped).encode(), frozenset({"invalid_json"})) == (None, False)
    assert replay_record(b"not a dead letter", frozenset()) == (b"not a dead letter", False)


def test_spec_16_replay_with_a_ledger_leaves_out_what_it_holds_and_records_what_it_sends(
    failed_run, direct_requests, tmp_path
):
    """SPEC §15 and §16: a replay takes --ledger like any run. The dead letters of some devices
    are replayed first; replaying them all then sends only the others, and a third replay
    sends nothing."""
    failed, _ = failed_run
    lines = [
        line
        for path in sorted(failed.glob("dead_letters-*.jsonl"))
        for line in path.read_text().splitlines()
        if json.loads(line)["reason"] == "retries_exhausted"
    ]
    first_devices = {"anon-alice", "anon-bob"}
    first_lines = [line for line in lines if json.loads(line)["event"].get("anonymousId")
                   in first_devices]  # fmt: skip
    assert 0 < len(first_lines) < len(lines) == 12
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "dead_letters-1.jsonl").write_text("\n".join(first_lines) + "\n")
    ledger = tmp_path / "ledger"

    def replay(glob: str, output: str, stub: WoopraStub) -> dict:
        code, report = run_cli(
            "replay", "--dead_letters", glob, "--reason", "retries_exhausted", *SAMPLE_FLAGS,
            "--woopra_base_url", stub.url, "--ledger", str(ledger),
            "--output", str(tmp_path / output),
        )  # fmt: skip
        assert code == 0
        assert report["balanced"]
        return report

    all_letters = str(failed / "dead_letters-*.jsonl")
    with WoopraStub() as stub:
        first = replay(str(tmp_path / "some" / "*.jsonl"), "first", stub)
        first_sent = sent_requests(stub)
        assert len(read_keys(str(ledger))) == len(first_lines)  # recorded as delivered
        second = replay(all_letters, "second", stub)
        after_second = sent_requests(stub)
        third = replay(all_letters, "third", stub)
        after_third = sent_requests(stub)
    assert (first["sent"], first["filtered_reasons"].get("already_delivered")) == (
        len(first_lines),
        None,
    )
    assert second["input"] == 12
    assert second["sent"] == 12 - len(first_lines)
    assert second["filtered_reasons"] == {"already_delivered": len(first_lines)}
    assert sorted(after_second) == direct_requests  # every event once, stitched as in a first run
    assert len(after_second) == len(first_sent) + second["sent"]
    assert (third["input"], third["sent"]) == (12, 0)
    assert third["filtered_reasons"] == {"already_delivered": 12}
    assert after_third == after_second  # the third replay sent nothing
    assert len(read_keys(str(ledger))) == 12
