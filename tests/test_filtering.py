"""SPEC §3: which events are filtered (never sent, never dead-lettered): `filter_reason`."""

from __future__ import annotations

from typing import Any

import pytest

from transforms.filtering import (
    BY_CONSENT,
    BY_EVENT_NAME,
    BY_INTEGRATIONS,
    FilterSettings,
    filter_reason,
)

NO_SETTINGS = FilterSettings()
ABSENT = object()


def event(event_type: Any = "track", event_name: Any = "Order Completed", **fields: Any) -> dict:
    base: dict[str, Any] = {
        "type": event_type,
        "event": event_name,
        "messageId": "m-1",
        "anonymousId": "anon-1",
        "originalTimestamp": "2024-03-01T10:00:00Z",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ABSENT}


def allow(*names: str) -> FilterSettings:
    return FilterSettings(allow_events=frozenset(names))


def deny(*names: str) -> FilterSettings:
    return FilterSettings(deny_events=frozenset(names))


def consent(*categories: str) -> FilterSettings:
    return FilterSettings(consent_categories=frozenset(categories))


def denied(*ids: Any) -> dict:
    return {"consentManagement": {"deniedConsentIds": list(ids)}}


# --- integrations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "integrations",
    [
        {"woopra": False},
        {"Woopra": False},
        {"WOOPRA": False},
        {"wOoPrA": False},
        {"All": True, "Woopra": False},
        {"All": False},
        {"All": False, "Amplitude": True},
        {"All": False, "Woopra": False},
        {"All": False, "Woopra": None},
        {"All": False, "Woopra": 0},
        {"All": False, "Woopra": 0.0},
        {"All": False, "Woopra": ""},
        {"All": False, "woopra": None},
    ],
)
def test_spec_3_integrations_turning_woopra_off_filter_the_event(integrations: dict) -> None:
    assert filter_reason(event(integrations=integrations), NO_SETTINGS) == BY_INTEGRATIONS


@pytest.mark.parametrize(
    "integrations",
    [
        ABSENT,
        None,
        {},
        {"All": True},
        {"woopra": True},
        {"Woopra": {"projectName": "p"}},
        {"woopra": 0},
        {"woopra": ""},
        {"woopra": None},
        {"woopra": "false"},
        {"All": "false"},
        {"All": 0},
        {"All": None},
        {"All": False, "Woopra": True},
        {"All": False, "WOOPRA": True},
        {"All": False, "Woopra": {}},
        {"All": False, "Woopra": {"projectName": "p"}},
        {"All": False, "Woopra": 1},
        {"All": False, "Woopra": "yes"},
        {"All": False, "Woopra": []},
        {"All": True, "Amplitude": False},
        [],
        ["woopra", False],
        "All",
        False,
        0,
    ],
)
def test_spec_3_integrations_that_leave_woopra_on_keep_the_event(integrations: Any) -> None:
    assert filter_reason(event(integrations=integrations), NO_SETTINGS) is None


def test_spec_3_true_is_not_taken_for_an_off_value_although_it_equals_one() -> None:
    assert filter_reason(event(integrations={"All": False, "woopra": True}), NO_SETTINGS) is None
    assert filter_reason(event(integrations={"All": False, "woopra": 0}), NO_SETTINGS) is not None


@pytest.mark.parametrize("event_type", ["bogus", None, 42, "identify", "alias"])
def test_spec_1_filtering_runs_before_type_project_and_identity_checks(event_type: Any) -> None:
    # An event that would later fail every check is still only filtered.
    dropped = {"type": event_type, "integrations": {"Woopra": False}}
    assert filter_reason(dropped, NO_SETTINGS) == BY_INTEGRATIONS
    assert filter_reason({"type": event_type}, NO_SETTINGS) is None


# --- allowlist / denylist of track event names ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("Order Completed", True),
        ("Product Viewed", True),
        ("order completed", False),
        ("ORDER COMPLETED", False),
        ("Order Completed ", False),
        (" Order Completed", False),
        ("Order", False),
        ("Signed Up", False),
        ("", False),
        (ABSENT, False),
        (None, False),
    ],
)
def test_spec_3_allowlist_keeps_only_exact_track_names(name: Any, kept: bool) -> None:
    settings = allow("Order Completed", "Product Viewed")
    reason = filter_reason(event(event_name=name), settings)
    assert reason == (None if kept else BY_EVENT_NAME)


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("Order Completed", False),
        ("Product Viewed", False),
        ("order completed", True),
        ("Order Completed ", True),
        ("Order", True),
        ("Signed Up", True),
        ("", True),
        (ABSENT, True),
    ],
)
def test_spec_3_denylist_drops_only_exact_track_names(name: Any, kept: bool) -> None:
    settings = deny("Order Completed", "Product Viewed")
    reason = filter_reason(event(event_name=name), settings)
    assert reason == (None if kept else BY_EVENT_NAME)


@pytest.mark.parametrize("event_type", ["TRACK", "Track", "tRaCk"])
def test_spec_3_event_name_lists_apply_to_track_of_any_case(event_type: str) -> None:
    assert filter_reason(event(event_type, "Signed Up"), allow("Order Completed")) is not None
    assert filter_reason(event(event_type, "Order Completed"), deny("Order Completed")) is not None
    assert filter_reason(event(event_type, "Order Completed"), allow("Order Completed")) is None


@pytest.mark.parametrize("event_type", ["page", "screen", "identify", "Page", "IDENTIFY"])
def test_spec_3_event_name_lists_apply_only_to_track(event_type: str) -> None:
    for name in ("Signed Up", "Order Completed", ABSENT):
        other = event(event_type, name, name=name, category="Docs")
        assert filter_reason(other, allow("Order Completed")) is None
        assert filter_reason(other, deny("Order Completed", "Signed Up")) is None


def test_spec_3_no_event_name_list_keeps_every_track() -> None:
    for name in ("Order Completed", "", ABSENT, 42):
        assert filter_reason(event(event_name=name), NO_SETTINGS) is None


# --- consent --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("categories", "context", "kept"),
    [
        (("analytics",), denied("analytics"), False),
        (("analytics",), denied("marketing", "analytics"), False),
        (("analytics", "ads"), denied("ads"), False),
        (("analytics", "ads"), denied("support", "ads", "other"), False),
        (("analytics",), denied("marketing"), True),
        (("analytics",), denied(), True),
        (("analytics",), denied("Analytics"), True),
        (("analytics",), denied("analytics "), True),
        (("analytics",), {"consentManagement": {"deniedConsentIds": "analytics"}}, True),
        (("analytics",), {"consentManagement": {"allowedConsentIds": ["analytics"]}}, True),
        (("analytics",), {"consentManagement": "analytics"}, True),
        (("analytics",), {}, True),
        (("analytics",), ABSENT, True),
        (("analytics",), "consent", True),
        ((), denied("analytics"), True),
        ((), denied("marketing", "analytics"), True),
    ],
)
def test_spec_3_consent_drops_events_with_a_denied_configured_category(
    categories: tuple[str, ...], context: Any, kept: bool
) -> None:
    reason = filter_reason(event(context=context), consent(*categories))
    assert reason == (None if kept else BY_CONSENT)


@pytest.mark.parametrize("event_type", ["identify", "track", "page", "screen"])
def test_spec_3_consent_applies_to_every_type(event_type: str) -> None:
    dropped = event(event_type, context=denied("analytics"))
    assert filter_reason(dropped, consent("analytics")) == BY_CONSENT


def test_spec_3_every_filter_applies_to_the_same_event() -> None:
    settings = FilterSettings(
        allow_events=frozenset({"Order Completed"}), consent_categories=frozenset({"ads"})
    )
    assert filter_reason(event(), settings) is None
    assert filter_reason(event(event_name="Signed Up"), settings) is not None
    assert filter_reason(event(context=denied("ads")), settings) is not None
    assert filter_reason(event(integrations={"woopra": False}), settings) is not None
