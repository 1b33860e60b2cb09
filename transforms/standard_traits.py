"""The standard visitor properties RudderStack's Woopra destination sends (SPEC §5a).

Users moving from that destination already hold these properties in Woopra, so they go out
under the same names: `cv_firstname`, not `cv_firstName`. Each is the first non-empty value
of its keys in `traits`, then of the same keys in `context.traits`, then of its fallback.
"""

from __future__ import annotations

from typing import Any

from transforms.fields import non_empty

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
STANDARD_VISITOR_PROPERTIES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
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
WEBSITE_PARAM = "cv_website"
WEBSITE_FALLBACK_KEY = "website"


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


_TOP_LEVEL_RANKS, _NESTED_RANKS = _ranks()
# Ranks of `context.traits` come after every rank of `traits`.
_CONTEXT_TRAITS_RANK = 1000
_FALLBACK_RANK = 2 * _CONTEXT_TRAITS_RANK
_GEO_FALLBACKS = tuple(
    (param, geo_key) for param, _, geo_key in STANDARD_VISITOR_PROPERTIES if geo_key is not None
)

# Top-level trait keys that feed these (and `cv_email`, `cv_name`): never also sent as custom
# `cv_<key>` parameters. `address` stays: it is flattened as well (`cv_address_street`).
CONSUMED_TRAIT_KEYS = frozenset(_TOP_LEVEL_RANKS) | {"email", "name"}


def add_standard_visitor_params(
    params: dict[str, Any],
    traits: dict[str, Any],
    context: dict[str, Any],
    context_traits: dict[str, Any],
    properties: dict[str, Any],
) -> None:
    """Add the SPEC §5a parameters found, as text, in the order of its table."""
    found: dict[str, tuple[int, str]] = {}
    if traits:
        _collect(traits, 0, found)
    if context_traits:
        _collect(context_traits, _CONTEXT_TRAITS_RANK, found)
    geo = context.get("geo")
    if type(geo) is dict and geo:
        for param, key in _GEO_FALLBACKS:
            if param not in found:
                _offer(found, param, _FALLBACK_RANK, geo.get(key))
    if WEBSITE_PARAM not in found and properties:
        _offer(found, WEBSITE_PARAM, _FALLBACK_RANK, properties.get(WEBSITE_FALLBACK_KEY))
    if found:
        for param, _, _ in STANDARD_VISITOR_PROPERTIES:
            hit = found.get(param)
            if hit is not None:
                params[param] = hit[1]


def _collect(source: dict[str, Any], base_rank: int, found: dict[str, tuple[int, str]]) -> None:
    """The best-ranked non-empty value of each parameter in one traits object.

    One pass over the object's own keys, not one look-up per key of the table: traits are
    few, the table's keys many."""
    for key, value in source.items():
        ranked = _TOP_LEVEL_RANKS.get(key)
        if ranked is not None:
            _offer(found, ranked[0], base_rank + ranked[1], value)
        elif type(value) is dict:
            nested = _NESTED_RANKS.get(key)
            if nested is not None:
                for child, inner in value.items():
                    ranked = nested.get(child)
                    if ranked is not None:
                        _offer(found, ranked[0], base_rank + ranked[1], inner)


def _offer(found: dict[str, tuple[int, str]], param: str, rank: int, value: Any) -> None:
    """Keep the value for the parameter when it is non-empty and outranks what was found."""
    text = non_empty(value)
    if text is not None:
        current = found.get(param)
        if current is None or rank < current[0]:
            found[param] = (rank, text)
