"""Checks of what a run will read and write, made before it starts (exit 2 on a user error).

Without them a missing input is a `ValueError: ALLOW_IF_WILDCARD` traceback from deep inside
Beam, and a streaming run on a subscription that does not exist fails on its workers.
"""

from __future__ import annotations

import logging
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.arguments import UserError
from pipeline.options import WoopraOptions
from transforms.delivery.file_sink import DEAD_LETTERS_PREFIX

_LOGGER = logging.getLogger(__name__)
# The longest wait for Pub/Sub to say whether a subscription or topic exists.
PUBSUB_CHECK_SECONDS = 10.0


def check_run(options: PipelineOptions) -> None:
    """Raises UserError for an input that is missing, a directory, an output that is a file,
    or a Pub/Sub subscription or topic that does not exist."""
    woopra = options.view_as(WoopraOptions)
    _check_output(woopra.output)
    if woopra.input:
        check_files("--input", woopra.input)
    if woopra.dead_letters:
        replayed = check_files("--dead_letters", woopra.dead_letters)
        _check_replay_output(replayed, woopra.output)
    if woopra.input_subscription:
        check_pubsub("--input_subscription", woopra.input_subscription)
    if woopra.input_topic:
        check_pubsub("--input_topic", woopra.input_topic)


def check_files(flag: str, pattern: str) -> list[str]:
    """The files a glob matches; at least one, and the glob not a directory."""
    if "://" not in pattern and os.path.isdir(pattern):
        example = os.path.join(pattern, "*.jsonl")
        raise UserError(f"{flag} {pattern} is a directory: give a glob of files, e.g. {example}")
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:
        raise UserError(f"{flag} {pattern} cannot be listed: {_first_line(err)}") from err
    files = [metadata.path for metadata in matched if not metadata.path.endswith("/")]
    if not files:
        raise UserError(f"{flag} {pattern} matches no file")
    return files


def _check_output(output: str) -> None:
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"--output {output} is a file; it must be a directory (or not exist yet)")


def _check_replay_output(replayed: list[str], output: str) -> None:
    """A replay writes new dead letters under --output: they must not replace the ones read."""
    prefix = FileSystems.join(_absolute(output), DEAD_LETTERS_PREFIX + "-")
    if any(_absolute(path).startswith(prefix) for path in replayed):
        raise UserError(
            f"--output {output} holds the dead letters being replayed; give another directory"
        )


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def check_pubsub(flag: str, name: str) -> None:
    """A subscription or topic that Pub/Sub says does not exist is a user error.

    Any other answer (no credentials, no permission to look) is logged and the run goes on:
    the workers may be allowed what the launcher is not.
    """
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    try:
        if "/subscriptions/" in name:
            with pubsub_v1.SubscriberClient() as client:
                client.get_subscription(
                    request={"subscription": name}, timeout=PUBSUB_CHECK_SECONDS
                )
        else:
            client = pubsub_v1.PublisherClient()
            client.get_topic(request={"topic": name}, timeout=PUBSUB_CHECK_SECONDS)
    except exceptions.NotFound as err:
        kind = "subscription" if "/subscriptions/" in name else "topic"
        raise UserError(f"{flag} {name}: no such {kind} (create it first)") from err
    except exceptions.InvalidArgument as err:
        raise UserError(f"{flag} {name}: not a valid name: {_first_line(err)}") from err
    except Exception as err:
        _LOGGER.warning("could not check that %s exists: %s", name, _first_line(err))


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]
