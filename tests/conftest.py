"""Fixtures shared by the test modules: the Pub/Sub and GCS emulators (started by the tests).
And a guard: the tests must not run an older compiled build of the mapping modules."""

from pathlib import Path

import pytest

import transforms.core

pytest_plugins = ["tests.pubsub_emulator", "tests.gcs_emulator"]


def stale_compiled_modules() -> list[str]:
    """Compiled modules (mypyc, see setup.py) whose source changed after they were built."""
    package = Path(transforms.core.__file__).parent
    stale = []
    for compiled in package.glob("*.so"):
        source = package / (compiled.name.split(".")[0] + ".py")
        if source.stat().st_mtime > compiled.stat().st_mtime:
            stale.append(source.name)
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_compiled_modules()
    if stale:
        pytest.exit(
            f"transforms/core/{', '.join(stale)} changed since compiled: rebuild with"
            " `./run_local.sh test` (or `pip install -e .`)",
            returncode=2,
        )
