"""Logging with structlog: console lines on a terminal, JSON lines otherwise.

Every line carries `run_id`, `step` and `attempt` (null outside a step), bound through
contextvars by the engine. `Redactor` replaces the value of every secret the run resolved with
`***` in every log line, event and stored error, so a secret that leaks into a message is still
never written anywhere. The command line also wraps stdout and stderr in a `RedactingStream`,
the last line of defence for text that reaches the terminal by another path (a failure summary,
a table, a live progress line, a traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

__all__ = [
    "REDACTOR",
    "RedactingStream",
    "Redactor",
    "add_run_fields",
    "compact_run_fields",
    "configure_logging",
    "get_logger",
]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
MASK = "***"


class Redactor:
    """Knows the secret values in use in this process and masks them wherever they appear."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        """The secrets longest first, so a secret containing another is masked whole."""

    def add(self, values: Iterable[str]) -> None:
        # Very short values would mask innocent text everywhere and are not worth hiding.
        for value in values:
            if len(value) >= 4:
                self._secrets.add(value)
                # As it appears inside JSON text (quotes, backslashes, non-ASCII escaped).
                self._secrets.add(json.dumps(value)[1:-1])
        self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    @property
    def active(self) -> bool:
        """Whether any secret is known (masking costs nothing until one is)."""
        return bool(self._secrets)

    def clear(self) -> None:
        self._secrets.clear()
        self._ordered = ()

    def text(self, value: str) -> str:
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """`value` with secrets masked in every string inside it (mappings and lists too)."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        """A structlog processor."""
        if not self._secrets:
            return event_dict
        return {k: self.value(v) for k, v in event_dict.items()}


REDACTOR = Redactor()
"""The process's one redactor: the engine adds each run's secrets to it."""


class RedactingStream:
    """A text stream that masks the process's known secrets in everything written to it.

    Writes are masked one call at a time: print, rich and structlog each write a whole line or
    render per call, so a secret is not split between two writes.
    """

    def __init__(self, stream: TextIO, redactor: Redactor = REDACTOR) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.text(text) if self._redactor.active else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...
        return getattr(self._stream, name)


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
