"""State URLs as they may be shown: a password in one never reaches a message or a log."""

from __future__ import annotations

from orchestrator.redact import MASK

__all__ = ["shown_url"]


def shown_url(url: str) -> str:
    """`url` with any password masked (`postgresql://me:***@host/db`)."""
    from urllib.parse import urlsplit, urlunsplit  # noqa: PLC0415  (start-up)

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL (e.g. a bad port): show only its kind
        return url.partition(":")[0] + "://..."
    if password is None:
        return url
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{parts.netloc.rpartition('@')[2]}"))
