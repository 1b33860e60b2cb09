"""From a RudderStack event to one Woopra tracking request (SPEC §2, §4-§7): pure functions.

`prepare_event` runs the checks that decide whether an event can be sent at all and who it
belongs to; `build_request` turns a prepared (and possibly stitched) event into the request.
`map_event` is both at once, for a single event without stitching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transforms.core.fields import (
    as_object,
    first_non_empty,
    non_empty,
    path,
    traits_and_context,
    woopra_integration,
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
from transforms.core.standard_traits import CONSUMED_TRAIT_KEYS, add_standard_visitor_params
from transforms.core.timestamps import InvalidTimestampError, event_timestamp_ms
from transforms.core.useragent import browser_of
from transforms.core.values import flatten_into

DEFAULT_BASE_URL = "https://www.woopra.com"
SUPPORTED_TYPES = ("identify", "track", "page", "screen")
MAX_URL_BYTES = 8000
WOOPRA_ID_TYPE = "woopraid"
# Keys of `traits` that feed named parameters instead of `cv_<key>` (SPEC §5, §5a).
_TRAITS_NOT_COPIED = frozenset({"userId", "id", "company"}) | CONSUMED_TRAIT_KEYS
# Page properties that fall back to `context.page` when missing or null (SPEC §6).
_PAGE_FALLBACK_KEYS = ("url", "title", "referrer", "search", "path")
# Named parameters read from `context.<key>.<field>` (SPEC §5).
_CONTEXT_PARAMS = (("device", "device", "type"), ("app", "app", "name"), ("os", "os", "name"))
# Page parameters from `context.page`, unless the flattened properties give them (SPEC §5a).
_PAGE_REFERRING_DOMAINS = (
    ("ce_page_referring_domain", "referring_domain"),
    ("ce_page_initial_referring_domain", "initial_referring_domain"),
)


@dataclass
class MappingSettings:
    """What the user configured that changes the requests.

    Not frozen: a frozen class compiled by mypyc cannot be unpickled on a worker.
    """

    project_name: str | None = None
    base_url: str = DEFAULT_BASE_URL
    idle_timeout_ms: int | None = None
    track_endpoint: str = field(init=False, repr=False, compare=False)
    identify_endpoint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = self.base_url.rstrip("/")
        self.track_endpoint = base + "/track/ce"
        self.identify_endpoint = base + "/track/identify"


@dataclass(slots=True, init=False)
class PreparedEvent:
    """An event that passed every check up to its timestamp, with who it belongs to.

    Not frozen: a frozen dataclass costs five times as much to build, once per event.
    """

    event: dict[str, Any]
    event_type: str
    project: str
    message_id: str | None
    timestamp_ms: int | None
    cv_id: str | None
    cv_email: str | None
    cookie: str | None

    # Written out: the one dataclasses would write is interpreted, this one compiled (a
    # tenth of the cost, and each event is built two or three times).
    def __init__(
        self,
        event: dict[str, Any],
        event_type: str,
        project: str,
        message_id: str | None,
        timestamp_ms: int | None,
        cv_id: str | None,
        cv_email: str | None,
        cookie: str | None,
    ) -> None:
        self.event = event
        self.event_type = event_type
        self.project = project
        self.message_id = message_id
        self.timestamp_ms = timestamp_ms
        self.cv_id = cv_id
        self.cv_email = cv_email
        self.cookie = cookie

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle's default makes an empty object first, which a compiled __init__ refuses.
        return PreparedEvent, (
            self.event,
            self.event_type,
            self.project,
            self.message_id,
            self.timestamp_ms,
            self.cv_id,
            self.cv_email,
            self.cookie,
        )

    @property
    def device_key(self) -> str:
        """The device an event belongs to: its cookie, else its cv_id, else its cv_email."""
        if self.cookie is not None:
            return "cookie:" + self.cookie
        if self.cv_id is not None:
            return "cv_id:" + self.cv_id
        return "cv_email:" + str(self.cv_email)

    def with_identity(self, cv_id: str | None, cv_email: str | None) -> PreparedEvent:
        """The same event under a stitched identity (faster than dataclasses.replace)."""
        return PreparedEvent(
            self.event,
            self.event_type,
            self.project,
            self.message_id,
            self.timestamp_ms,
            cv_id,
            cv_email,
            self.cookie,
        )

    @property
    def send_order(self) -> tuple[bool, int, str]:
        """Timestamp order, ties broken by messageId; events without a timestamp last."""
        return (self.timestamp_ms is None, self.timestamp_ms or 0, self.message_id or "")


def message_id_of(event: Any) -> str | None:
    """The event's messageId as text, when it has one."""
    return non_empty(event.get("messageId")) if isinstance(event, dict) else None


def _dead(event: dict[str, Any], reason: str, detail: str) -> DeadLetter:
    return DeadLetter(message_id_of(event), STAGE_MAP, reason, detail, event=event)


def prepare_event(event: dict[str, Any], settings: MappingSettings) -> PreparedEvent | DeadLetter:
    """Check type, project, identity and timestamp, in that order (SPEC §1)."""
    raw_type = event.get("type")
    if not isinstance(raw_type, str):
        return _dead(event, MISSING_TYPE, "type is missing or not a string")
    event_type = raw_type.lower()
    if event_type not in SUPPORTED_TYPES:
        return _dead(event, UNSUPPORTED_TYPE, f"type {raw_type[:64]!r} is not supported")
    project = project_of(event, settings)
    if project is None:
        return _dead(event, MISSING_PROJECT, "no projectName in integrations and none configured")
    cv_id, cv_email, cookie = identity_of(event)
    if cv_id is None and cv_email is None and cookie is None:
        return _dead(event, MISSING_IDENTITY, "no userId, email, woopraId or anonymousId")
    try:
        timestamp_ms = event_timestamp_ms(event)
    except InvalidTimestampError as err:
        return _dead(event, INVALID_TIMESTAMP, str(err))
    message_id = message_id_of(event)
    return PreparedEvent(
        event, event_type, project, message_id, timestamp_ms, cv_id, cv_email, cookie
    )


def project_of(event: dict[str, Any], settings: MappingSettings) -> str | None:
    """`integrations.<woopra>.projectName`, else the configured project (SPEC §2)."""
    _, integration = woopra_integration(event)
    named = as_object(integration).get("projectName")
    if isinstance(named, str) and named:
        return named
    return settings.project_name or None


def identity_of(event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """The event's own cv_id, cv_email and cookie (SPEC §4)."""
    traits, context, context_traits = traits_and_context(event)
    cv_id = first_non_empty(
        event.get("userId"),
        traits.get("userId"),
        traits.get("id"),
        context_traits.get("userId"),
        context_traits.get("id"),
    )
    cv_email = first_non_empty(
        traits.get("email"),
        context_traits.get("email"),
        as_object(event.get("properties")).get("email"),
    )
    cookie = woopra_id_in(context.get("externalId")) or non_empty(event.get("anonymousId"))
    return cv_id, cv_email, cookie


def woopra_id_in(external_ids: Any) -> str | None:
    """The id of the first `context.externalId` entry of type woopraId with a non-empty id."""
    if type(external_ids) is not list:
        return None
    for entry in external_ids:
        entry_type = entry.get("type") if type(entry) is dict else None
        if type(entry_type) is str and entry_type.lower() == WOOPRA_ID_TYPE:
            woopra_id = non_empty(entry.get("id"))
            if woopra_id is not None:
                return woopra_id
    return None


def build_request(prepared: PreparedEvent, settings: MappingSettings) -> WoopraRequest | DeadLetter:
    """The Woopra request for a prepared event, or `request_too_large` (SPEC §5-§7)."""
    request = request_of(prepared, settings)
    if request.url_length_bound() > MAX_URL_BYTES:
        url_bytes = request.url_length()
        if url_bytes > MAX_URL_BYTES:
            detail = f"request URL is {url_bytes} bytes, over {MAX_URL_BYTES}"
            return _dead(prepared.event, REQUEST_TOO_LARGE, detail)
    return request


def request_of(prepared: PreparedEvent, settings: MappingSettings) -> WoopraRequest:
    """The request's parameters for a prepared event, before the URL size check: import
    mode (SPEC §14) builds its lines from them and checks the line size instead."""
    event = prepared.event
    event_type = prepared.event_type
    params: dict[str, Any] = {"project": prepared.project}
    properties = as_object(event.get("properties"))
    if event_type == "identify":
        endpoint = settings.identify_endpoint
        _add_visitor_params(params, prepared, properties, settings)
    else:
        endpoint = settings.track_endpoint
        params["event"] = event_name_of(event_type, event)
        _add_visitor_params(params, prepared, properties, settings)
        if event_type == "page":
            page = as_object(path(event, "context", "page"))
            flatten_into(params, "ce_", _with_page_fallbacks(properties, page))
            _add_page_referring_domains(params, page)
        else:
            flatten_into(params, "ce_", properties)
        if event_type != "track":
            referer = _referer_of(event_type, event)
            if referer is not None:
                params["referer"] = referer
    return WoopraRequest(prepared.message_id, endpoint, params, event=event)


def map_event(event: dict[str, Any], settings: MappingSettings) -> WoopraRequest | DeadLetter:
    """The request for one event on its own, without identity stitching."""
    prepared = prepare_event(event, settings)
    if isinstance(prepared, DeadLetter):
        return prepared
    return build_request(prepared, settings)


def event_name_of(event_type: str, event: dict[str, Any]) -> str:
    """The Woopra `event` parameter of a track, page or screen (SPEC §6)."""
    if event_type == "track":
        return (non_empty(event.get("event")) or "").lower()
    words = [non_empty(event.get("category")), non_empty(event.get("name"))]
    named = " ".join(word for word in words if word is not None)
    return f"viewed {named or 'a'} {event_type}".lower()


def _add_visitor_params(
    params: dict[str, Any],
    prepared: PreparedEvent,
    properties: dict[str, Any],
    settings: MappingSettings,
) -> None:
    """Custom `cv_` traits, then the named parameters, which replace them (SPEC §5, §5a)."""
    event = prepared.event
    traits, context, context_traits = traits_and_context(event)
    if context_traits:
        flatten_into(params, "cv_", context_traits, skip=_TRAITS_NOT_COPIED)
    if traits:
        flatten_into(params, "cv_", traits, skip=_TRAITS_NOT_COPIED)
    if prepared.cv_id is not None:
        params["cv_id"] = prepared.cv_id
    if prepared.cv_email is not None:
        params["cv_email"] = prepared.cv_email
    if prepared.cookie is not None:
        params["cookie"] = prepared.cookie
    if prepared.timestamp_ms is not None:
        params["timestamp"] = prepared.timestamp_ms
    ip = non_empty(context.get("ip"))
    if ip is not None:
        params["ip"] = ip
        params["cv_ip"] = ip
    if traits or context_traits:
        name = first_non_empty(traits.get("name"), context_traits.get("name"))
        if name is not None:
            params["cv_name"] = name
        company = first_non_empty(
            _company_name(traits.get("company")), _company_name(context_traits.get("company"))
        )
        if company is not None:
            params["cv_company"] = company
    add_standard_visitor_params(params, traits, context, context_traits, properties)
    for param, key, field_name in _CONTEXT_PARAMS:
        holder = context.get(key)
        if type(holder) is dict:
            value = non_empty(holder.get(field_name))
            if value is not None:
                params[param] = value
    user_agent = context.get("userAgent")
    if type(user_agent) is str:
        browser = browser_of(user_agent)
        if browser is not None:
            params["browser"] = browser
    if settings.idle_timeout_ms is not None:
        params["timeout"] = settings.idle_timeout_ms


def _company_name(company: Any) -> Any:
    """A company given as an object counts by its `name`."""
    return company.get("name") if isinstance(company, dict) else company


def _with_page_fallbacks(properties: dict[str, Any], page: dict[str, Any]) -> dict[str, Any]:
    """A page's properties, with missing url, title, referrer, search, path from context.page."""
    fallback = {
        key: page[key]
        for key in _PAGE_FALLBACK_KEYS
        if properties.get(key) is None and page.get(key) is not None
    }
    return {**properties, **fallback} if fallback else properties


def _add_page_referring_domains(params: dict[str, Any], page: dict[str, Any]) -> None:
    """A page's referring domains from context.page, where its properties gave none."""
    if page:
        for param, key in _PAGE_REFERRING_DOMAINS:
            if param not in params:
                value = non_empty(page.get(key))
                if value is not None:
                    params[param] = value


def _referer_of(event_type: str, event: dict[str, Any]) -> str | None:
    """A page's referrer (with the context.page fallback); a screen's from properties only."""
    referrer = path(event, "properties", "referrer")
    if referrer is None and event_type == "page":
        referrer = path(event, "context", "page", "referrer")
    return non_empty(referrer)
