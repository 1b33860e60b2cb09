"""The mapping modules run compiled by mypyc (setup.py), and their pure Python source maps
the sample events exactly as the compiled build does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import transforms
from transforms.core import (
    avro_rows,
    fields,
    mapping,
    records,
    standard_traits,
    timestamps,
    useragent,
    values,
)

ROOT = Path(__file__).resolve().parent.parent
MAPPING_MODULES = (fields, mapping, records, standard_traits, timestamps, useragent, values)
# The mapping modules and the decoder of warehouse rows (SPEC §12), all compiled by setup.py.
COMPILED_MODULES = (*MAPPING_MODULES, avro_rows)

# Maps testdata/events.jsonl with whichever `transforms` comes first on sys.path, one line per
# event: the request's JSON, or the dead letter's reason and detail (filters are not applied).
MAP_SAMPLE = """
import sys
from transforms.core.mapping import MappingSettings, map_event
from transforms.parse import parse_record
from transforms.core.records import DeadLetter
import transforms.core.mapping
print(transforms.core.mapping.__file__)
settings = MappingSettings(project_name="p", idle_timeout_ms=60000)
for line in open(sys.argv[1], "rb"):
    event = parse_record(line)
    if event is None:
        continue
    result = event if isinstance(event, DeadLetter) else map_event(event, settings)
    print(result.reason + result.detail if isinstance(result, DeadLetter) else result.to_json())
"""


def test_mapping_modules_are_compiled_unless_pure_python_was_asked() -> None:
    compiled = [module.__name__ for module in COMPILED_MODULES if module.__file__.endswith(".so")]
    if os.environ.get("WOOPRA_BEAM_PURE_PYTHON"):
        assert compiled == []
    else:
        assert compiled == [module.__name__ for module in COMPILED_MODULES]


def map_sample(python_path: Path) -> list[str]:
    environment = {**os.environ, "PYTHONPATH": str(python_path)}
    completed = subprocess.run(
        [sys.executable, "-c", MAP_SAMPLE, str(ROOT / "testdata" / "events.jsonl")],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        cwd=python_path,
    )
    return completed.stdout.splitlines()


def test_spec_5_to_7_pure_python_source_maps_like_the_installed_build(tmp_path: Path) -> None:
    shutil.copytree(
        Path(transforms.__file__).parent,
        tmp_path / "transforms",
        ignore=shutil.ignore_patterns("*.so"),
    )
    pure = map_sample(tmp_path)
    installed = map_sample(ROOT)
    assert pure[0] == str(tmp_path / "transforms" / "core" / "mapping.py")
    assert installed[0] == mapping.__file__
    assert len(pure) == 28  # the module's path, then one line per sample event
    assert pure[1:] == installed[1:]
