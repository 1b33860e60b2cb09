"""SPEC §1 (type, checks, shapes), §2 (project), §5 and §6 (parameters), §7 (URL size):
`prepare_event`, `build_request`, `map_event`, `event_name_of`, `project_of`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from transforms.core.mapping import (
    MappingSettings,
    PreparedEvent,
    build_request,
    event_name_of,
    map_event,
    prepare_event,
    project_of,
)
from transforms.core.records import (
    INVALID_TIMESTAMP,
    MISSING_IDENTITY,
    MISSING_PROJECT,
    MISSING_TYPE,
    REQUEST_TOO_LARGE,
    STAGE_MAP,
    UNSUPPORTED_TYPE,
    DeadLetter,
    WoopraRequest,
)

PROJECT = "configured.example.com"
SETTINGS = MappingSettings(project_name=PROJECT)
ABSENT = object()

CHROME_86 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/86.0.4240.111 Safari/537.36"
)
IPHONE_SAFARI_17 = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
FIREFOX_120 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
MAC_SAFARI_16 = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.1 Safari/605.1.15"
)


def make(event_type: Any = "track", **fields: Any) -> dict:
    """A minimal valid event of the type; a field given as ABSENT is left out."""
    base: dict[str, Any] = {
        "type": event_type,
        "messageId": "m-1",
        "anonymousId": "anon-1",
        "originalTimestamp": "2024-03-01T10:00:00.000Z",
    }
    if event_type == "track":
        base["event"] = "Order Completed"
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ABSENT}


def request_of(event: dict, settings: MappingSettings = SETTINGS) -> WoopraRequest:
    result = map_event(event, settings)
    assert isinstance(result, WoopraRequest), result
    return result


def params_of(event: dict, settings: MappingSettings = SETTINGS) -> dict[str, Any]:
    return request_of(event, settings).params


def dead_of(event: dict, settings: MappingSettings = SETTINGS) -> DeadLetter:
    result = map_event(event, settings)
    assert isinstance(result, DeadLetter), result
    assert result.stage == STAGE_MAP
    return result


# === §1 type ================================================================================


@pytest.mark.parametrize(
    ("raw_type", "expected"),
    [
        ("identify", "identify"),
        ("IDENTIFY", "identify"),
        ("Identify", "identify"),
        ("track", "track"),
        ("Track", "track"),
        ("TRACK", "track"),
        ("page", "page"),
        ("PAGE", "page"),
        ("screen", "screen"),
        ("ScReEn", "screen"),
    ],
)
def test_spec_1_type_is_case_insensitive(raw_type: str, expected: str) -> None:
    prepared = prepare_event(make(raw_type, event="Order Completed"), SETTINGS)
    assert isinstance(prepared, PreparedEvent)
    assert prepared.event_type == expected
    path = "/track/identify" if expected == "identify" else "/track/ce"
    assert request_of(make(raw_type)).endpoint == "https://www.woopra.com" + path


@pytest.mark.parametrize(
    "raw_type", ["alias", "group", "Alias", "trackx", " track", "track ", "page-view", "", "null"]
)
def test_spec_1_other_types_are_unsupported(raw_type: str) -> None:
    dead = dead_of(make(raw_type))
    assert dead.reason == UNSUPPORTED_TYPE
    assert dead.message_id == "m-1"


@pytest.mark.parametrize("raw_type", [ABSENT, None, 1, 0, True, False, ["track"], {"t": "track"}])
def test_spec_1_missing_or_non_string_type_is_missing_type(raw_type: Any) -> None:
    assert dead_of(make(raw_type)).reason == MISSING_TYPE


# === §1 check order =========================================================================


@pytest.mark.parametrize(
    ("event", "settings", "reason"),
    [
        # missing type beats everything after it
        ({"type": None}, MappingSettings(), MISSING_TYPE),
        ({"originalTimestamp": "bad", "traits": "x"}, MappingSettings(), MISSING_TYPE),
        # unsupported type beats missing project, identity and a bad timestamp
        ({"type": "alias", "originalTimestamp": "bad"}, MappingSettings(), UNSUPPORTED_TYPE),
        (make("alias"), MappingSettings(), UNSUPPORTED_TYPE),
        # missing project beats missing identity and a bad timestamp
        ({"type": "track", "originalTimestamp": "bad"}, MappingSettings(), MISSING_PROJECT),
        (make(anonymousId=ABSENT), MappingSettings(), MISSING_PROJECT),
        # missing identity beats a bad timestamp
        (make(anonymousId=ABSENT, originalTimestamp="bad"), SETTINGS, MISSING_IDENTITY),
        (
            make(anonymousId="", timestamp="bad", originalTimestamp=ABSENT),
            SETTINGS,
            MISSING_IDENTITY,
        ),
        # a bad timestamp beats a URL that would be too large
        (make(originalTimestamp="bad", properties={"p": "x" * 9000}), SETTINGS, INVALID_TIMESTAMP),
        # finally the URL size
        (make(properties={"p": "x" * 9000}), SETTINGS, REQUEST_TOO_LARGE),
    ],
)
def test_spec_1_first_failing_check_decides(
    event: dict, settings: MappingSettings, reason: str
) -> None:
    assert dead_of(event, settings).reason == reason


def test_spec_1_prepare_event_stops_before_the_url_check() -> None:
    event = make(properties={"p": "x" * 9000})
    assert isinstance(prepare_event(event, SETTINGS), PreparedEvent)


def test_spec_9_map_dead_letter_carries_message_id_and_original_event() -> None:
    event = make(anonymousId=ABSENT, messageId="m-dead", properties={"a": [1, None]})
    original = copy.deepcopy(event)
    dead = dead_of(event)
    assert dead.reason == MISSING_IDENTITY
    assert dead.to_dict() == {
        "message_id": "m-dead",
        "stage": "map",
        "reason": "missing_identity",
        "detail": dead.detail,
        "status": None,
        "attempts": 0,
        "event": original,
    }
    assert isinstance(dead.detail, str)
    assert dead.detail


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [("m-1", "m-1"), (17, "17"), (ABSENT, None), (None, None), ({"id": 1}, None), ("", None)],
)
def test_spec_9_message_id_of_dead_letter(message_id: Any, expected: str | None) -> None:
    event = make(messageId=message_id, anonymousId=ABSENT)
    assert dead_of(event).message_id == expected


# === §1 wrong shapes ========================================================================


@pytest.mark.parametrize(
    "fields",
    [
        {"traits": "vip"},
        {"traits": ["a", "b"]},
        {"traits": 42},
        {"properties": ["a", "b"]},
        {"properties": "text"},
        {"properties": 3.5},
        {"context": 7},
        {"context": "ctx"},
        {"context": ["ip"]},
        {"context": {"traits": "t", "page": "p", "device": ["d"], "app": 1, "os": True}},
        {"context": {"externalId": {"type": "woopraId", "id": "w"}}},
        {"context": {"externalId": "woopraId"}},
        {"context": {"externalId": [None, 1, "x", ["woopraId"], {"type": 5, "id": "w"}]}},
        {"context": {"ip": {"v4": "1.2.3.4"}, "userAgent": ["Chrome"]}},
        {"context": {"consentManagement": ["x"]}},
        {"integrations": ["woopra"]},
        {"integrations": "woopra"},
        {"integrations": {"woopra": "on"}},
        {"integrations": {"woopra": ["projectName"]}},
        {"userId": {"id": "u"}},
        {"messageId": ["m"]},
        {"category": {"c": 1}, "name": ["n"]},
        {"event": {"name": "e"}},
    ],
)
def test_spec_1_wrong_shaped_fields_are_treated_as_absent(fields: dict) -> None:
    params = params_of(make(**fields))
    assert params["project"] == PROJECT
    assert params["cookie"] == "anon-1"
    assert "cv_id" not in params
    assert "cv_email" not in params
    for named in ("ip", "cv_ip", "device", "app", "os", "browser"):
        assert named not in params
    assert not any(key.startswith("cv_") for key in params)
    assert not any(key.startswith("ce_") for key in params)


@pytest.mark.parametrize("event_type", ["page", "screen", "identify"])
def test_spec_1_wrong_shapes_in_every_type_never_crash(event_type: str) -> None:
    event = make(
        event_type,
        traits="t",
        properties=[1],
        context={"page": ["url"], "traits": 4, "device": "phone"},
        name={"n": 1},
        category=[],
    )
    params = params_of(event)
    assert params["cookie"] == "anon-1"
    assert not any(key.startswith(("ce_", "cv_")) for key in params)
    assert "referer" not in params


# === §2 project =============================================================================


@pytest.mark.parametrize(
    ("integrations", "configured", "expected"),
    [
        ({"woopra": {"projectName": "from-event"}}, PROJECT, "from-event"),
        ({"Woopra": {"projectName": "from-event"}}, PROJECT, "from-event"),
        ({"WOOPRA": {"projectName": "from-event"}}, PROJECT, "from-event"),
        ({"wooPRA": {"projectName": "from-event"}}, None, "from-event"),
        ({"All": True, "Woopra": {"projectName": "from-event"}}, None, "from-event"),
        ({"Woopra": {"projectName": ""}}, PROJECT, PROJECT),
        ({"Woopra": {"projectName": None}}, PROJECT, PROJECT),
        ({"Woopra": {"projectName": True}}, PROJECT, PROJECT),
        ({"Woopra": {"projectName": {"name": "x"}}}, PROJECT, PROJECT),
        ({"Woopra": {"projectName": ["x"]}}, PROJECT, PROJECT),
        ({"Woopra": {"project": "x"}}, PROJECT, PROJECT),
        ({"Woopra": {"ProjectName": "x"}}, PROJECT, PROJECT),
        ({"Woopra": True}, PROJECT, PROJECT),
        ({"Woopra": "from-event"}, PROJECT, PROJECT),
        ({"Amplitude": {"projectName": "other"}}, PROJECT, PROJECT),
        ({"woopra2": {"projectName": "other"}}, PROJECT, PROJECT),
        ({}, PROJECT, PROJECT),
        (ABSENT, PROJECT, PROJECT),
        ("woopra", PROJECT, PROJECT),
        (
            {"Woopra": {"projectName": 123}},
            PROJECT,
            PROJECT,
        ),
    ],
)
def test_spec_2_project_precedence(
    integrations: Any, configured: str | None, expected: str
) -> None:
    event = make(integrations=integrations)
    settings = MappingSettings(project_name=configured)
    assert project_of(event, settings) == expected
    assert params_of(event, settings)["project"] == expected


@pytest.mark.parametrize(
    ("integrations", "configured"),
    [
        (ABSENT, None),
        (ABSENT, ""),
        ({"Woopra": {"projectName": ""}}, None),
        ({"Woopra": {"projectName": None}}, ""),
        ({"Woopra": {"projectName": False}}, None),
        ({"Woopra": True}, None),
        (
            {"Woopra": {"projectName": 7}},
            None,
        ),
    ],
)
def test_spec_2_no_project_is_missing_project(integrations: Any, configured: str | None) -> None:
    settings = MappingSettings(project_name=configured)
    assert dead_of(make(integrations=integrations), settings).reason == MISSING_PROJECT


# === §5 named parameters ====================================================================


def test_spec_5_minimal_track_has_exactly_the_expected_params() -> None:
    assert params_of(make()) == {
        "project": PROJECT,
        "event": "order completed",
        "cookie": "anon-1",
        "timestamp": 1_709_287_200_000,
    }


@pytest.mark.parametrize("event_type", ["identify", "track", "page", "screen"])
def test_spec_5_common_params_for_every_type(event_type: str) -> None:
    event = make(
        event_type,
        userId="u-1",
        traits={"email": "ann@example.com", "name": "Ann", "company": "Acme"},
        context={
            "ip": "203.0.113.9",
            "userAgent": CHROME_86,
            "device": {"type": "desktop"},
            "app": {"name": "Shop"},
            "os": {"name": "Windows"},
        },
    )
    params = params_of(event, MappingSettings(project_name=PROJECT, idle_timeout_ms=600_000))
    expected = {
        "project": PROJECT,
        "cv_id": "u-1",
        "cv_email": "ann@example.com",
        "cookie": "anon-1",
        "timestamp": 1_709_287_200_000,
        "ip": "203.0.113.9",
        "cv_ip": "203.0.113.9",
        "cv_name": "Ann",
        "cv_company": "Acme",
        "device": "desktop",
        "app": "Shop",
        "os": "Windows",
        "browser": "Chrome86.0.4240.111",
        "timeout": 600_000,
    }
    assert {key: params.get(key) for key in expected} == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("198.51.100.7", "198.51.100.7"), ("2001:db8::1", "2001:db8::1"), ("", None), (None, None)],
)
def test_spec_5_ip_and_cv_ip_come_from_context_ip(ip: Any, expected: str | None) -> None:
    params = params_of(make(context={"ip": ip}))
    assert params.get("ip") == expected
    assert params.get("cv_ip") == expected


def test_spec_5_no_context_ip_gives_neither_ip_param() -> None:
    params = params_of(make(context={"device": {"type": "mobile"}}))
    assert "ip" not in params
    assert "cv_ip" not in params


@pytest.mark.parametrize(
    ("traits", "context_traits", "expected"),
    [
        ({"name": "Trait"}, {"name": "Context"}, "Trait"),
        ({}, {"name": "Context"}, "Context"),
        ({"name": ""}, {"name": "Context"}, "Context"),
        ({"name": None}, {"name": "Context"}, "Context"),
        ({"name": 42}, {}, "42"),
        ({}, {}, None),
    ],
)
def test_spec_5_cv_name_precedence(traits: dict, context_traits: dict, expected: Any) -> None:
    params = params_of(make(traits=traits, context={"traits": context_traits}))
    assert params.get("cv_name") == expected


@pytest.mark.parametrize(
    ("traits", "context_traits", "expected"),
    [
        ({"company": "Acme"}, {"company": "Context Co"}, "Acme"),
        ({"company": {"name": "Acme Inc", "plan": "gold"}}, {"company": "Context Co"}, "Acme Inc"),
        ({}, {"company": "Context Co"}, "Context Co"),
        ({}, {"company": {"name": "Context Co", "id": "c1"}}, "Context Co"),
        ({"company": ""}, {"company": "Context Co"}, "Context Co"),
        ({"company": None}, {"company": {"name": "Context Co"}}, "Context Co"),
        ({"company": {"id": "c1"}}, {"company": "Context Co"}, "Context Co"),
        ({"company": {"name": ""}}, {"company": "Context Co"}, "Context Co"),
        ({"company": {"name": 99}}, {}, "99"),
        ({"company": 7}, {}, "7"),
        ({"company": {"id": "c1"}}, {}, None),
        ({}, {}, None),
    ],
)
def test_spec_5_cv_company_object_gives_its_name(
    traits: dict, context_traits: dict, expected: Any
) -> None:
    params = params_of(make(traits=traits, context={"traits": context_traits}))
    assert params.get("cv_company") == expected
    assert not any(key.startswith("cv_company_") for key in params)


@pytest.mark.parametrize(
    ("context", "param", "expected"),
    [
        ({"device": {"type": "mobile"}}, "device", "mobile"),
        ({"device": {"type": ""}}, "device", None),
        ({"device": {"model": "iPhone"}}, "device", None),
        ({"device": "mobile"}, "device", None),
        ({"app": {"name": "Shop", "version": "1.2"}}, "app", "Shop"),
        ({"app": {"name": None}}, "app", None),
        ({"app": "Shop"}, "app", None),
        ({"os": {"name": "iOS", "version": "17.0"}}, "os", "iOS"),
        ({"os": {"name": 11}}, "os", "11"),
        ({"os": ["iOS"]}, "os", None),
    ],
)
def test_spec_5_device_app_os(context: dict, param: str, expected: str | None) -> None:
    assert params_of(make(context=context)).get(param) == expected


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (CHROME_86, "Chrome86.0.4240.111"),
        (IPHONE_SAFARI_17, "Mobile Safari17.0"),
        (FIREFOX_120, "Firefox120.0"),
        (MAC_SAFARI_16, "Safari16.1"),
        ("totally-unknown-agent/?", None),
        ("", None),
        (None, None),
        (12345, None),
    ],
)
def test_spec_5_browser_from_user_agent(user_agent: Any, expected: str | None) -> None:
    params = params_of(make(context={"userAgent": user_agent}))
    assert params.get("browser") == expected


def test_spec_5_browser_never_raises_on_odd_agents() -> None:
    for agent in ("\x00", "Chrome/\x00", "(" * 5000, "é" * 2000):
        params = params_of(make(context={"userAgent": agent}))
        assert params.get("browser") is None or isinstance(params["browser"], str)


@pytest.mark.parametrize(
    ("timeout", "expected"), [(None, None), (300_000, 300_000), (1_800_000, 1_800_000)]
)
def test_spec_5_timeout_only_when_configured(timeout: int | None, expected: int | None) -> None:
    settings = MappingSettings(project_name=PROJECT, idle_timeout_ms=timeout)
    for event_type in ("identify", "track"):
        assert params_of(make(event_type), settings).get("timeout") == expected


# === §5 cv_<key> ============================================================================


def test_spec_5_cv_keys_from_traits_and_context_traits() -> None:
    event = make(
        traits={"plan": "gold", "visits": 31, "vip": True, "tags": ["a", "b"]},
        context={"traits": {"region": "EU", "score": 1.5}},
    )
    params = params_of(event)
    assert params["cv_plan"] == "gold"
    assert params["cv_visits"] == 31
    assert params["cv_vip"] is True
    assert params["cv_tags"] == '["a","b"]'
    assert params["cv_region"] == "EU"
    assert params["cv_score"] == 1.5


@pytest.mark.parametrize(
    ("traits", "context_traits", "name", "expected"),
    [
        ({"plan": "gold"}, {"plan": "silver"}, "cv_plan", "gold"),
        ({"plan": None}, {"plan": "silver"}, "cv_plan", "silver"),
        ({"plan": "gold"}, {"plan": None}, "cv_plan", "gold"),
        ({}, {"plan": "silver"}, "cv_plan", "silver"),
        ({"plan": ""}, {"plan": "silver"}, "cv_plan", ""),
        ({"plan": False}, {"plan": "silver"}, "cv_plan", False),
        ({"plan": 0}, {"plan": "silver"}, "cv_plan", 0),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, "cv_a_b", 1),
        ({"a": {"b": None}}, {"a": {"b": 2}}, "cv_a_b", 2),
        ({"a": None}, {"a": {"b": 2}}, "cv_a_b", 2),
        ({"a": {"c": 1}}, {"a": {"b": 2}}, "cv_a_b", 2),
        ({"a": {"c": 1}}, {"a": {"b": 2}}, "cv_a_c", 1),
        ({"a_b": 3}, {"a": {"b": 2}}, "cv_a_b", 3),
        ({"tags": []}, {"tags": ["x"]}, "cv_tags", "[]"),
        ({"plan": None}, {"plan": None}, "cv_plan", None),
    ],
)
def test_spec_5_traits_win_over_context_traits_and_null_never_wins(
    traits: dict, context_traits: dict, name: str, expected: Any
) -> None:
    params = params_of(make(traits=traits, context={"traits": context_traits}))
    assert params.get(name, None) == expected
    assert type(params.get(name, None)) is type(expected)


@pytest.mark.parametrize("source", ["traits", "context_traits"])
def test_spec_5_user_id_id_and_company_are_not_copied(source: str) -> None:
    values = {"userId": True, "id": ["x"], "company": {"id": "c1", "plan": "gold"}, "keep": 1}
    event = make(traits=values) if source == "traits" else make(context={"traits": dict(values)})
    params = params_of(event)
    assert params["cv_keep"] == 1
    for key in ("cv_userId", "cv_id", "cv_company", "cv_company_id", "cv_company_plan"):
        assert key not in params


def test_spec_5_user_id_and_id_in_traits_feed_only_cv_id() -> None:
    params = params_of(make(traits={"userId": "u-traits", "id": "id-traits"}))
    assert params["cv_id"] == "u-traits"
    assert "cv_userId" not in params


@pytest.mark.parametrize(
    ("fields", "name", "expected"),
    [
        ({"context": {"ip": "10.0.0.1", "traits": {"ip": "192.0.2.1"}}}, "cv_ip", "10.0.0.1"),
        ({"traits": {"ip": "192.0.2.1"}, "context": {"ip": "10.0.0.1"}}, "cv_ip", "10.0.0.1"),
        ({"traits": {"email": ""}, "properties": {"email": "p@x.io"}}, "cv_email", "p@x.io"),
        ({"context": {"traits": {"email": False}}, "userId": 5}, "cv_id", "5"),
        (
            {"traits": {"name": {"first": "A"}}, "context": {"traits": {"name": "Ctx"}}},
            "cv_name",
            "Ctx",
        ),
        ({"traits": {"name": 7}}, "cv_name", "7"),
    ],
)
def test_spec_5_named_params_replace_flattened_traits(
    fields: dict, name: str, expected: Any
) -> None:
    assert params_of(make(**fields))[name] == expected


def test_spec_5_flattened_trait_stays_when_no_named_value_exists() -> None:
    params = params_of(make(traits={"ip": "192.0.2.1"}))
    assert params["cv_ip"] == "192.0.2.1"
    assert "ip" not in params


# === §6 identify ============================================================================


def test_spec_6_identify_goes_to_track_identify_with_section_5_only() -> None:
    event = make(
        "identify",
        userId="u-1",
        traits={"plan": "gold"},
        properties={"email": "p@example.com", "plan": "ignored", "referrer": "https://r.io"},
        context={"page": {"url": "https://site.io", "referrer": "https://ref.io"}},
        event="Should Not Matter",
        name="Home",
    )
    request = request_of(event)
    assert request.endpoint == "https://www.woopra.com/track/identify"
    assert request.method == "GET"
    assert request.params == {
        "project": PROJECT,
        "cv_id": "u-1",
        "cv_email": "p@example.com",
        "cookie": "anon-1",
        "timestamp": 1_709_287_200_000,
        "cv_plan": "gold",
    }


def test_spec_6_identify_properties_email_loses_to_traits_email() -> None:
    event = make(
        "identify", traits={"email": "t@example.com"}, properties={"email": "p@example.com"}
    )
    assert params_of(event)["cv_email"] == "t@example.com"


# === §6 track ===============================================================================


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Order Completed", "order completed"),
        ("SIGNED UP", "signed up"),
        ("already lower", "already lower"),
        ("Ünïcode Évent", "ünïcode évent"),
        (42, "42"),
        (0, "0"),
        (-3, "-3"),
        (1.5, "1.5"),
        (2.0, "2"),
        ("", ""),
        (None, ""),
        (ABSENT, ""),
        (True, ""),
        (False, ""),
        ({"name": "x"}, ""),
        (["x"], ""),
    ],
)
def test_spec_6_track_event_name(name: Any, expected: str) -> None:
    event = make(event=name)
    assert event_name_of("track", event) == expected
    request = request_of(event)
    assert request.endpoint == "https://www.woopra.com/track/ce"
    assert request.params["event"] == expected


def test_spec_6_track_properties_become_ce_params() -> None:
    event = make(
        properties={
            "total": 19.99,
            "currency": "EUR",
            "coupon": None,
            "items": [{"sku": "a"}],
            "shipping": {"method": "air", "cost": {"amount": 5}},
            "gift": False,
            "": "nameless",
        }
    )
    params = params_of(event)
    ce = {key: value for key, value in params.items() if key.startswith("ce_")}
    assert ce == {
        "ce_total": 19.99,
        "ce_currency": "EUR",
        "ce_items": '[{"sku":"a"}]',
        "ce_shipping_method": "air",
        "ce_shipping_cost_amount": 5,
        "ce_gift": False,
    }
    assert "referer" not in params


def test_spec_6_track_does_not_take_context_page() -> None:
    event = make(context={"page": {"url": "https://site.io", "referrer": "https://ref.io"}})
    params = params_of(event)
    assert not any(key.startswith("ce_") for key in params)


# === §6 page and screen =====================================================================


@pytest.mark.parametrize("kind", ["page", "screen"])
@pytest.mark.parametrize(
    ("category", "name", "words"),
    [
        ("Docs", "Install", "docs install"),
        ("DOCS", "Getting Started", "docs getting started"),
        (ABSENT, "Install", "install"),
        ("", "Install", "install"),
        (None, "Install", "install"),
        ({"c": 1}, "Install", "install"),
        ("Docs", ABSENT, "docs"),
        ("Docs", "", "docs"),
        ("Docs", None, "docs"),
        ("Docs", ["n"], "docs"),
        (ABSENT, ABSENT, "a"),
        ("", "", "a"),
        (None, None, "a"),
        (True, False, "a"),
        (3, 4, "3 4"),
        (ABSENT, 404, "404"),
    ],
)
def test_spec_6_page_and_screen_event_names(
    kind: str, category: Any, name: Any, words: str
) -> None:
    event = make(kind, category=category, name=name)
    expected = f"viewed {words} {kind}"
    assert event_name_of(kind, event) == expected
    assert params_of(event)["event"] == expected


@pytest.mark.parametrize("raw_type", ["PAGE", "Screen"])
def test_spec_6_page_and_screen_name_uses_the_lower_case_type(raw_type: str) -> None:
    params = params_of(make(raw_type, name="Home"))
    assert params["event"] == f"viewed home {raw_type.lower()}"


CONTEXT_PAGE = {
    "url": "https://site.io/docs?q=1",
    "title": "Docs",
    "referrer": "https://ref.io/",
    "search": "?q=1",
    "path": "/docs",
    "hash": "#top",
    "tab_url": "https://other.io",
}


def test_spec_6_page_takes_missing_properties_from_context_page() -> None:
    params = params_of(
        make("page", name="Docs", properties={"plan": "x"}, context={"page": CONTEXT_PAGE})
    )
    ce = {key: value for key, value in params.items() if key.startswith("ce_")}
    assert ce == {
        "ce_plan": "x",
        "ce_url": "https://site.io/docs?q=1",
        "ce_title": "Docs",
        "ce_referrer": "https://ref.io/",
        "ce_search": "?q=1",
        "ce_path": "/docs",
    }
    assert params["referer"] == "https://ref.io/"


@pytest.mark.parametrize(
    ("properties", "key", "expected"),
    [
        ({"url": "https://own.io"}, "ce_url", "https://own.io"),
        ({"url": None}, "ce_url", CONTEXT_PAGE["url"]),
        ({"url": ""}, "ce_url", ""),
        ({"title": "Own"}, "ce_title", "Own"),
        ({"title": None}, "ce_title", "Docs"),
        ({"title": 0}, "ce_title", 0),
        ({"search": False}, "ce_search", False),
        ({"path": "/own"}, "ce_path", "/own"),
        ({"path": {"a": "b"}}, "ce_path_a", "b"),
        ({"path": {"a": "b"}}, "ce_path", None),
        ({"hash": "#own"}, "ce_hash", "#own"),
        ({}, "ce_hash", None),
        ({}, "ce_tab_url", None),
    ],
)
def test_spec_6_page_context_fallback_only_when_missing_or_null(
    properties: dict, key: str, expected: Any
) -> None:
    params = params_of(make("page", properties=properties, context={"page": CONTEXT_PAGE}))
    assert params.get(key) == expected


@pytest.mark.parametrize(
    ("properties", "context_page", "expected"),
    [
        ({"referrer": "https://own.io"}, CONTEXT_PAGE, "https://own.io"),
        ({}, CONTEXT_PAGE, "https://ref.io/"),
        ({"referrer": None}, CONTEXT_PAGE, "https://ref.io/"),
        ({"referrer": ""}, CONTEXT_PAGE, None),
        ({}, {"referrer": ""}, None),
        ({}, {"referrer": None}, None),
        ({}, {}, None),
        ({}, "https://ref.io/", None),
        ([], CONTEXT_PAGE, "https://ref.io/"),
    ],
)
def test_spec_6_page_referer(properties: Any, context_page: Any, expected: str | None) -> None:
    params = params_of(make("page", properties=properties, context={"page": context_page}))
    assert params.get("referer") == expected


def test_spec_6_screen_has_no_context_page_fallback() -> None:
    params = params_of(make("screen", name="Home", context={"page": CONTEXT_PAGE}))
    assert not any(key.startswith("ce_") for key in params)
    assert "referer" not in params
    assert params["event"] == "viewed home screen"


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"referrer": "https://own.io"}, "https://own.io"),
        ({"referrer": ""}, None),
        ({"referrer": None}, None),
        ({}, None),
    ],
)
def test_spec_6_screen_referer_from_properties_only(properties: dict, expected: Any) -> None:
    event = make("screen", properties=properties, context={"page": CONTEXT_PAGE})
    assert params_of(event).get("referer") == expected


def test_spec_6_screen_properties_become_ce_params() -> None:
    params = params_of(make("screen", properties={"url": "app://x", "depth": {"level": 2}}))
    assert params["ce_url"] == "app://x"
    assert params["ce_depth_level"] == 2


@pytest.mark.parametrize(
    ("base_url", "event_type", "endpoint"),
    [
        ("https://www.woopra.com", "track", "https://www.woopra.com/track/ce"),
        ("http://localhost:8080", "track", "http://localhost:8080/track/ce"),
        ("http://localhost:8080/", "page", "http://localhost:8080/track/ce"),
        ("http://127.0.0.1:9/stub", "identify", "http://127.0.0.1:9/stub/track/identify"),
    ],
)
def test_spec_6_base_url_is_configurable(base_url: str, event_type: str, endpoint: str) -> None:
    settings = MappingSettings(project_name=PROJECT, base_url=base_url)
    request = request_of(make(event_type), settings)
    assert request.endpoint == endpoint
    assert request.url().startswith(endpoint + "?")


def test_spec_6_default_base_url() -> None:
    assert MappingSettings().base_url == "https://www.woopra.com"


# === §7 URL size ============================================================================


def padded(length: int, fill: str = "x") -> dict:
    return make(properties={"pad": fill * length})


def base_url_bytes(fill: str = "x") -> int:
    return len(request_of(padded(0, fill)).url().encode("utf-8"))


def test_spec_7_url_of_exactly_8000_bytes_is_sent_whole() -> None:
    length = 8000 - base_url_bytes()
    request = request_of(padded(length))
    assert len(request.url().encode("utf-8")) == 8000
    assert request.params["ce_pad"] == "x" * length


def test_spec_7_url_of_8001_bytes_is_request_too_large() -> None:
    length = 8001 - base_url_bytes()
    event = padded(length)
    dead = dead_of(event)
    assert dead.reason == REQUEST_TOO_LARGE
    assert dead.message_id == "m-1"
    assert dead.event == event
    assert "8001" in dead.detail


def test_spec_7_url_size_counts_encoded_bytes() -> None:
    # "é" travels as %C3%A9: six bytes in the URL for one character.
    length = (8000 - base_url_bytes("é")) // 6
    fits = request_of(padded(length, "é"))
    assert len(fits.url()) <= 8000
    assert dead_of(padded(length + 1, "é")).reason == REQUEST_TOO_LARGE


def test_spec_7_url_size_includes_the_endpoint() -> None:
    length = 8000 - base_url_bytes()
    long_base = MappingSettings(project_name=PROJECT, base_url="https://www.woopra.com/x")
    assert isinstance(map_event(padded(length), SETTINGS), WoopraRequest)
    assert dead_of(padded(length), long_base).reason == REQUEST_TOO_LARGE


def test_spec_7_build_request_of_a_prepared_event_checks_the_url() -> None:
    prepared = prepare_event(make(traits={"bio": "y" * 9000}), SETTINGS)
    assert isinstance(prepared, PreparedEvent)
    dead = build_request(prepared, SETTINGS)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == REQUEST_TOO_LARGE
    assert dead.stage == STAGE_MAP
