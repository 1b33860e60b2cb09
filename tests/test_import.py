"""Import mode end to end (SPEC §14, §15): the CLI on real files against the loopback stub."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.stub import WoopraStub
from tests.helpers import load_json_lines, read_json_lines, visitor_events, write_event_files
from transforms.delivery.ledger import LedgerWriter, read_keys

APP_ID = "app-7d1c"
SECRET = "s3cr3t-9f2e-never-printed"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("WOOPRA_APP_ID", APP_ID)
    monkeypatch.setenv("WOOPRA_SECRET_KEY", SECRET)


def import_stub(**kwargs) -> WoopraStub:
    return WoopraStub(import_credentials=f"{APP_ID}:{SECRET}", **kwargs)


def import_args(input_glob: str, output: Path, *flags: str) -> list[str]:
    return ["--input", input_glob, "--mode", "import", "--output", str(output), *flags]


def report_of(output: Path) -> dict:
    return json.loads((output / "report.json").read_text())


def accepted_lines(records: list[dict]) -> list[dict]:
    """The NDJSON lines of every body the stub accepted."""
    return [
        json.loads(line)
        for record in records
        if record["path"] == "/rest/3.0/import" and record["status"] == 200
        for line in record["body"].split("\n")
    ]


def message_ids_of(lines: list[dict], events: list[dict]) -> Counter:
    """How often each event was imported: matched by (visitor, action time) and for visitor
    updates by visitor, using the generator's one-event-per-time layout."""
    by_time = {(e["anonymousId"], e["originalTimestamp"]): e["messageId"] for e in events}
    counts: Counter = Counter()
    for line in lines:
        cookie = line["visitor"]["cookie"]
        for action in line.get("actions", []):
            counts[by_time[(cookie, action["time"])]] += 1
    return counts


def windows_held(records: list[dict], limits: list[tuple[int, float]]) -> bool:
    """No window (t - L, t] of the stub's arrival times holds more than its count."""
    times = sorted(r["ts"] for r in records if r["path"] == "/rest/3.0/import")
    for count, seconds in limits:
        start = 0
        for end, t in enumerate(times):
            while times[start] <= t - seconds:
                start += 1
            if end - start + 1 > count:
                return False
    return True


def test_spec_14_the_same_input_over_several_shuffled_files_gives_byte_identical_bodies(
    tmp_path,
):
    events = visitor_events(visitors=40, visits=3, per_visit=4)
    first = write_event_files(tmp_path / "in1", events, files=2)
    shuffled = events[:]
    random.Random(9).shuffle(shuffled)
    second = write_event_files(tmp_path / "in2", shuffled, files=5)
    flags = ("--sink", "file", "--import_batch_bytes", "4000")
    assert main(import_args(first, tmp_path / "out1", *flags)) == 0
    assert main(import_args(second, tmp_path / "out2", *flags)) == 0
    bodies1 = {p.name: p.read_bytes() for p in (tmp_path / "out1").glob("import-*.ndjson")}
    bodies2 = {p.name: p.read_bytes() for p in (tmp_path / "out2").glob("import-*.ndjson")}
    assert len(bodies1) > 5
    assert bodies1 == bodies2
    assert all(len(body) <= 4000 and not body.endswith(b"\n") for body in bodies1.values())
    plan = json.loads((tmp_path / "out1" / "plan.json").read_text())
    assert plan["bodies"] == len(bodies1)
    assert plan["bytes"] == sum(len(body) for body in bodies1.values())
    assert (plan["events"], plan["visitors"], plan["visits"]) == (480, 40, 120)
    report = report_of(tmp_path / "out1")
    assert report["sent"] == 480
    assert report["balanced"]


def test_spec_14_every_event_in_one_accepted_body_and_every_window_held(tmp_path, credentials):
    events = visitor_events(visitors=30, visits=2, per_visit=4)
    glob = write_event_files(tmp_path / "in", events, files=3)
    with import_stub(import_limits="4/2s") as stub:
        code = main(
            import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url,
                        "--import_batch_bytes", "1500", "--import_limits", "4/2s")
        )  # fmt: skip
        records = stub.records
    assert code == 0
    assert all(r["status"] == 200 for r in records)
    assert len(records) > 8
    assert windows_held(records, [(4, 2.0)])
    tracked = [e for e in events if e["type"] != "identify"]
    assert message_ids_of(accepted_lines(records), events) == Counter(
        e["messageId"] for e in tracked
    )
    lines = accepted_lines(records)
    visits = Counter(line["visitor"]["cookie"] for line in lines if "actions" in line)
    assert set(visits.values()) == {2}
    assert all(line["visitor"]["id"].startswith("user-") for line in lines)
    report = report_of(tmp_path / "out")
    assert report["sent"] == len(events)
    assert sum(report["http_statuses"].values()) == len(records)
    assert report["balanced"]


def test_spec_14_a_413_halves_the_body_and_a_one_line_413_is_request_too_large(
    tmp_path, credentials
):
    events = visitor_events(visitors=12, visits=1, per_visit=3)
    big = {"type": "track", "event": "big", "anonymousId": "anon-big", "messageId": "big-1",
           "originalTimestamp": 1_709_280_000_000, "properties": {"blob": "x" * 900},
           "integrations": {"Woopra": {"projectName": "demo.example.com"}}}  # fmt: skip
    glob = write_event_files(tmp_path / "in", [*events, big], files=2)
    with import_stub(import_max_bytes=700) as stub:
        code = main(import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url))
        records = stub.records
    assert code == 0
    first = records[0]
    assert first["status"] == 413
    # each 413 is followed by its first ceil(n/2) lines, then the rest
    statuses = [r["status"] for r in records]
    assert statuses.count(413) >= 3
    accepted = [r for r in records if r["status"] == 200]
    assert all(len(r["body"].encode()) <= 700 for r in accepted)
    second = records[1]
    assert second["body_lines"] == (first["body_lines"] + 1) // 2
    assert first["body"].startswith(second["body"])
    assert message_ids_of(accepted_lines(records), events) == Counter(
        e["messageId"] for e in events if e["type"] != "identify"
    )
    (letter,) = [d for lines in read_json_lines(tmp_path / "out", "dead_letters") for d in lines]
    assert (letter["message_id"], letter["reason"], letter["status"]) == (
        "big-1", "request_too_large", 413,
    )  # fmt: skip
    assert report_of(tmp_path / "out")["balanced"]


def test_spec_14_a_refused_body_dead_letters_all_its_events_http_4xx(tmp_path, credentials):
    events = visitor_events(visitors=3, visits=1, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    with import_stub(reject_rate=1.0) as stub:
        code = main(import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url))
        records = stub.records
    assert code == 0
    assert [r["status"] for r in records] == [400]
    letters = [d for lines in read_json_lines(tmp_path / "out", "dead_letters") for d in lines]
    assert sorted(d["message_id"] for d in letters) == sorted(e["messageId"] for e in events)
    assert {(d["reason"], d["status"], d["stage"]) for d in letters} == {("http_4xx", 400, "send")}
    assert {d["event"]["messageId"] for d in letters} == {e["messageId"] for e in events}


def test_spec_14_missing_credentials_refuse_to_start_unless_file_sink_or_plan_only(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("WOOPRA_APP_ID", raising=False)
    monkeypatch.delenv("WOOPRA_SECRET_KEY", raising=False)
    glob = write_event_files(tmp_path / "in", visitor_events(2, 1, 2), files=1)
    assert main(import_args(glob, tmp_path / "out")) == 2
    assert "WOOPRA_SECRET_KEY" in capsys.readouterr().err
    assert main(import_args(glob, tmp_path / "plan", "--plan_only")) == 0
    assert main(import_args(glob, tmp_path / "dry", "--sink", "file")) == 0


def test_spec_14_plan_only_writes_the_plan_and_sends_nothing(tmp_path, credentials, capsys):
    glob = write_event_files(tmp_path / "in", visitor_events(10, 2, 3), files=2)
    with import_stub() as stub:
        code = main(
            import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url, "--plan_only",
                        "--import_batch_bytes", "600", "--import_limits", "2/10s")
        )  # fmt: skip
        assert stub.records == []
    assert code == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert {k: plan[k] for k in ("events", "visitors", "visits", "lines", "already_imported")} == {
        "events": 60, "visitors": 10, "visits": 20, "lines": 20, "already_imported": 0,
    }  # fmt: skip
    # bodies b at 0, 0, 10, 10, 20, ...: the last starts at 10 * ((b - 1) // 2) s (+1 ms)
    assert plan["estimated_seconds"] == 10.0 * ((plan["bodies"] - 1) // 2)
    assert "import plan" in capsys.readouterr().out


def test_spec_14_15_deferred_when_the_next_slot_is_beyond_max_wait(tmp_path, credentials):
    events = visitor_events(visitors=8, visits=1, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    ledger = tmp_path / "ledger"
    flags = ("--import_batch_bytes", "500", "--import_limits", "2/60s",
             "--max_wait_seconds", "5", "--ledger", str(ledger))  # fmt: skip
    with import_stub(import_limits="2/60s") as stub:
        started = time.time()
        code = main(import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url, *flags))
        first_records = stub.records
        again = main(import_args(glob, tmp_path / "out2", "--woopra_base_url", stub.url, *flags))
        assert stub.records == first_records  # the windows carried over: nothing sent
    assert code == 3
    assert [r["status"] for r in first_records] == [200, 200]
    report = report_of(tmp_path / "out")
    sent_events = sum(r["body_lines"] for r in first_records)
    assert 0 < report["sent"] < len(events)
    assert report["sent"] + report["deferred"] == len(events)
    assert report["balanced"]
    next_run = time.mktime(time.strptime(report["next_run_after"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert started + 55 < next_run - time.timezone < started + 70
    assert again == 3
    report2 = report_of(tmp_path / "out2")
    assert report2["filtered_reasons"]["already_delivered"] == report["sent"]
    assert report2["deferred"] == report["deferred"]
    assert sent_events <= report["sent"]


def test_spec_15_a_second_import_with_the_same_ledger_sends_nothing(tmp_path, credentials):
    events = visitor_events(visitors=10, visits=2, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=2)
    ledger = tmp_path / "ledger"
    with import_stub() as stub:
        args = ("--woopra_base_url", stub.url, "--ledger", str(ledger))
        assert main(import_args(glob, tmp_path / "out1", *args)) == 0
        sent = len(stub.records)
        assert main(import_args(glob, tmp_path / "out2", *args)) == 0
        assert len(stub.records) == sent
    assert len(read_keys(str(ledger))) == len(events)
    report = report_of(tmp_path / "out2")
    assert report["sent"] == 0
    assert report["filtered_reasons"] == {"already_delivered": len(events)}
    plan = json.loads((tmp_path / "out2" / "plan.json").read_text())
    assert (plan["bodies"], plan["already_imported"]) == (0, len(events))


def test_spec_15_a_second_tracking_run_with_the_same_ledger_sends_nothing(tmp_path):
    events = visitor_events(visitors=6, visits=1, per_visit=4)
    glob = write_event_files(tmp_path / "in", events, files=2)
    ledger = tmp_path / "ledger"
    with WoopraStub() as stub:
        args = ["--input", glob, "--woopra_base_url", stub.url, "--ledger", str(ledger)]
        assert main([*args, "--output", str(tmp_path / "out1")]) == 0
        assert len(stub.records) == len(events)
        assert main([*args, "--output", str(tmp_path / "out2")]) == 0
        assert len(stub.records) == len(events)
    expected_keys = {(f"cookie:{e['anonymousId']}", e["messageId"]) for e in events}
    assert read_keys(str(ledger)) == expected_keys
    report = report_of(tmp_path / "out2")
    assert (report["sent"], report["filtered"]) == (0, len(events))


def test_spec_15_a_run_is_refused_while_another_holds_the_ledger(tmp_path, capsys, monkeypatch):
    from transforms.delivery.ledger_lock import LedgerLock

    glob = write_event_files(tmp_path / "in", visitor_events(1, 1, 1), files=1)
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    with LedgerLock(str(tmp_path / "ledger")):
        code = main(["--input", glob, "--ledger", str(tmp_path / "ledger"),
                     "--woopra_base_url", "http://127.0.0.1:9",
                     "--output", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "another run holds the ledger" in capsys.readouterr().err
    assert list(temp_dir.iterdir()) == []  # nor is Beam's folder for the pipeline left


def test_spec_14_the_secret_is_in_no_file_or_log_a_run_writes(tmp_path):
    """A run with 401s, 400s, retries and dead letters, as a user runs it (a subprocess)."""
    events = visitor_events(visitors=6, visits=1, per_visit=3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    secret_forms = [SECRET, base64.b64encode(f"{APP_ID}:{SECRET}".encode()).decode()]
    with import_stub(fail_rate=0.3, reject_rate=0.3, seed=3, record=tmp_path / "rec") as stub:
        env = {"WOOPRA_APP_ID": APP_ID, "WOOPRA_SECRET_KEY": SECRET, "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [sys.executable, "-m", "pipeline", *import_args(glob, tmp_path / "out"),
             "--woopra_base_url", stub.url, "--import_batch_bytes", "400",
             "--ledger", str(tmp_path / "ledger"), "--max_attempts", "2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        wrong = subprocess.run(
            [sys.executable, "-m", "pipeline", *import_args(glob, tmp_path / "out401"),
             "--woopra_base_url", stub.url],
            cwd=REPO, env={**env, "WOOPRA_SECRET_KEY": SECRET + "x"},
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert wrong.returncode == 0, wrong.stderr[-2000:]
    letters = load_json_lines(next((tmp_path / "out401").glob("dead_letters-*.jsonl")))
    assert {d["status"] for d in letters} == {401}
    texts = [run.stdout, run.stderr, wrong.stdout, wrong.stderr]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "rec"]
    assert any(p.name.startswith("dead_letters") for p in written)
    texts += [p.read_text(errors="replace") for p in written]
    assert all(form not in text for form in secret_forms for text in texts)
    assert all(form[:10] not in text for form in secret_forms for text in texts)


def test_spec_14_one_sender_stopped_by_the_limits_stops_the_others(tmp_path, credentials):
    events = visitor_events(6, 1, 3, project="a.example.com")
    for event in visitor_events(6, 1, 3, project="b.example.com"):
        events.append({**event, "anonymousId": "b-" + event["anonymousId"],
                       "messageId": "b-" + event["messageId"]})  # fmt: skip
    glob = write_event_files(tmp_path / "in", events, files=2)
    with import_stub() as stub:
        code = main(
            import_args(glob, tmp_path / "out", "--woopra_base_url", stub.url,
                        "--import_batch_bytes", "400", "--import_limits", "1/60s",
                        "--max_wait_seconds", "5", "--ledger", str(tmp_path / "ledger"))
        )  # fmt: skip
        records = stub.records
    assert code == 3
    # the first project sends one body and stops at its second; the other sends nothing
    assert len(records) == 1
    report = report_of(tmp_path / "out")
    assert report["sent"] == records[0]["body_lines"] * 3
    assert report["sent"] + report["deferred"] == len(events)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mode", "import", "--sink", "file", "--import_limits", "300/60x"], "not a limit"),
        (["--plan_only"], "--plan_only is for --mode import"),
        (["--mode", "import", "--sink", "file", "--import_batch_bytes", "0"], "at least 1"),
        (["--mode", "import", "--sink", "file", "--visit_gap_minutes", "0"], "positive"),
    ],
)
def test_spec_16_import_settings_that_cannot_work_are_refused_with_exit_2(
    tmp_path, capsys, flags, message
):
    glob = write_event_files(tmp_path / "in", visitor_events(1, 1, 1), files=1)
    assert main(["--input", glob, "--output", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_spec_15_streaming_refuses_a_ledger(capsys):
    code = main(["--input_subscription", "projects/p/subscriptions/s", "--ledger", "/tmp/x"])
    assert code == 2
    assert "--ledger is for batch runs" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["track", "import"])
def test_spec_15_the_file_sink_reads_the_ledger_and_never_writes_it(tmp_path, mode):
    events = visitor_events(4, 1, 3)
    glob = write_event_files(tmp_path / "in", events, files=1)
    ledger = tmp_path / "ledger"
    writer = LedgerWriter(str(ledger))
    writer.commit([("cookie:anon-00000", e["messageId"]) for e in events[:3]])
    writer.close()
    before = sorted(p.relative_to(ledger) for p in ledger.rglob("*"))
    args = ["--input", glob, "--mode", mode, "--sink", "file", "--ledger", str(ledger)]
    assert main([*args, "--output", str(tmp_path / "out")]) == 0
    assert sorted(p.relative_to(ledger) for p in ledger.rglob("*")) == before
    report = report_of(tmp_path / "out")
    assert report["filtered_reasons"] == {"already_delivered": 3}
    assert report["sent"] == len(events) - 3
