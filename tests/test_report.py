"""The run report (SPEC §16): its fields from the counters, samples, the held-back wall time."""

from __future__ import annotations

import json

from pipeline.report import build_report, format_report
from pipeline.samples import REDACTED, dead_letter_samples, redact
from transforms.delivery.rate_limit import HeldBackClock


def test_spec_16_fields_come_from_the_counters_beside_them():
    counters = {
        "input": 10,
        "sent": 6,
        "filtered": 3,
        "filtered_consent": 2,
        "filtered_event_name": 1,
        "dead_lettered": 1,
        "dead_letters_http_4xx": 1,
        "http_200": 6,
        "http_429": 2,
        "http_503": 1,
        "http_dropped": 1,
        "http_400": 1,
        "retries": 4,
        "throttled_wall_ms": 2500,
    }
    report = build_report(counters, elapsed_seconds=2.0)
    assert report["filtered_reasons"] == {"consent": 2, "event_name": 1}
    assert report["dead_letter_reasons"] == {"http_4xx": 1}
    assert list(report["http_statuses"].items()) == [
        ("200", 6),
        ("400", 1),
        ("429", 2),
        ("503", 1),
        ("dropped", 1),
    ]
    assert report["retries"] == 4
    assert report["throttled_seconds"] == 2.5
    assert report["requests_per_second"] == 5.5  # 11 requests made in 2 s
    assert report["wall_seconds"] == 2.0
    assert report["balanced"]
    assert "skipped" not in report


def test_spec_16_counts_that_do_not_add_up_say_so():
    report = build_report({"input": 3, "sent": 1}, elapsed_seconds=1.0)
    assert not report["balanced"]
    assert "COUNTS DO NOT ADD UP" in format_report(report)


def test_spec_16_a_file_sink_rate_counts_the_requests_written():
    report = build_report({"input": 4, "sent": 4}, elapsed_seconds=2.0)
    assert report["http_statuses"] == {}
    assert report["requests_per_second"] == 2.0


def test_spec_16_throttled_seconds_is_wall_time_however_many_threads_waited():
    now = [0.0]
    clock = HeldBackClock(clock=lambda: now[0])
    first, second = clock.__enter__(), clock.__enter__()  # two threads held back at t=0
    now[0] = 1.0
    second.__exit__(None, None, None)
    now[0] = 2.0
    first.__exit__(None, None, None)  # one second of both, one of one: 2 s, not 3
    now[0] = 5.0  # nobody waiting: not counted
    with clock:
        now[0] = 5.5
        assert clock.take_seconds() == 2.5  # a wait going on counts up to now
        now[0] = 6.0
    assert clock.take_seconds() == 0.5
    assert clock.take_seconds() == 0.0


def test_spec_16_samples_are_one_dead_letter_per_reason_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("WOOPRA_SECRET_KEY", "s3cr3t-value")
    letters = [
        {"reason": "http_4xx", "stage": "send", "event": {"type": "track", "password": "pw"}},
        {"reason": "http_4xx", "stage": "send", "event": {"type": "second"}},
        {
            "reason": "invalid_json",
            "stage": "parse",
            "event": '{"api_key": "k1", "x": "s3cr3t-value',
        },
    ]
    (tmp_path / "dead_letters-00000-of-00001.jsonl").write_text(
        "\n".join(json.dumps(letter) for letter in letters) + "\n"
    )
    samples = dead_letter_samples(str(tmp_path), ["http_4xx", "invalid_json", "too_large"])
    assert set(samples) == {"http_4xx", "invalid_json"}
    assert samples["http_4xx"]["event"] == {"type": "track", "password": REDACTED}
    assert samples["invalid_json"]["event"] == f'{{"api_key": "{REDACTED}", "x": "{REDACTED}'
    assert "s3cr3t" not in json.dumps(samples)


def test_long_sample_text_is_cut():
    assert redact("x" * 1000, ()).startswith("x" * 200 + "... (1000 characters)")
