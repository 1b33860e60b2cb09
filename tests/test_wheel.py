"""The wheel that Dataflow workers install: built, installed into a fresh virtual environment,
and both console scripts run from it (only the package registry is reached, for dependencies)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SAMPLE_FLAGS, TESTDATA

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def test_the_wheel_installs_into_a_fresh_venv_and_both_console_scripts_run(tmp_path):
    source = tmp_path / "source"  # what the package is made of, nothing built before
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("pipeline", "transforms"):
        ignore = shutil.ignore_patterns("*.so", "__pycache__")
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("woopra_beam-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    # No byte-compiling of the dependencies: the scripts run once, and it is slow.
    _run(venv / "bin" / "pip", "install", "--quiet", "--no-compile", wheel, cwd=tmp_path)

    # Outside the checkout, so that only the installed package can be imported.
    pipeline_help = _run(venv / "bin" / "woopra-pipeline", "--help", cwd=tmp_path).stdout
    assert "--woopra_base_url" in pipeline_help
    assert "Apache Beam options" in pipeline_help
    assert "--latency-ms" in _run(venv / "bin" / "woopra-stub", "--help", cwd=tmp_path).stdout
    where = "import transforms.core.mapping as m, pipeline.cli as c; print(m.__file__, c.__file__)"
    mapping_file, cli_file = _run(venv / "bin" / "python", "-c", where, cwd=tmp_path).stdout.split()
    assert cli_file.startswith(str(venv))
    compiled = not os.environ.get("WOOPRA_BEAM_PURE_PYTHON")
    assert mapping_file.startswith(str(venv))
    assert mapping_file.endswith(".so") == compiled

    output = tmp_path / "out"
    _run(
        venv / "bin" / "woopra-pipeline", "--input", TESTDATA / "events.jsonl", *SAMPLE_FLAGS,
        "--sink", "file", "--output", output, cwd=tmp_path,
    )  # fmt: skip
    expected = json.loads((TESTDATA / "expected_report.json").read_text())
    report = json.loads((output / "report.json").read_text())
    assert {key: report[key] for key in expected} == expected
