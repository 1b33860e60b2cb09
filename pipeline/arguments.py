"""The command line, read strictly: every flag known to this pipeline or to Beam, or an error.

Beam's PipelineOptions only warns about a flag it does not know and runs on without it, so a
mistyped `--woopra-base-url` would send to production Woopra. Here an unknown flag is a
`UserError` (exit 2) naming the closest known one, and `--help` lists this pipeline's options,
grouped and with their defaults, before Beam's.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterator

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipeline.options import WoopraOptions, duration_seconds, duration_text

PROG = "woopra-pipeline"
HELP_FLAGS = ("-h", "--help")


class UserError(Exception):
    """A mistake of the user's (a flag, a path, a name): one line on stderr, exit 2."""


class _StrictParser(_BeamArgumentParser):
    """Beam's parser, raising instead of printing usage and exiting."""

    def error(self, message: str):
        raise UserError(message)


def _beam_option_classes() -> Iterator[type[PipelineOptions]]:
    """Every options class Beam parses, last definition of a name winning as in Beam."""
    classes: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        classes[str(cls)] = cls
    yield from classes.values()


def all_options_parser() -> _StrictParser:
    """A parser that knows every option of this pipeline and of Beam."""
    parser = _StrictParser(prog=PROG, allow_abbrev=False, add_help=False)
    for cls in _beam_option_classes():
        cls._add_argparse_args(parser)
    return parser


def flag_names(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions for name in action.option_strings]


def closest_flag(flag: str, known: list[str]) -> str | None:
    """The known flag a mistyped one most likely meant: dashes for underscores, case, typos."""
    wanted = _normalized(flag)
    by_normalized = {_normalized(name): name for name in known}
    if wanted in by_normalized:
        return by_normalized[wanted]
    close = difflib.get_close_matches(wanted, list(by_normalized), n=1, cutoff=0.6)
    return by_normalized[close[0]] if close else None


def _normalized(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").lower()


def woopra_actions() -> list[argparse.Action]:
    """WoopraOptions' arguments, in the order --help lists them."""
    parser = argparse.ArgumentParser(add_help=False)
    WoopraOptions._add_argparse_args(parser)
    return list(parser._actions)


def store_true_flags() -> set[str]:
    """WoopraOptions' on/off flags, which a Flex Template passes as `--flag=true|false`."""
    return {
        name
        for action in woopra_actions()
        if isinstance(action, argparse._StoreTrueAction)
        for name in action.option_strings
    }


def normalize_switches(argv: list[str]) -> list[str]:
    """`--no_stitch_identity=true` as `--no_stitch_identity`, `=false` as nothing."""
    switches = store_true_flags()
    normalized = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and name in switches:
            if value.lower() not in ("true", "false"):
                raise UserError(f"{name} takes true or false, not {value!r}")
            if value.lower() == "true":
                normalized.append(name)
            continue
        normalized.append(arg)
    return normalized


def check_flags(argv: list[str]) -> None:
    """Raises UserError for a flag nobody knows, a stray value, or a value of the wrong type."""
    parser = all_options_parser()
    _, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        if arg == "--":
            break
        if not arg.startswith("-"):
            raise UserError(f"unexpected argument {arg!r} (flags take the form --name value)")
        flag = arg.split("=", 1)[0]
        suggestion = closest_flag(flag, flag_names(parser))
        hint = f"; did you mean {suggestion}?" if suggestion else "; see --help"
        raise UserError(f"unknown flag {flag}{hint}")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows a default only where there is one worth showing (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        default_text = shown_default(action).replace("%", "%%")
        return f"{text} (default: {default_text})".strip()


def shown_default(action: argparse.Action) -> str:
    """An option's default as a user would write it (`30d`, `100`)."""
    default = action.default
    if action.type is duration_seconds and isinstance(default, float):
        return duration_text(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def help_text() -> str:
    """This pipeline's options by group with their defaults, then all of Beam's."""
    ours = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [replay --dead_letters GLOB] [options]",
        description=(
            "Deliver RudderStack-format events to Woopra from files (batch) or Pub/Sub "
            "(streaming). Every event ends sent, filtered or dead-lettered; the report at "
            "the end says how many of each."
        ),
        formatter_class=_DefaultsFormatter,
        add_help=False,
    )
    WoopraOptions._add_argparse_args(ours)
    beam = _BeamArgumentParser(prog=PROG, add_help=False, usage=argparse.SUPPRESS)
    for cls in _beam_option_classes():
        if cls is not WoopraOptions:
            cls._add_argparse_args(beam)
    beam_help = beam.format_help().strip()
    return (
        ours.format_help().rstrip()
        + "\n\nApache Beam options (--runner, --project, --region, ...):\n"
        + "\n".join("  " + line if line else line for line in beam_help.splitlines())
        + "\n"
    )
