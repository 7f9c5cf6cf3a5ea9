"""What an address may ask the web view for: ids, filters and page numbers, checked before the
store is asked. A value that cannot be used is a 400 saying which (an id no run could have is
simply not found): never a 500, whatever comes in."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request

from orchestrator.store.policy import no_such_batch, no_such_run, no_such_schedule
from orchestrator.store.records import parse_statuses
from orchestrator.store.rows import EVENTS_END

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "MAX_QUERY_TEXT", "BadQuery", "path_id", "plain",
           "run_filters", "whole"]

MAX_PAGE = 500
"""The most runs one page (or API call) lists; `before` pages further back."""
DEFAULT_PAGE = 50
MAX_QUERY_TEXT = 200
"""The longest id or filter value taken from an address; ids are far shorter."""


class BadQuery(ValueError):
    """A query parameter that cannot be used: 400, saying which."""


def plain(value: str, name: str) -> str:
    """A value from the address that may reach the store: short, no control characters
    (PostgreSQL refuses a NUL in text; nothing stored has one in an id or a name)."""
    if len(value) > MAX_QUERY_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        msg = f"{name} must be at most {MAX_QUERY_TEXT} printable characters"
        raise BadQuery(msg)
    return value


def whole(request: Request, name: str, default: int, *, low: int = 0,
          high: int = EVENTS_END) -> int:
    """An integer query parameter, within [low, high]."""
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = int(raw) if len(raw) <= 20 else high + 1
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        msg = f"{name} must be a whole number from {low} to {high}"
        raise BadQuery(msg)
    return value


def path_id(request: Request, key: str) -> str:
    """A run's, batch's or schedule's id from the path; one none could have is not found,
    unasked."""
    value = request.path_params[key]
    try:
        return plain(value, key)
    except BadQuery:
        shown = value[:40]
        missing = {"batch_id": no_such_batch, "schedule_id": no_such_schedule}
        raise missing.get(key, no_such_run)(shown) from None


def run_filters(request: Request) -> dict[str, Any]:
    """The run filters of a runs page or `/api/runs`, checked."""
    params = request.query_params
    statuses = None
    if params.get("status"):
        try:
            statuses = parse_statuses(s for s in plain(params["status"], "status").split(",")
                                      if s.strip())
        except ValueError as exc:
            raise BadQuery(f"status {exc}") from None
    limit = whole(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    before = None
    if params.get("before"):
        try:
            before = float(params["before"][:40])
        except ValueError:
            before = math.nan
        if not 0 <= before < 1e12:
            msg = "before must be a time in seconds since the epoch"
            raise BadQuery(msg)
    return {"statuses": statuses,
            "pipeline": plain(params.get("pipeline", ""), "pipeline") or None,
            "batch_id": plain(params.get("batch", ""), "batch") or None, "limit": limit,
            "until": before}
