"""Another git revision of the package, built and installed into a temporary directory, so
that a benchmark can time it beside the working tree's code on the same machine, at the
same time.

The revision is exported with `git archive` and installed by pip exactly as
`./run_local.sh` installs the working tree (setup.py compiles the mapping modules with
mypyc), but with `--target`: nothing outside the directory changes. A process whose working
directory is that directory imports the revision's `transforms` (the current directory
comes first on `sys.path`).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_revision(revision: str, into: Path) -> Path:
    """Install `revision`'s package into `into`/site; the directory to run it from."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    source, site = into / "source", into / "site"
    source.mkdir(parents=True)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, stdout=archive)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(source, filter="data")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site, source],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building {revision} ({commit[:12]}) failed:\n{built.stderr[-4000:]}")
    return site
