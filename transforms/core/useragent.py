"""The `browser` parameter from a user agent string, with uap-core rules (SPEC §5)."""

from __future__ import annotations

from functools import lru_cache

from ua_parser import parse_user_agent

UNKNOWN_FAMILY = "Other"


@lru_cache(maxsize=8192)
def browser_of(user_agent: str) -> str | None:
    """Family followed directly by its dotted version, as RudderStack sends it.

    `Chrome86.0.4240.111`, `Mobile Safari17.0`; the version stops at the first missing
    part. None for an agent the rules do not know. Cached: real traffic repeats a few
    thousand agents.
    """
    parsed = parse_user_agent(user_agent)
    if parsed is None or parsed.family == UNKNOWN_FAMILY:
        return None
    parts = []
    for part in (parsed.major, parsed.minor, parsed.patch, parsed.patch_minor):
        if not part:
            break
        parts.append(part)
    return parsed.family + ".".join(parts)
