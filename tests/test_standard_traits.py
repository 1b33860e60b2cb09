"""SPEC §5a: the standard visitor properties RudderStack's Woopra destination sends, the keys
they consume, their fallbacks, and the page referring domains. Pure mapping, no Beam."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_mapping import make, params_of, request_of
from transforms.core.standard_traits import CONSUMED_TRAIT_KEYS

ZIP_KEYS = ["zipcode", "zip", "zip_code", "zipCode", "postalcode", "postal_code", "postalCode"]

# SPEC §5a's table, written out again here: (param, keys in order, fallback as event fields).
TABLE: list[tuple[str, list[str], dict[str, Any] | None]] = [
    ("cv_firstname", ["firstName", "firstname", "first_name"], None),
    ("cv_lastname", ["lastName", "lastname", "last_name"], None),
    ("cv_middlename", ["middleName", "middlename", "middle_name"], None),
    ("cv_title", ["title"], None),
    ("cv_age", ["age"], None),
    ("cv_birthday", ["birthday", "dateOfBirth", "dateofbirth", "dob", "DOB"], None),
    ("cv_city", ["city", "address.city"], {"context": {"geo": {"city": "FALLBACK"}}}),
    ("cv_state", ["state"], {"context": {"geo": {"region": "FALLBACK"}}}),
    ("cv_country", ["country"], {"context": {"geo": {"country": "FALLBACK"}}}),
    (
        "cv_zipcode",
        ZIP_KEYS + [f"address.{key}" for key in ZIP_KEYS],
        {"context": {"geo": {"postal": "FALLBACK"}}},
    ),
    ("cv_website", ["website"], {"properties": {"website": "FALLBACK"}}),
]
PARAMS = [param for param, _, _ in TABLE]
EVENT_TYPES = ["identify", "track", "page", "screen"]


def nested(key: str, value: Any) -> dict[str, Any]:
    """A traits object holding the value at a dotted key: `address.city` is nested."""
    parent, _, child = key.rpartition(".")
    return {parent: {child: value}} if parent else {key: value}


def merged(*objects: dict[str, Any]) -> dict[str, Any]:
    """The objects merged one level deep, as one traits object (`address` shared)."""
    result: dict[str, Any] = {}
    for obj in objects:
        for key, value in obj.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = {**result[key], **value}
            else:
                result[key] = value
    return result


def event_with(
    event_type: str = "track",
    traits: dict[str, Any] | None = None,
    context_traits: dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event with the traits, context.traits and fallback fields given."""
    context: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if traits is not None:
        fields["traits"] = traits
    if context_traits is not None:
        context["traits"] = context_traits
    for key, value in (fallback or {}).items():
        if key == "context":
            context.update(value)
        else:
            fields[key] = value
    if context:
        fields["context"] = context
    return make(event_type, **fields)


CASES_EVERY_KEY = [
    pytest.param(param, key, id=f"{param}-{key}") for param, keys, _ in TABLE for key in keys
]
CASES_ORDER = [
    pytest.param(param, earlier, later, id=f"{param}-{earlier}-before-{later}")
    for param, keys, _ in TABLE
    for index, earlier in enumerate(keys)
    for later in keys[index + 1 :]
]
CASES_FALLBACK = [
    pytest.param(param, fallback, id=param) for param, _, fallback in TABLE if fallback
]


# === the table: every key, in traits and in context.traits, of every event type ===========


@pytest.mark.parametrize(("param", "key"), CASES_EVERY_KEY)
@pytest.mark.parametrize("source", ["traits", "context_traits"])
def test_spec_5a_every_key_of_the_table_gives_its_param(param: str, key: str, source: str) -> None:
    event = event_with(**{source: nested(key, "Value")})
    assert params_of(event)[param] == "Value"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_spec_5a_params_are_sent_for_every_type(event_type: str) -> None:
    traits = merged(*(nested(keys[0], f"{param}-value") for param, keys, _ in TABLE))
    params = params_of(event_with(event_type, traits=traits))
    assert {param: params.get(param) for param in PARAMS} == {
        param: f"{param}-value" for param in PARAMS
    }


# === precedence =============================================================================


@pytest.mark.parametrize(("param", "earlier", "later"), CASES_ORDER)
@pytest.mark.parametrize("source", ["traits", "context_traits"])
def test_spec_5a_keys_count_in_the_order_listed(
    param: str, earlier: str, later: str, source: str
) -> None:
    # The later key comes first in the object: the table's order decides, not the event's.
    value = merged(nested(later, "later"), nested(earlier, "earlier"))
    assert params_of(event_with(**{source: value}))[param] == "earlier"


@pytest.mark.parametrize(("param", "keys", "fallback"), TABLE, ids=PARAMS)
def test_spec_5a_traits_last_key_beats_context_traits_first_key(
    param: str, keys: list[str], fallback: dict | None
) -> None:
    event = event_with(
        traits=nested(keys[-1], "traits"),
        context_traits=nested(keys[0], "context"),
        fallback=fallback,
    )
    assert params_of(event)[param] == "traits"


def test_spec_5a_traits_first_name_beats_context_traits_first_name() -> None:
    event = event_with(traits={"first_name": "Ann"}, context_traits={"firstName": "Bea"})
    assert params_of(event)["cv_firstname"] == "Ann"


@pytest.mark.parametrize(("param", "fallback"), CASES_FALLBACK)
def test_spec_5a_context_traits_beat_the_fallback(param: str, fallback: dict) -> None:
    keys = next(keys for name, keys, _ in TABLE if name == param)
    event = event_with(context_traits=nested(keys[-1], "context"), fallback=fallback)
    assert params_of(event)[param] == "context"


@pytest.mark.parametrize(("param", "fallback"), CASES_FALLBACK)
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_spec_5a_fallback_when_no_trait_gives_a_value(
    param: str, fallback: dict, event_type: str
) -> None:
    event = event_with(event_type, traits={"plan": "gold"}, fallback=fallback)
    assert params_of(event)[param] == "FALLBACK"


def test_spec_5a_geo_fallbacks_together() -> None:
    geo = {"city": "Pune", "region": "MH", "country": "India", "postal": 411001, "lat": 18.5}
    params = params_of(event_with(fallback={"context": {"geo": geo}}))
    assert {key: value for key, value in params.items() if key.startswith("cv_")} == {
        "cv_city": "Pune",
        "cv_state": "MH",
        "cv_country": "India",
        "cv_zipcode": "411001",
    }


@pytest.mark.parametrize("param", [param for param, _, fallback in TABLE if not fallback])
def test_spec_5a_params_without_fallback_are_absent_without_traits(param: str) -> None:
    geo = {"city": "x", "region": "x", "country": "x", "postal": "x"}
    fields = {"context": {"geo": geo}, "properties": {"website": "x"}}
    assert param not in params_of(event_with(fallback=fields))


def test_spec_5a_website_fallback_only_from_properties_website() -> None:
    params = params_of(event_with(fallback={"context": {"page": {"website": "x"}, "website": "y"}}))
    assert "cv_website" not in params


def test_spec_6_identify_properties_website_feeds_cv_website_only() -> None:
    event = make("identify", properties={"website": "https://acme.io", "plan": "gold"})
    params = params_of(event)
    assert params["cv_website"] == "https://acme.io"
    assert not any(key.startswith("ce_") for key in params)


def test_spec_5a_track_properties_website_is_both_event_and_visitor_property() -> None:
    params = params_of(make("track", properties={"website": "https://acme.io"}))
    assert params["ce_website"] == "https://acme.io"
    assert params["cv_website"] == "https://acme.io"


# === non-empty (SPEC §1) ====================================================================

NOT_NON_EMPTY = [True, False, {}, {"a": "b"}, [], ["a"], "", None]


@pytest.mark.parametrize(("param", "keys", "fallback"), TABLE, ids=PARAMS)
@pytest.mark.parametrize("skipped", NOT_NON_EMPTY, ids=repr)
def test_spec_5a_values_that_are_not_non_empty_are_skipped(
    param: str, keys: list[str], fallback: dict | None, skipped: Any
) -> None:
    # Every key in traits and context.traits holds the skipped value: the fallback (or
    # nothing) remains.
    every_key = merged(*(nested(key, skipped) for key in keys))
    event = event_with(traits=every_key, context_traits=every_key, fallback=fallback)
    assert params_of(event).get(param) == ("FALLBACK" if fallback else None)


@pytest.mark.parametrize(("param", "keys", "fallback"), TABLE, ids=PARAMS)
@pytest.mark.parametrize("skipped", [True, {}, "", ["x"]], ids=repr)
def test_spec_5a_a_skipped_value_lets_the_next_one_count(
    param: str, keys: list[str], fallback: dict | None, skipped: Any
) -> None:
    traits = merged(*(nested(key, skipped) for key in keys))
    event = event_with(traits=traits, context_traits=nested(keys[-1], "next"))
    assert params_of(event)[param] == "next"


@pytest.mark.parametrize(("value", "expected"), [(31, "31"), (0, "0"), (31.5, "31.5")])
def test_spec_5a_numbers_are_sent_as_text(value: Any, expected: str) -> None:
    params = params_of(event_with(traits={"age": value, "address": {"zip": value}}))
    assert params["cv_age"] == expected
    assert params["cv_zipcode"] == expected


def test_spec_5a_address_that_is_not_an_object_gives_no_nested_key() -> None:
    params = params_of(event_with(traits={"address": "1 Main St"}))
    assert "cv_city" not in params
    assert "cv_zipcode" not in params
    assert params["cv_address"] == "1 Main St"


# === the keys they consume ==================================================================


PARAM_OF_KEY = {key: param for param, keys, _ in TABLE for key in keys if "." not in key}


@pytest.mark.parametrize("key", sorted(PARAM_OF_KEY))
@pytest.mark.parametrize("value", ["Value", True, ""], ids=repr)
@pytest.mark.parametrize("source", ["traits", "context_traits"])
def test_spec_5a_table_keys_are_never_custom_params(key: str, value: Any, source: str) -> None:
    params = params_of(event_with(**{source: {key: value, "plan": "gold"}}))
    visitor = {name: value for name, value in params.items() if name.startswith("cv_")}
    named = {PARAM_OF_KEY[key]: value} if value == "Value" else {}
    assert visitor == {"cv_plan": "gold", **named}


def test_spec_5a_first_name_gives_cv_firstname_not_also_cv_first_name() -> None:
    params = params_of(event_with(traits={"firstName": "Ann", "first_name": "A", "DOB": "1990"}))
    assert params["cv_firstname"] == "Ann"
    assert params["cv_birthday"] == "1990"
    for spelling in ("cv_firstName", "cv_first_name", "cv_DOB"):
        assert spelling not in params


@pytest.mark.parametrize("source", ["traits", "context_traits"])
@pytest.mark.parametrize(
    "traits",
    [
        {"email": False},
        {"email": {"work": "w@x.io"}},
        {"name": True},
        {"name": {"first": "Ann", "last": "Lee"}},
        {"name": ["Ann"]},
    ],
    ids=repr,
)
def test_spec_5a_email_and_name_are_never_custom_params(source: str, traits: dict) -> None:
    params = params_of(event_with(**{source: traits}))
    assert not [name for name in params if name.startswith(("cv_email", "cv_name"))]


def test_spec_5a_address_is_still_flattened_as_custom_params() -> None:
    address = {"street": "1 Main St", "city": "Pune", "postal_code": "411001"}
    params = params_of(event_with(traits={"address": address}))
    assert params["cv_address_street"] == "1 Main St"
    assert params["cv_address_city"] == "Pune"
    assert params["cv_address_postal_code"] == "411001"
    assert params["cv_city"] == "Pune"
    assert params["cv_zipcode"] == "411001"


def test_spec_5a_city_in_traits_is_kept() -> None:
    # RudderStack drops traits.city; this contract sends it.
    assert params_of(event_with(traits={"city": "Pune"}))["cv_city"] == "Pune"


def test_spec_5a_consumed_keys_are_the_table_keys_email_and_name() -> None:
    top_level = {key for _, keys, _ in TABLE for key in keys if "." not in key}
    assert top_level | {"email", "name"} == CONSUMED_TRAIT_KEYS


def test_spec_5_named_params_come_after_the_custom_ones() -> None:
    params = params_of(event_with(traits={"firstName": "Ann", "plan": "gold"}))
    names = list(params)
    assert names.index("cv_plan") < names.index("cv_firstname")


# === page referring domains =================================================================

REFERRING = {"referring_domain": "google.com", "initial_referring_domain": "bing.com"}


def test_spec_5a_page_referring_domains_from_context_page() -> None:
    params = params_of(make("page", name="Home", context={"page": REFERRING}))
    assert params["ce_page_referring_domain"] == "google.com"
    assert params["ce_page_initial_referring_domain"] == "bing.com"
    assert "ce_referring_domain" not in params


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"page_referring_domain": "own.io"}, "own.io"),
        ({"page": {"referring_domain": "own.io"}}, "own.io"),
        ({"page": {"referring_domain": ""}}, ""),
        ({"page_referring_domain": None}, "google.com"),
        ({"page_referring_domain": ""}, ""),
        ({"referring_domain": "own.io"}, "google.com"),
    ],
)
def test_spec_5a_page_referring_domain_unless_properties_give_that_name(
    properties: dict, expected: str
) -> None:
    params = params_of(make("page", properties=properties, context={"page": REFERRING}))
    assert params["ce_page_referring_domain"] == expected
    assert params["ce_page_initial_referring_domain"] == "bing.com"


@pytest.mark.parametrize(
    ("context_page", "expected"),
    [
        ({"referring_domain": ""}, None),
        ({"referring_domain": True}, None),
        ({"referring_domain": {"a": "b"}}, None),
        ({"referring_domain": 42}, "42"),
        ("google.com", None),
        ({}, None),
    ],
    ids=repr,
)
def test_spec_5a_page_referring_domain_only_when_non_empty(
    context_page: Any, expected: str | None
) -> None:
    params = params_of(make("page", context={"page": context_page}))
    assert params.get("ce_page_referring_domain") == expected


@pytest.mark.parametrize("event_type", ["identify", "track", "screen"])
def test_spec_5a_only_page_events_carry_referring_domains(event_type: str) -> None:
    params = params_of(make(event_type, context={"page": REFERRING}))
    assert not [name for name in params if "referring_domain" in name]


# === browser ================================================================================

DALVIK = "Dalvik/2.1.0 (Linux; U; Android 9; AOSP on IA Emulator Build/PSR1.180720.117)"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_spec_5a_dalvik_agent_is_sent_as_android_browser(event_type: str) -> None:
    params = params_of(make(event_type, context={"userAgent": DALVIK}))
    assert params["browser"] == "Android9"


# === RudderStack's own test events ==========================================================


def test_spec_5a_rudderstack_woopra_test_event_shapes() -> None:
    """The shapes of RudderStack's Woopra destination test events: an identify with name,
    first and last name, title, state, country and a string address; an Android app's track
    with a Dalvik agent; a page with context.page's referring domains."""
    identify = {
        "anonymousId": "21e13f4bc7ceddad",
        "context": {
            "app": {"build": "4", "name": "RuddCDN"},
            "os": {"name": "Android", "version": "9"},
            "traits": {"anonymousId": "21e13f4bc7ceddad"},
            "userAgent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/86.0.4240.111 Safari/537.36"
            ),
        },
        "integrations": {"woopra": {"projectName": "abc.com"}},
        "messageId": "1601322811899-d9c7dd00-50dc-4364-95c8-e89423eb3cfb",
        "originalTimestamp": "2020-09-28T19:53:31.900Z",
        "traits": {
            "name": "Test Rudderlabs",
            "firstName": "Test",
            "lastName": "Rudderlabs",
            "email": "test@r.com",
            "hasPurchased": "yes",
            "address": "H.No. abc Street PQRS ",
            "state": "Delhi",
            "country": "India",
            "title": "Mr",
        },
        "type": "identify",
    }
    request = request_of(identify)
    assert request.endpoint == "https://www.woopra.com/track/identify"
    assert request.params == {
        "project": "abc.com",
        "cv_anonymousId": "21e13f4bc7ceddad",
        "cv_hasPurchased": "yes",
        "cv_address": "H.No. abc Street PQRS ",
        "cv_email": "test@r.com",
        "cookie": "21e13f4bc7ceddad",
        "timestamp": 1_601_322_811_900,
        "cv_name": "Test Rudderlabs",
        "cv_firstname": "Test",
        "cv_lastname": "Rudderlabs",
        "cv_title": "Mr",
        "cv_state": "Delhi",
        "cv_country": "India",
        "app": "RuddCDN",
        "os": "Android",
        "browser": "Chrome86.0.4240.111",
    }

    android_track = {
        "anonymousId": "21e13f4bc7ceddad",
        "context": {
            "externalId": [{"type": "woopraId", "id": "abcd123451"}],
            "app": {"build": "4"},
            "os": {"name": "Android", "version": "9"},
            "traits": {"anonymousId": "21e13f4bc7ceddad", "customProp": "customValue"},
            "userAgent": DALVIK,
        },
        "event": "First Investment",
        "messageId": "1601322811899-d9c7dd00-50dc-4364-95c8-e89423eb3cfb",
        "originalTimestamp": "2020-09-28T19:53:31.900Z",
        "properties": {"currency": "EUR", "revenue": 20.37566},
        "type": "track",
    }
    params = params_of(android_track)
    assert params["cookie"] == "abcd123451"
    assert params["browser"] == "Android9"
    assert params["cv_customProp"] == "customValue"

    page = {
        "anonymousId": "21e13f4bc7ceddad",
        "context": {
            "page": {
                "referrer": "https://www.google.com/",
                "referring_domain": "www.google.com",
                "initial_referrer": "https://www.google.com/",
                "initial_referring_domain": "www.google.com",
            },
            "traits": {"customProp": "customValue"},
            "userAgent": DALVIK,
        },
        "name": "Home",
        "messageId": "1601322811899-d9c7dd00-50dc-4364-95c8-e89423eb3cfb",
        "originalTimestamp": "2020-09-28T19:53:31.900Z",
        "properties": {"title": "Home | RudderStack", "url": "http://www.rudderstack.com"},
        "type": "page",
    }
    params = params_of(page)
    assert params["event"] == "viewed home page"
    assert params["ce_page_referring_domain"] == "www.google.com"
    assert params["ce_page_initial_referring_domain"] == "www.google.com"
    assert params["ce_referrer"] == "https://www.google.com/"
    assert params["browser"] == "Android9"
