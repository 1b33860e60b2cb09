"""A deterministic, realistic stream of RudderStack events for the benchmarks.

`generate_events(n, seed)` yields `n` event objects; `generate_lines(n, seed)` yields them as
JSON lines, a few of them broken on purpose; `write_jsonl(path, n, seed)` writes those lines
to a file and returns what it wrote, by kind. The same `n` and `seed` always give the same
bytes (`GENERATOR_VERSION` changes whenever the output does).

The mix, chosen to look like a real RudderStack export:

- types: about 15% identify, 60% track, 20% page (web devices), 5% screen (app devices);
- about 20,000 devices (`anonymousId`), a few of them very busy; about 45% of the devices
  belong to a known user, whose `userId` and email appear on the identifies and on only
  some of the other events, so that identity stitching has work to do; a user may own
  several devices; a few devices also send a `woopraId` in `context.externalId`;
- traits with a nested address and company, lists, numbers and booleans; properties of
  5 to 15 keys, some nested, some lists, some null;
- context with ip, a user agent from a pool of 30 real-world strings (desktop and mobile
  browsers, in-app browsers, app HTTP clients, bots, curl and one garbage string),
  device, app, os, library, locale, screen, and `context.page` on pages;
- `originalTimestamp` over 90 days, in rough arrival order, mostly `...sss'Z'`, some
  without fraction, with microseconds or with a UTC offset; a few events only have
  `timestamp`;
- `integrations` naming a Woopra `projectName` on about 13% of the events, and turning
  Woopra off on 0.2% of them (filtered);
- about 0.5% bad lines: invalid JSON (cut short, or NaN), an unsupported type (`group`,
  `alias`), no identity at all.

Lines average about 860 bytes (identify ~830, track ~830, page ~950, screen ~1,000).
Run as a script to write a file:

    python -m bench.events --events 200000 --output bench/data/events.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
DEFAULT_SEED = 42
DEVICES = 20_000
START = datetime(2025, 1, 6, tzinfo=timezone.utc)
SPAN = timedelta(days=90)

# Shares of the event types (the rest, 5%, is screen).
IDENTIFY_SHARE, TRACK_SHARE, PAGE_SHARE = 0.15, 0.60, 0.20
# Shares of bad events and lines (about 0.5% in all) and of events Woopra is turned off for.
UNSUPPORTED_SHARE = 0.0015
NO_IDENTITY_SHARE = 0.0015
INVALID_JSON_SHARE = 0.002
WOOPRA_OFF_SHARE = 0.002

# Kinds that write_jsonl counts, as the pipeline should see them.
OK = "ok"
FILTERED = "filtered"
INVALID_JSON = "invalid_json"
UNSUPPORTED_TYPE = "unsupported_type"
MISSING_IDENTITY = "missing_identity"

# (user agent, platform): "web" devices send pages, "app" devices send screens.
USER_AGENTS: tuple[tuple[str, str], ...] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/86.0.4240.111 Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.6312.122 Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/122.0.0.0 Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "web",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:124.0) Gecko/20100101 Firefox/124.0",
        "web",
    ),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0", "web"),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
        "web",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
        "web",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0",
        "web",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        "web",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        "web",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.3 Mobile/15E148 Safari/604.1",
        "web",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/124.0.6367.71 Mobile/15E148 Safari/604.1",
        "web",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Mobile Safari/537.36",
        "web",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "web",
    ),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", "web"),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.43.107;FBBV/583490343]",
        "web",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.54 Mobile Safari/537.36 "
        "Instagram 329.0.0.41.93 Android",
        "web",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "web",
    ),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "web"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "web"),
    ("curl/8.4.0", "web"),
    ("python-requests/2.31.0", "web"),
    ("xX_n0t-a-UA_Xx ;;; (((", "web"),
    ("Dalvik/2.1.0 (Linux; U; Android 13; SM-G991B Build/TP1A.220624.014)", "app"),
    ("okhttp/4.12.0", "app"),
    ("Shopper/5.12.0 (com.example.shopper; build:5120; iOS 17.4.1) Alamofire/5.8.1", "app"),
    ("Shopper/5120 CFNetwork/1494.0.7 Darwin/23.4.0", "app"),
)

_APP_DEVICES = (
    ("iOS", "17.4.1", "Apple", "iPhone15,2", "mobile"),
    ("iOS", "16.6", "Apple", "iPhone13,3", "mobile"),
    ("iPadOS", "17.3", "Apple", "iPad13,18", "tablet"),
    ("Android", "14", "Google", "Pixel 8", "mobile"),
    ("Android", "13", "samsung", "SM-G991B", "mobile"),
    ("Android", "12", "Xiaomi", "2201117TG", "mobile"),
)
# (marker in the user agent, os name), first match wins.
_WEB_OS = (
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Macintosh", "Mac OS"),
    ("Linux", "Linux"),
)
_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP", "nl-NL", "en-IN")
_OFFSETS = ("+01:00", "+02:00", "-05:00", "-07:00", "+05:30", "+09:00", "-03:00")
_FIRST_NAMES = ("Ada", "Grace", "Linus", "Mei", "Omar", "Priya", "Sven", "Zoe", "Jamal", "Ines")
_LAST_NAMES = ("Lovelace", "Hopper", "Okafor", "Tanaka", "Schmidt", "Garcia", "Novak", "Kim")
_CITIES = (
    ("Berlin", "BE", "10115", "DE"),
    ("Austin", "TX", "73301", "US"),
    ("Lyon", "ARA", "69001", "FR"),
    ("Osaka", "27", "530-0001", "JP"),
    ("Leeds", "ENG", "LS1 1UR", "GB"),
    ("Recife", "PE", "50030-230", "BR"),
)
_STREETS = ("Main St", "Oak Avenue", "Rue de la Paix", "Hauptstrasse", "High Street")
_PLANS = ("free", "starter", "pro", "enterprise")
_INDUSTRIES = ("Retail", "Software", "Finance", "Health", "Media")
_TAGS = ("beta", "newsletter", "vip", "churn-risk", "mobile-first", "trial", "referral")
_TRACK_EVENTS = (
    "Product Viewed",
    "Product Added",
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Button Clicked",
    "Signed Up",
    "Logged In",
    "Search Performed",
    "Video Played",
    "Newsletter Subscribed",
    "Coupon Applied",
)
_PAGES = (
    ("/", "Home", None),
    ("/pricing", "Pricing", "Marketing"),
    ("/blog/release-notes-2025", "Release notes", "Blog"),
    ("/products/trail-runner-2", "Trail Runner 2", "Product"),
    ("/cart", "Cart", "Checkout"),
    ("/account/settings", "Settings", None),
    ("/docs/getting-started", "Getting started", "Docs"),
    ("/search", "Search", None),
)
_SCREENS = (("Home", None), ("Product", "Catalog"), ("Cart", "Checkout"), ("Profile", None))
_REFERRERS = (
    "",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://t.co/x1Yz",
    "https://news.ycombinator.com/",
    "$direct",
)
_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "BRL")
_CATEGORIES = ("Shoes", "Apparel", "Outdoor", "Books", "Electronics")
_SITE = "https://shop.example.com"


@dataclass
class _User:
    user_id: str | int
    email: str
    traits: dict[str, Any]


@dataclass
class _Device:
    anonymous_id: str
    platform: str
    user_agent: str
    ip: str
    locale: str
    context_device: dict[str, Any]
    os: dict[str, Any]
    screen: dict[str, Any]
    user: _User | None = None
    woopra_id: str | None = None


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _make_user(rng: random.Random, index: int) -> _User:
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    # A few sources send numeric user ids.
    user_id: str | int = 100_000 + index if rng.random() < 0.05 else f"usr_{index:06d}"
    email = f"{first}.{last}.{index}@example.{rng.choice(('com', 'org', 'io'))}".lower()
    city, state, postal_code, country = rng.choice(_CITIES)
    traits: dict[str, Any] = {
        "name": f"{first} {last}",
        "firstName": first,
        "lastName": last,
        "email": email,
        "plan": rng.choice(_PLANS),
        "age": rng.randint(18, 80),
        "verified": rng.random() < 0.7,
        "logins": rng.randint(1, 500),
        "tags": rng.sample(_TAGS, rng.randint(0, 3)),
        "createdAt": (START - timedelta(days=rng.randint(1, 900))).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "address": {
            "street": f"{rng.randint(1, 250)} {rng.choice(_STREETS)}",
            "city": city,
            "state": state,
            "postalCode": postal_code,
            "country": country,
        },
    }
    if rng.random() < 0.4:
        traits["company"] = {
            "name": f"{last} {rng.choice(('GmbH', 'Inc', 'Ltd', 'SA'))}",
            "id": f"cmp_{rng.randint(1, 4000)}",
            "industry": rng.choice(_INDUSTRIES),
            "employee_count": rng.choice((5, 40, 250, 1200)),
        }
    return _User(user_id, email, traits)


def _web_os_of(user_agent: str) -> str:
    for marker, os_name in _WEB_OS:
        if marker in user_agent:
            return os_name
    return ""


def _make_device(rng: random.Random, users: list[_User]) -> _Device:
    user_agent, platform = rng.choice(USER_AGENTS)
    if platform == "app":
        os_name, os_version, manufacturer, model, device_type = rng.choice(_APP_DEVICES)
        context_device = {
            "id": _uuid(rng),
            "manufacturer": manufacturer,
            "model": model,
            "name": model,
            "type": device_type,
        }
        screen = {"width": 1170, "height": 2532, "density": 3}
    else:
        os_name, os_version = _web_os_of(user_agent), ""
        context_device = {}
        screen = {}
    ip_prefix = rng.choice(("203.0.113", "198.51.100", "192.0.2", "2001:db8:85a3::8a2e"))
    ip = (
        f"{ip_prefix}:{rng.randint(1, 9999)}"
        if ":" in ip_prefix
        else f"{ip_prefix}.{rng.randint(1, 254)}"
    )
    device = _Device(
        anonymous_id=_uuid(rng),
        platform=platform,
        user_agent=user_agent,
        ip=ip,
        locale=rng.choice(_LOCALES),
        context_device=context_device,
        os={"name": os_name, "version": os_version},
        screen=screen,
    )
    if rng.random() < 0.45:
        device.user = rng.choice(users)
    if rng.random() < 0.05:
        device.woopra_id = "woo" + uuid.UUID(int=rng.getrandbits(128)).hex[:20]
    return device


def _timestamp_text(rng: random.Random, moment: datetime) -> str:
    """Mostly `...sss'Z'`; some without fraction, with microseconds, or with an offset."""
    roll = rng.random()
    if roll < 0.70:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if roll < 0.80:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if roll < 0.85:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    offset = rng.choice(_OFFSETS)
    sign = 1 if offset[0] == "+" else -1
    local = moment + sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    if roll < 0.95:
        return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}{offset}"
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + offset


def _iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _property_count(rng: random.Random) -> int:
    """5 to 15, mostly 6 to 9."""
    return int(rng.triangular(5, 16, 6))


def _track_properties(rng: random.Random, name: str, device: _Device) -> dict[str, Any]:
    """5 to 15 keys, with numbers, booleans, a nested object, a list and the odd null."""
    price = round(rng.uniform(3, 400), 2)
    quantity = rng.randint(1, 5)
    candidates: dict[str, Any] = {
        "product_id": f"prod_{rng.randint(1, 5000):05d}",
        "sku": f"SKU-{rng.randint(10000, 99999)}",
        "name": rng.choice(("Trail Runner 2", "Rain Shell", "Field Notes", "USB-C Hub")),
        "category": rng.choice(_CATEGORIES),
        "price": price,
        "quantity": quantity,
        "currency": rng.choice(_CURRENCIES),
        "value": round(price * quantity, 2),
        "in_stock": rng.random() < 0.9,
        "coupon": None if rng.random() < 0.6 else f"SPRING{rng.randint(5, 30)}",
        "position": rng.randint(1, 48),
        "tags": rng.sample(_TAGS, rng.randint(1, 3)),
        "cart": {
            "id": f"cart_{rng.getrandbits(40):010x}",
            "items": quantity + rng.randint(0, 4),
            "total": round(price * (quantity + 1), 2),
        },
        "experiment": {"id": "exp_checkout_v2", "variant": rng.choice(("control", "treatment"))},
        "source": rng.choice(("web", "ios", "android", "email")),
        "label": rng.choice(("primary", "secondary", "footer")),
    }
    keys = list(candidates)
    rng.shuffle(keys)
    extra: dict[str, Any] = {}
    if name == "Newsletter Subscribed" and device.user is not None:
        extra["email"] = device.user.email
    if name == "Order Completed":
        extra["order_id"] = f"ord_{rng.getrandbits(48):012x}"
        extra["products"] = [
            {"product_id": f"prod_{rng.randint(1, 5000):05d}", "price": price, "quantity": 1}
            for _ in range(rng.randint(1, 3))
        ]
    count = _property_count(rng) - len(extra)
    return {**{key: candidates[key] for key in keys[:count]}, **extra}


def _page(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any], str, str | None]:
    """The page's properties, its context.page, its name and its category."""
    page_path, title, category = rng.choice(_PAGES)
    search = "" if rng.random() < 0.8 else f"?q={rng.choice(('boots', 'jacket', 'hub'))}"
    referrer = rng.choice(_REFERRERS)
    url = _SITE + page_path + search
    context_page = {
        "path": page_path,
        "referrer": referrer,
        "search": search,
        "title": title,
        "url": url,
        "initial_referrer": rng.choice(_REFERRERS),
    }
    candidates: dict[str, Any] = {
        "path": page_path,
        "referrer": referrer,
        "search": search,
        "title": title,
        "url": url,
        "utm_source": rng.choice(("google", "newsletter", "twitter")),
        "utm_medium": rng.choice(("cpc", "email", "social")),
        "utm_campaign": f"spring_{rng.randint(1, 9)}",
        "logged_in": rng.random() < 0.4,
        "scroll_depth": rng.randint(0, 100),
        "load_time_ms": rng.randint(80, 4000),
        "viewport": {"width": rng.choice((1920, 390, 1440)), "height": rng.choice((1080, 844))},
        "ab_tests": rng.sample(("hero_v2", "nav_b", "cta_red", "price_anchor"), 2),
        "theme": rng.choice(("light", "dark")),
        "section": category,
    }
    keys = list(candidates)
    rng.shuffle(keys)
    properties = {key: candidates[key] for key in keys[: _property_count(rng)]}
    return properties, context_page, title, category


def _screen_properties(rng: random.Random, name: str) -> dict[str, Any]:
    candidates: dict[str, Any] = {
        "name": name,
        "previous_screen": rng.choice([s for s, _ in _SCREENS]),
        "load_time_ms": rng.randint(20, 2500),
        "dark_mode": rng.random() < 0.5,
        "orientation": rng.choice(("portrait", "landscape")),
        "screens_viewed": rng.randint(1, 40),
        "feature_flags": rng.sample(("new_cart", "fast_pay", "wishlist", "ar_view"), 2),
        "deeplink": {"source": rng.choice(("push", "email", "none")), "campaign": "spring"},
        "referrer": rng.choice(("push", "", "deeplink")),
        "build": 5120,
    }
    keys = list(candidates)
    rng.shuffle(keys)
    return {key: candidates[key] for key in keys[: rng.randint(5, 10)]}


def _identify_traits(rng: random.Random, device: _Device) -> dict[str, Any]:
    if device.user is None:
        # An anonymous visitor's traits: no userId, no email.
        return {
            "plan": "free",
            "utm_source": rng.choice(("google", "newsletter", "twitter")),
            "visits": rng.randint(1, 30),
            "interests": rng.sample(_CATEGORIES, 2),
            "cookie_consent": rng.random() < 0.8,
        }
    traits = dict(device.user.traits)
    traits["lastSeenPlatform"] = device.platform
    return traits


class _Generator:
    """All the state behind one stream of events; one per generate_events call."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = max(n, 1)
        self.rng = random.Random(seed)
        rng = self.rng
        device_count = min(DEVICES, max(10, n // 10))
        users = [_make_user(rng, index) for index in range(max(1, device_count * 3 // 10))]
        self.devices = [_make_device(rng, users) for _ in range(device_count)]
        self.web = [device for device in self.devices if device.platform == "web"]
        self.app = [device for device in self.devices if device.platform == "app"]
        # A few very busy devices (about 5% of the traffic goes to 25 of them).
        self.busy_web = self.web[:20]
        self.busy_app = self.app[:5]

    def pick_device(self, platform: str | None) -> _Device:
        rng = self.rng
        if platform == "web" or (platform is None and rng.random() < 0.75):
            pool, busy = self.web, self.busy_web
        else:
            pool, busy = self.app, self.busy_app
        return rng.choice(busy) if rng.random() < 0.05 else rng.choice(pool)

    def event(self, index: int) -> tuple[str, dict[str, Any]]:
        """The kind of event (OK, FILTERED, ...) and the event."""
        rng = self.rng
        roll = rng.random()
        if roll < IDENTIFY_SHARE:
            event_type, platform = "identify", None
        elif roll < IDENTIFY_SHARE + TRACK_SHARE:
            event_type, platform = "track", None
        elif roll < IDENTIFY_SHARE + TRACK_SHARE + PAGE_SHARE:
            event_type, platform = "page", "web"
        else:
            event_type, platform = "screen", "app"
        device = self.pick_device(platform)
        user = device.user

        # Arrival order over 90 days, with up to an hour of client clock skew either way.
        moment = START + SPAN * (index / self.n) + timedelta(seconds=rng.uniform(-3600, 3600))
        moment = moment.replace(microsecond=rng.randrange(1_000_000))
        # The SDK sends a little later; `timestamp` is the server's view of the same moment.
        delay = timedelta(milliseconds=rng.randint(50, 30_000))

        context: dict[str, Any] = {
            "ip": device.ip,
            "userAgent": device.user_agent,
            "locale": device.locale,
            "os": dict(device.os),
        }
        if device.platform == "app":
            context["app"] = {
                "name": "Shopper",
                "version": "5.12.0",
                "build": "5120",
                "namespace": "com.example.shopper",
            }
            context["device"] = dict(device.context_device)
            context["screen"] = dict(device.screen)
            context["library"] = {"name": "rudder-sdk-ios", "version": "1.24.1"}
            context["network"] = {"wifi": rng.random() < 0.6, "carrier": "Example Mobile"}
        else:
            context["library"] = {"name": "RudderLabs JavaScript SDK", "version": "3.0.8"}
        if user is not None and event_type != "identify" and rng.random() < 0.1:
            context["traits"] = {"email": user.email}
        if device.woopra_id is not None and rng.random() < 0.7:
            context["externalId"] = [{"type": "woopraId", "id": device.woopra_id}]

        event: dict[str, Any] = {
            "type": event_type,
            "messageId": _uuid(rng),
            "anonymousId": device.anonymous_id,
            "context": context,
        }
        if user is not None and (event_type == "identify" or rng.random() < 0.35):
            event["userId"] = user.user_id

        if event_type == "identify":
            event["traits"] = _identify_traits(rng, device)
        elif event_type == "track":
            name = rng.choice(_TRACK_EVENTS)
            event["event"] = name
            event["properties"] = _track_properties(rng, name, device)
        elif event_type == "page":
            properties, context_page, name, category = _page(rng)
            context["page"] = context_page
            event["name"] = name
            if category is not None:
                event["category"] = category
            event["properties"] = properties
        else:
            name, category = rng.choice(_SCREENS)
            event["name"] = name
            if category is not None:
                event["category"] = category
            event["properties"] = _screen_properties(rng, name)

        if rng.random() < 0.995:
            event["originalTimestamp"] = _timestamp_text(rng, moment)
        event["timestamp"] = _iso_z(moment + delay / 50)

        integrations: dict[str, Any] = {"All": True}
        roll = rng.random()
        if roll < 0.10:
            integrations["Woopra"] = {"projectName": "bench-eu"}
        elif roll < 0.13:
            integrations["woopra"] = {"projectName": "bench-apps"}
        event["integrations"] = integrations

        roll = rng.random()
        if roll < UNSUPPORTED_SHARE:
            event["type"] = rng.choice(("group", "alias"))
            return UNSUPPORTED_TYPE, event
        roll -= UNSUPPORTED_SHARE
        if roll < NO_IDENTITY_SHARE:
            for key in ("anonymousId", "userId", "traits"):
                event.pop(key, None)
            context.pop("traits", None)
            context.pop("externalId", None)
            if isinstance(event.get("properties"), dict):
                event["properties"].pop("email", None)
            return MISSING_IDENTITY, event
        roll -= NO_IDENTITY_SHARE
        if roll < WOOPRA_OFF_SHARE:
            # Only the Woopra key: an exact `woopra` key would win over `Woopra`.
            event["integrations"] = {"All": True, "Woopra": False}
            return FILTERED, event
        return OK, event


def generate_kinds(n: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, dict[str, Any]]]:
    """`n` events, each with its kind: OK, FILTERED, UNSUPPORTED_TYPE or MISSING_IDENTITY."""
    generator = _Generator(n, seed)
    for index in range(n):
        yield generator.event(index)


def generate_events(n: int, seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
    """`n` RudderStack events, the same ones for the same `n` and `seed`."""
    for _, event in generate_kinds(n, seed):
        yield event


def _broken(rng: random.Random, line: str) -> str:
    """A line that is not valid JSON: cut short, or with a NaN in it."""
    if rng.random() < 0.5:
        return line[: rng.randint(10, len(line) - 2)]
    return line.replace('"type":', '"score":NaN,"type":', 1)


def generate_lines(n: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, str]]:
    """`n` JSON lines (without the newline), each with its kind; about 0.2% invalid JSON."""
    broken_rng = random.Random(seed + 1)
    for kind, event in generate_kinds(n, seed):
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        if broken_rng.random() < INVALID_JSON_SHARE:
            yield INVALID_JSON, _broken(broken_rng, line)
        else:
            yield kind, line


def write_jsonl(path: str | Path, n: int, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write `n` lines to `path`; returns the line count, the size and the count of each kind."""
    kinds: Counter[str] = Counter()
    size = 0
    with open(path, "wb") as handle:
        for kind, line in generate_lines(n, seed):
            kinds[kind] += 1
            size += handle.write(line.encode("utf-8") + b"\n")
    return {"lines": n, "bytes": size, "kinds": dict(sorted(kinds.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--output", default="bench/data/events.jsonl")
    args = parser.parse_args()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(write_jsonl(args.output, args.events, args.seed)))


if __name__ == "__main__":
    main()
