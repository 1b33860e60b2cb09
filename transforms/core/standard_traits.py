"""The standard visitor properties RudderStack's Woopra destination sends (SPEC §5a).

Users moving from that destination already hold these properties in Woopra, so they go out
under the same names: `cv_firstname`, not `cv_firstName`. Each is the first non-empty value
of its keys in `traits`, then of the same keys in `context.traits`, then of its fallback.
"""

from __future__ import annotations

from typing import Any, Final

from transforms.core.fields import non_empty

_ZIP_KEYS = (
    "zipcode",
    "zip",
    "zip_code",
    "zipCode",
    "postalcode",
    "postal_code",
    "postalCode",
)
# (param, keys in order of precedence (a dotted key is nested), fallback key in `context.geo`).
STANDARD_VISITOR_PROPERTIES: Final[tuple[tuple[str, tuple[str, ...], str | None], ...]] = (
    ("cv_firstname", ("firstName", "firstname", "first_name"), None),
    ("cv_lastname", ("lastName", "lastname", "last_name"), None),
    ("cv_middlename", ("middleName", "middlename", "middle_name"), None),
    ("cv_title", ("title",), None),
    ("cv_age", ("age",), None),
    ("cv_birthday", ("birthday", "dateOfBirth", "dateofbirth", "dob", "DOB"), None),
    ("cv_city", ("city", "address.city"), "city"),
    ("cv_state", ("state",), "region"),
    ("cv_country", ("country",), "country"),
    ("cv_zipcode", _ZIP_KEYS + tuple("address." + key for key in _ZIP_KEYS), "postal"),
    ("cv_website", ("website",), None),
)
# `cv_website` falls back to `properties.website` instead, for every type (SPEC §5a, §6).
WEBSITE_PARAM: Final = "cv_website"
WEBSITE_FALLBACK_KEY: Final = "website"


def _ranks() -> tuple[dict[str, tuple[str, int]], dict[str, dict[str, tuple[str, int]]]]:
    """Each key's parameter and rank (lower wins): top-level keys, and nested keys by parent."""
    top_level: dict[str, tuple[str, int]] = {}
    nested: dict[str, dict[str, tuple[str, int]]] = {}
    for param, keys, _ in STANDARD_VISITOR_PROPERTIES:
        for rank, key in enumerate(keys):
            parent, _, child = key.rpartition(".")
            if parent:
                nested.setdefault(parent, {})[child] = (param, rank)
            else:
                top_level[key] = (param, rank)
    return top_level, nested


# Final: compiled, these are read from C statics instead of the module's dictionary.
_TOP_LEVEL_RANKS: Final = _ranks()[0]
_NESTED_RANKS: Final = _ranks()[1]
_GEO_FALLBACKS: Final = tuple(
    (param, geo_key) for param, _, geo_key in STANDARD_VISITOR_PROPERTIES if geo_key is not None
)

# Top-level trait keys that feed these (and `cv_email`, `cv_name`): never also sent as custom
# `cv_<key>` parameters. `address` stays: it is flattened as well (`cv_address_street`).
CONSUMED_TRAIT_KEYS: Final = frozenset(_TOP_LEVEL_RANKS) | {"email", "name"}


def add_standard_visitor_params(
    params: dict[str, Any],
    traits: dict[str, Any],
    context: dict[str, Any],
    context_traits: dict[str, Any],
    properties: dict[str, Any],
) -> None:
    """Add the SPEC §5a parameters found, as text.

    The sources are read from the weakest to the strongest, each non-empty value replacing
    what a weaker source gave: the fallbacks, then `context.traits`, then `traits`. Neither
    custom nor other named parameters can have these names: their keys are never copied, and
    a flattened name has a second `_`."""
    if properties:
        website = non_empty(properties.get(WEBSITE_FALLBACK_KEY))
        if website is not None:
            params[WEBSITE_PARAM] = website
    geo = context.get("geo")
    if type(geo) is dict and geo:
        for param, key in _GEO_FALLBACKS:
            value = non_empty(geo.get(key))
            if value is not None:
                params[param] = value
    if context_traits:
        _add_from_traits(params, context_traits)
    if traits:
        _add_from_traits(params, traits)


def _add_from_traits(params: dict[str, Any], source: dict[str, Any]) -> None:
    """Each parameter's best-ranked non-empty value in one traits object, over what is there.

    One pass over the object's own keys, not one look-up per key of the table: an event's
    traits are few beside the table's keys (and, compiled, the pass is faster than a set
    intersection). `ranks` holds what this object gave already."""
    ranks: dict[str, int] = {}
    for key, value in source.items():
        ranked = _TOP_LEVEL_RANKS.get(key)
        if ranked is not None:
            _offer(params, ranks, ranked[0], ranked[1], value)
        elif type(value) is dict:
            nested = _NESTED_RANKS.get(key)
            if nested is not None:
                for child, inner in value.items():
                    ranked = nested.get(child)
                    if ranked is not None:
                        _offer(params, ranks, ranked[0], ranked[1], inner)


def _offer(
    params: dict[str, Any], ranks: dict[str, int], param: str, rank: int, value: Any
) -> None:
    """Set the parameter when the value is non-empty and outranks what this object gave."""
    text = non_empty(value)
    if text is not None:
        given = ranks.get(param)
        if given is None or rank < given:
            ranks[param] = rank
            params[param] = text
