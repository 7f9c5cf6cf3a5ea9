"""Logging with structlog: console lines on a terminal, JSON lines otherwise.

Every line carries `run_id`, `step` and `attempt` (null outside a step), bound through
contextvars by the engine. Every line passes `REDACTOR` (see `orchestrator.redact`), so a
secret a run resolved is `***` in it.

Every module of ours reaches structlog through this one (a test holds it so): structlog's
`dev` module imports rich, when it is installed, to render tracebacks, which this project
renders plainly (`plain_traceback`); rich's import was 70 ms of every run's start and of the
Python API's import (measured), so it is hidden while structlog loads. Live progress on a
terminal imports rich itself, when it draws.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails meanwhile
    try:
        import structlog
    finally:
        del sys.modules["rich"]

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from orchestrator.ids import RunNames
from orchestrator.process import hold
from orchestrator.redact import REDACTOR
from orchestrator.terminal import printable

__all__ = [
    "ConsoleRunFields",
    "Logger",
    "add_run_fields",
    "configure_logging",
    "configure_silently",
    "escape_controls",
    "get_logger",
    "is_configured",
]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

Logger = FilteringBoundLogger
"""A bound logger, as `get_logger` returns it."""


def add_run_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Make `run_id`, `step` and `attempt` present on every line, null when not in a step."""
    for key in ("run_id", "step", "attempt"):
        event_dict.setdefault(key, None)
    return event_dict


class ConsoleRunFields:
    """Console only: where the line comes from (run as `RunNames` names it, `step#attempt`)
    before the message, no run field after it, and no null run fields."""

    def __init__(self, names: RunNames | None = None) -> None:
        self._names = names or RunNames()

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        step, attempt = event_dict.pop("step", None), event_dict.pop("attempt", None)
        run_id = event_dict.pop("run_id", None)
        where = "" if step is None else f"{step}#{attempt}" if attempt is not None else str(step)
        where = self._names.place(run_id, where)
        if where:
            event_dict["event"] = f"{where:<14} {event_dict.get('event', '')}"
        return event_dict


def escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console only: string values with control characters escaped, so a value a step or a
    provider sent cannot drive the terminal (JSON lines escape them already)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = printable(value, lines=key == "exception")
    return event_dict


def configure_logging(*, fmt: str = "auto", level: str = "info",
                      stream: TextIO | None = None, names: RunNames | None = None) -> None:
    """Set structlog up for this process; `fmt` is auto, console or json; `names` says how
    console lines name their run (JSON lines always carry `run_id`)."""
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
            ConsoleRunFields(names),
            escape_controls,
            structlog.dev.ConsoleRenderer(colors=out.isatty(), pad_event_to=40,
                                          exception_formatter=structlog.dev.plain_traceback),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


hold(structlog, name="logging", why="configured once per command (configure_logging)",
     reset=structlog.reset_defaults)


def get_logger(**bound: Any) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(**bound)
    return logger


def configure_silently() -> bool:
    """Drop every line, unless structlog was set up already (by the caller of the Python
    API, say): True if this set it up. A line nobody asked for goes nowhere; what steps log
    is kept with their run either way."""
    if structlog.is_configured():
        return False
    structlog.configure(processors=[_silent], cache_logger_on_first_use=False,
                        wrapper_class=structlog.make_filtering_bound_logger("critical"))
    return True


def is_configured() -> bool:
    return structlog.is_configured()


def _silent(_: Any, __: str, ___: Any) -> Any:
    raise structlog.DropEvent
