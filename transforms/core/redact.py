"""Credentials kept out of what is written or logged: URLs with a user and password in them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL with the password of its user part replaced (`https://u:***@host/`).

    A user part without a password may itself be a token (`https://TOKEN@host/`), so it is
    replaced instead. URLs without a user part come back unchanged.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = user_info.partition(":")
    shown = f"{user}:{REDACTED}" if has_password else REDACTED
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))
