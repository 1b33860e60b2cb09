"""Fail fast: woopra-pipeline against a dead Woopra (a closed loopback port).

Writes `--devices` devices x `--per-device` track events (2,000 x 2) to a JSON-lines file,
finds a loopback port nothing listens on, runs `woopra-pipeline` (default flags, so
`--circuit_open_seconds 60`) against it as a child process and prints its wall time, exit
code, the report's counts and how many dead letters carry the event for a replay. Goal:
under 120 s, exit 1, every event dead-lettered and replayable. Information only: never
asserts. Run from the repository root: `.venv/bin/python -m bench.bench_dead_server`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--per-device", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        events = os.path.join(work, "events.jsonl")
        with open(events, "w", encoding="utf-8") as handle:
            for device in range(args.devices):
                for n in range(args.per_device):
                    event = {"type": "track", "event": "e", "anonymousId": f"dev-{device}",
                             "messageId": f"{device}-{n}",
                             "originalTimestamp": f"2024-01-01T00:00:{n:02d}Z"}  # fmt: skip
                    handle.write(json.dumps(event) + "\n")
        output = os.path.join(work, "out")
        command = [sys.executable, "-m", "pipeline", "--input", events, "--project_name", "p",
                   "--woopra_base_url", f"http://127.0.0.1:{_closed_port()}",
                   "--output", output]  # fmt: skip
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        with open(os.path.join(output, "report.json"), encoding="utf-8") as handle:
            report = json.load(handle)
        letters = []
        for path in glob.glob(os.path.join(output, "dead_letters-*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                letters += [json.loads(line) for line in handle]
    total = args.devices * args.per_device
    replayable = sum(1 for letter in letters if isinstance(letter.get("event"), dict))
    print(f"events {total} over {args.devices} devices, dead server")
    print(f"wall time {wall:.1f} s (goal < 120), exit code {run.returncode} (goal 1)")
    print(
        f"report: input {report['input']} sent {report['sent']} dead_lettered "
        f"{report['dead_lettered']} {report['dead_letter_reasons']} unreachable "
        f"{report.get('unreachable')}"
    )
    print(f"dead letters carrying their event: {replayable} of {total}")
    print("last line:", run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
