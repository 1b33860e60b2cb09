"""Reading fields of a RudderStack event that may be absent or of the wrong shape (SPEC §1)."""

from __future__ import annotations

from typing import Any

from transforms.core.records import wire_value

WOOPRA_KEY = "woopra"
# What an absent or wrong-shaped object reads as; shared, so never to be changed.
_NO_OBJECT: dict[str, Any] = {}


def non_empty(value: Any) -> str | None:
    """The value as text if it counts as non-empty (SPEC §1), else None.

    A string of length > 0, or a number made into text; booleans, objects, lists and
    null are absent.
    """
    value_type = type(value)
    if value_type is str:
        return value or None
    if value_type is int or value_type is float:
        return wire_value(value)
    return None


def first_non_empty(*values: Any) -> str | None:
    """The first value that counts as non-empty, as text."""
    for value in values:
        if type(value) is str:
            if value:
                return value
        elif value is not None:
            text = non_empty(value)
            if text is not None:
                return text
    return None


def as_object(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one: wrong shapes count as absent."""
    return value if type(value) is dict else _NO_OBJECT


def traits_and_context(event: dict[str, Any]) -> tuple[dict, dict, dict]:
    """`traits`, `context` and `context.traits`, each an object (empty when absent): the
    three objects the identity and the visitor parameters are read from."""
    context = as_object(event.get("context"))
    return as_object(event.get("traits")), context, as_object(context.get("traits"))


def path(event: dict[str, Any], *keys: str) -> Any:
    """The value at a dotted path, or None when any step is missing or not an object."""
    value: Any = event
    for key in keys:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value


def woopra_integration(event: dict[str, Any]) -> tuple[bool, Any]:
    """Whether `integrations` names Woopra (key matched case-insensitively), and its value.

    An exact `woopra` key wins over other spellings; among those, the first in the event.
    """
    integrations = as_object(event.get("integrations"))
    if WOOPRA_KEY in integrations:
        return True, integrations[WOOPRA_KEY]
    for key, value in integrations.items():
        if key.lower() == WOOPRA_KEY:
            return True, value
    return False, None
