"""Logging with structlog: console lines on a terminal, JSON lines otherwise.

Every line carries `run_id`, `step` and `attempt` (null outside a step), bound through
contextvars by the engine. Every line passes `REDACTOR` (see `orchestrator.redact`), so a
secret a run resolved is `***` in it.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from orchestrator.redact import REDACTOR
from orchestrator.terminal import printable

__all__ = [
    "add_run_fields",
    "compact_run_fields",
    "configure_logging",
    "escape_controls",
    "get_logger",
]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def add_run_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Make `run_id`, `step` and `attempt` present on every line, null when not in a step."""
    for key in ("run_id", "step", "attempt"):
        event_dict.setdefault(key, None)
    return event_dict


def compact_run_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console only: `step#attempt` before the message, and no null run fields."""
    step, attempt = event_dict.pop("step", None), event_dict.pop("attempt", None)
    if step is not None:
        where = f"{step}#{attempt}" if attempt is not None else str(step)
        event_dict["event"] = f"{where:<14} {event_dict.get('event', '')}"
    if event_dict.get("run_id") is None:
        event_dict.pop("run_id", None)
    return event_dict


def escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console only: string values with control characters escaped, so a value a step or a
    provider sent cannot drive the terminal (JSON lines escape them already)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = printable(value, lines=key == "exception")
    return event_dict


def configure_logging(*, fmt: str = "auto", level: str = "info",
                      stream: TextIO | None = None) -> None:
    """Set structlog up for this process; `fmt` is auto, console or json."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_run_fields,
        structlog.processors.add_log_level,
        REDACTOR,
    ]
    if use_json:
        # Tracebacks become text before the redactor sees the line.
        processors.insert(-1, structlog.processors.format_exc_info)
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True),
                       structlog.processors.JSONRenderer()]
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            compact_run_fields,
            escape_controls,
            structlog.dev.ConsoleRenderer(colors=out.isatty(), pad_event=40,
                                          exception_formatter=structlog.dev.plain_traceback),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(**bound)
    return logger
