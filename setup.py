"""Compiles the per-event mapping modules with mypyc: the same typed Python, about 1.6 times
faster. WOOPRA_BEAM_PURE_PYTHON=1 installs them as plain Python (no C compiler needed); both
behave the same. Everything else about the package is in pyproject.toml."""

import os

from setuptools import setup

# The pure functions every event goes through (SPEC §1-§9, §14), and the values they return;
# the decoder of warehouse rows (SPEC §12).
COMPILED_MODULES = [
    "transforms/avro_rows.py",
    "transforms/fields.py",
    "transforms/mapping.py",
    "transforms/records.py",
    "transforms/standard_traits.py",
    "transforms/timestamps.py",
    "transforms/useragent.py",
    "transforms/values.py",
    "transforms/visits.py",
]

if os.environ.get("WOOPRA_BEAM_PURE_PYTHON"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))
