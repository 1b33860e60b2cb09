"""The Dataflow Flex Template's metadata.json, made from WoopraOptions so that none is missing.

    python -m pipeline.flex_template > flex_template/metadata.json

Each option becomes a parameter with its help text and a regex that Dataflow checks before it
launches: from its choices or type, or, for names and paths, the form Dataflow needs (a
`gs://` path, a Pub/Sub name). tests/test_dataflow.py fails when the file is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.arguments import shown_default, woopra_actions
from pipeline.options import duration_seconds

TEMPLATE_NAME = "woopra-beam"
_GCS_PATH = r"^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9]/.+$"
_NUMBER = r"^[0-9]+(\.[0-9]+)?$"
# Options whose values have a form of their own on Dataflow.
_REGEX_BY_NAME = {
    "input": _GCS_PATH,
    "output": _GCS_PATH,
    "dead_letters": _GCS_PATH,
    "input_subscription": r"^projects/[^/]+/subscriptions/[^/]+$",
    "input_topic": r"^projects/[^/]+/topics/[^/]+$",
    "dead_letter_topic": r"^projects/[^/]+/topics/[^/]+$",
    "woopra_base_url": r"^https?://[^/?#]+$",
    "rate_limit_service": r"^[^:/]+:[0-9]+$",
}


def regex_of(action: argparse.Action) -> str:
    if action.dest in _REGEX_BY_NAME:
        return _REGEX_BY_NAME[action.dest]
    if action.choices:
        return "^(" + "|".join(str(choice) for choice in action.choices) + ")$"
    if isinstance(action, argparse._StoreTrueAction):
        return "^(true|false)$"
    if action.type is int:
        return r"^[0-9]+$"
    if action.type is float:
        return _NUMBER
    if action.type is duration_seconds:
        return r"^[0-9]+(\.[0-9]+)?[smhd]?$"
    return r"^.+$"


def parameter_of(action: argparse.Action) -> dict[str, Any]:
    help_text = action.help or ""
    if action.default not in (None, False, []):
        help_text += f" Default: {shown_default(action)}."
    if isinstance(action, argparse._AppendAction):
        help_text += " One value here; repeat the flag on the command line for more."
    return {
        "name": action.dest,
        "label": action.dest.replace("_", " ").capitalize(),
        "helpText": help_text.strip(),
        "isOptional": True,
        "regexes": [regex_of(action)],
    }


def metadata() -> dict[str, Any]:
    return {
        "name": TEMPLATE_NAME,
        "description": (
            "Delivers RudderStack-format events to Woopra from files (batch) or Pub/Sub "
            "(streaming); give exactly one of input, input_subscription, input_topic, "
            "dead_letters."
        ),
        "parameters": [parameter_of(action) for action in woopra_actions()],
    }


def main() -> int:
    json.dump(metadata(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
