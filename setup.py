"""Compiles the per-event mapping modules with mypyc: the same typed Python, about 1.6 times
faster. WOOPRA_BEAM_PURE_PYTHON=1 installs them as plain Python (no C compiler needed); both
behave the same. Everything else about the package is in pyproject.toml."""

import os

from setuptools import setup

# The pure functions every event goes through (SPEC §1-§9, §14), and the values they return;
# the decoder of warehouse rows (SPEC §12).
COMPILED_MODULES = [
    "transforms/core/avro_rows.py",
    "transforms/core/fields.py",
    "transforms/core/mapping.py",
    "transforms/core/records.py",
    "transforms/core/standard_traits.py",
    "transforms/core/timestamps.py",
    "transforms/core/useragent.py",
    "transforms/core/values.py",
    "transforms/core/visits.py",
]

if os.environ.get("WOOPRA_BEAM_PURE_PYTHON"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))
