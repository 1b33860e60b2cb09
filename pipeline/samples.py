"""One example dead letter per reason for the run report (SPEC §16), with secrets redacted.

Read back from the dead-letter files the run wrote, so each sample is a real dead letter; the
reading stops as soon as every reason the counters name has its example.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.delivery.file_sink import DEAD_LETTERS_PREFIX, SUFFIX

REDACTED = "[redacted]"
# Keys whose values are credentials wherever they appear in an event.
_SECRET_WORDS = r"password|passwd|secret|token|api_?key|authorization|credential|private_?key"
_SECRET_KEY = re.compile(_SECRET_WORDS, re.I)
# The same keys inside raw text that did not parse (`"api_key": "..."`).
_SECRET_IN_TEXT = re.compile(
    rf'("[^"]*(?:{_SECRET_WORDS})[^"]*"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.I,
)
# Environment variables that hold this pipeline's credentials.
SECRET_VARIABLES = ("WOOPRA_APP_ID", "WOOPRA_SECRET_KEY")
# A sample shows this much of a long string (raw lines can be a megabyte).
MAX_SAMPLE_TEXT = 200


def dead_letter_samples(output_dir: str, reasons: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The first dead letter found for each of `reasons` under `output_dir`, redacted."""
    wanted = set(reasons)
    samples: dict[str, dict[str, Any]] = {}
    if not wanted:
        return samples
    pattern = FileSystems.join(output_dir, f"{DEAD_LETTERS_PREFIX}-*{SUFFIX}")
    try:
        files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # a dead-letter topic instead of files, or an unlistable output
        return samples
    for path in files:
        with FileSystems.open(path) as handle:
            for line in handle:
                letter = _loads(line)
                reason = letter.get("reason") if letter else None
                if reason in wanted and reason not in samples:
                    samples[reason] = redact(letter)
                    if len(samples) == len(wanted):
                        return samples
    return samples


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def redact(value: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """`value` with credentials replaced and long strings cut, for showing to people.

    Credentials are the values of keys named like one (password, token, api_key, ...) and any
    text holding the value of WOOPRA_APP_ID or WOOPRA_SECRET_KEY.
    """
    if secrets is None:
        secrets = tuple(v for v in map(os.environ.get, SECRET_VARIABLES) if v)
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_KEY.search(key)
            else redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, str):
        value = _SECRET_IN_TEXT.sub(rf'\1"{REDACTED}"', value)
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        if len(value) > MAX_SAMPLE_TEXT:
            return value[:MAX_SAMPLE_TEXT] + f"... ({len(value)} characters)"
    return value
