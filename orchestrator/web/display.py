"""Stored values as the web view's pages show them: text, always, whatever a step stored.

A page never prints a Python repr (`None`, `{'a': 1}`): a missing value is `-`, a structure
is its JSON, a long value is cut with its length said (the JSON API gives every value whole),
a time is local time, or the schedule's zone's where one has its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.durations import format_duration
from orchestrator.views.shapes import document_text

__all__ = ["SHOWN_CHARS", "compact", "cut", "evaluations", "event_row", "heat", "shown",
           "smoke", "span", "when", "when_in"]

SHOWN_CHARS = 2000
"""Characters of one stored value a page shows (a step's answer, an event's data)."""


def when(ts: Any) -> str:
    """A stored time as local time; anything else as it is (a page shows what is stored)."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return cut(str(ts), 40)


def when_in(ts: Any, zone: str) -> str:
    """A time in a schedule's own zone, named (`2026-12-07 02:00 CET`)."""
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
    except (TypeError, ValueError, OverflowError, OSError, ZoneInfoNotFoundError):
        return when(ts)


def span(seconds: Any) -> str:
    if seconds is None:
        return "-"
    if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0:
        return format_duration(seconds)
    return cut(str(seconds), 40)


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def compact(value: Any) -> str:
    return cut(document_text(value))


def shown(value: Any) -> str:
    """Any stored value as a page prints it: `-` for none, text as it is, the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return cut(value)
    return compact(value)


def event_row(event: Mapping[str, Any]) -> dict[str, str]:
    """An event (`event_json`) as a row of a page's event table: when, where, what, detail.
    A `log` event shows its level, message and fields; any part may be missing."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {"data": data}
    where = str(event.get("step") or "-") + (f"#{event['attempt']}" if event.get("attempt")
                                              else "")
    if event.get("kind") == "log":
        fields = data.get("fields")
        message = str(data.get("message", ""))
        detail = message if not fields else f"{message} {compact(fields)}"
        return {"when": when(event.get("ts")), "where": where,
                "what": str(data.get("level", "log")), "detail": cut(detail)}
    return {"when": when(event.get("ts")), "where": where, "what": str(event.get("kind")),
            "detail": compact(data) if data else ""}


def smoke(outputs: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The smoke test's answer and latency, from the outputs that hold them."""
    found = next((o for o in outputs if "text" in o and "latency" in o), None)
    if found is None:
        return None
    latency = found["latency"]
    seconds = f"{latency} s" if isinstance(latency, int | float) else cut(str(latency), 40)
    return {"text": cut(str(found["text"])), "latency": seconds}


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else "-"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def evaluations(steps: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each evaluate step's scores as the run page's table shows them: per scorer, the
    model's, the baseline's and the lift (a step that failed its gate kept them in its
    checkpoint). `steps`: step id -> (outputs, checkpoint)."""
    found = []
    for step_id, (outputs, checkpoint) in steps.items():
        kept = (checkpoint or {}).get("result")
        result = outputs if outputs and "scores" in outputs else kept
        if not isinstance(result, Mapping) or not isinstance(result.get("scores"), Mapping):
            continue
        baseline = _mapping(result.get("baseline"))
        base_scores = _mapping(baseline.get("scores"))
        lift = _mapping(result.get("lift"))
        found.append({
            "step": step_id, "model": cut(str(result.get("model", "-")), 200),
            "baseline": cut(str(baseline.get("model", "-")), 200),
            "count": shown(result.get("count")), "passed": result.get("passed") is not False,
            "rows": [(cut(str(name), 80), _score(value), _score(base_scores.get(name)),
                      _score(lift.get(name))) for name, value in result["scores"].items()]})
    return found


def heat(values: Mapping[str, float], *, maximize: bool, levels: int = 5) -> dict[str, int]:
    """Each cell's place on a heat scale of `levels` (0 worst, levels - 1 best) by its
    figure, for the batch grid's colours (classes, not inline styles: the page's CSP)."""
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    if high == low:
        return dict.fromkeys(values, levels - 1)
    scale = {k: (v - low) / (high - low) for k, v in values.items()}
    return {k: round((f if maximize else 1 - f) * (levels - 1)) for k, f in scale.items()}
