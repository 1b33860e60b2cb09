"""The README shows what the project really does: its run report is the real output."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.cli import main
from pipeline.stub import WoopraStub
from tests.helpers import SAMPLE_FLAGS, TESTDATA

README = Path(__file__).resolve().parent.parent / "README.md"
# The figures that depend on the machine's speed.
_TIMED_ROWS = re.compile(r"^  (throttled|wall time|rate) ")
_TIMED_FIGURE = re.compile(r" +\d+\.\d+")


def _comparable(lines: list[str]) -> list[str]:
    return [_TIMED_FIGURE.sub(" N", line) if _TIMED_ROWS.match(line) else line for line in lines]


def readme_report() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- report:begin -->\n", 1)[1].split("<!-- report:end -->", 1)[0]
    return [line.removeprefix("    ") for line in block.strip("\n").splitlines()]


def test_the_report_in_the_readme_is_what_run_local_sh_prints(tmp_path, capsys):
    # The job ./run_local.sh runs: the sample, its flags, woopra-stub --latency-ms 20.
    with WoopraStub(latency_ms=20) as stub:
        code = main(
            ["--input", str(TESTDATA / "events.jsonl"), *SAMPLE_FLAGS, "--sink", "woopra",
             "--woopra_base_url", stub.url, "--output", str(tmp_path)]
        )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    report = printed[printed.index("run report") :]
    assert _comparable(report) == _comparable(readme_report())
