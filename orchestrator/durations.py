"""Durations as pipeline authors write them: `500ms`, `30s`, `2m`, `1h30m`, `1d`, or seconds.

Imports nothing heavy (tables print durations at every command's start): the pydantic field
type that reads one is `definition.fields.Duration`.
"""

from __future__ import annotations

import re

from orchestrator.errors import shorten

__all__ = ["DURATION_SCHEMA", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
HINT = "use a number of seconds or a number with a unit: 500ms, 30s, 5m, 2h, 1d, 1h30m"


MAX_SECONDS = 10 * 365 * 86400.0
"""Ten years: longer is a mistake, and an infinite or astronomic wait breaks timers."""


def _bounded(seconds: float, value: object) -> float:
    if not seconds <= MAX_SECONDS:  # also NaN
        raise ValueError(f"bad duration {_shown(value)}: at most ten years")
    return seconds


def _shown(value: object) -> str:
    return shorten(repr(value), 40)


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string; raises ValueError with a hint otherwise."""
    if isinstance(value, bool):  # pydantic turns ValueError (not TypeError) into a field error
        raise ValueError(f"bad duration {value!r}: {HINT}")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"bad duration {_shown(value)}: must not be negative")
        return _bounded(float(min(value, MAX_SECONDS + 1)), value)
    if isinstance(value, str):
        text = value.strip()
        if _WHOLE.match(text):
            return _bounded(sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text)),
                            value)
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if seconds >= 0:
                return _bounded(seconds, value)
    raise ValueError(f"bad duration {_shown(value)}: {HINT}")


def format_duration(seconds: float) -> str:
    """A short human form for tables: `850ms`, `12.3s`, `4m05s`, `2h10m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


DURATION_SCHEMA = {"anyOf": [
    {"type": "number", "minimum": 0},
    {"type": "string", "pattern": r"^\s*(?:(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+|\d+(?:\.\d+)?)\s*$"},
], "description": "seconds, or a number with a unit: 500ms, 30s, 5m, 2h, 1d, 1h30m"}
"""How a duration reads in the JSON Schema of pipeline files (editors check it)."""
