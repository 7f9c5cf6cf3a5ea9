"""What a step logs through `ctx.log`: printed like every line, and kept with its attempt.

A run executed by a worker, a scheduler or another terminal prints its lines there, not where
its user looks; so each line a step logs at info or above is also handed to `keep`, which the
executor turns into a `log` event of the step's attempt in the run's journal (secrets masked,
written with the step's next commit or within the journal's flush delay). `logs RUN` shows
them whichever process ran the step.

Bounded, as every input is: a kept line's values are cut to MAX_VALUE characters each, and an
attempt keeps at most MAX_LINES lines; past that, lines are still printed, and one last kept
line says the rest were not.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.log import Logger

__all__ = ["MAX_LINES", "MAX_VALUE", "KeepLine", "StepLog"]

MAX_LINES = 2000
"""Lines one attempt of a step keeps in the store (a job's events, a smoke test's answer...)."""
MAX_VALUE = 2000
"""Characters kept of one value of a line (its message, or a field)."""

KeepLine = Callable[[str, str, Mapping[str, Any]], None]
"""Receives (level, message, fields) of a line worth keeping."""


def _plain(value: Any) -> Any:
    """`value` as JSON can hold it, long strings cut: what the store keeps of a field."""
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        text = json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = str(value)
    if len(text) > MAX_VALUE:
        return text[:MAX_VALUE] + "..."
    return json.loads(text) if isinstance(value, dict | list | tuple) else text


class _Budget:
    """How many more lines an attempt may keep (shared by the loggers `bind` derives)."""

    __slots__ = ("left",)

    def __init__(self, lines: int) -> None:
        self.left = lines


class StepLog:
    """`ctx.log`: a structlog logger whose lines at info and above are also kept."""

    __slots__ = ("_budget", "_fields", "_keep", "_log")

    def __init__(self, log: Logger, keep: KeepLine, *,
                 fields: Mapping[str, Any] | None = None, budget: _Budget | None = None) -> None:
        self._log = log
        self._keep = keep
        self._fields = dict(fields or {})
        self._budget = budget or _Budget(MAX_LINES)

    def bind(self, **fields: Any) -> StepLog:
        return StepLog(self._log.bind(**fields), self._keep, fields={**self._fields, **fields},
                       budget=self._budget)

    def _kept(self, level: str, event: str, fields: dict[str, Any]) -> None:
        budget = self._budget
        if budget.left <= 0:
            return
        budget.left -= 1
        if budget.left == 0:
            self._keep("warning", f"this attempt logged more than {MAX_LINES} lines: later "
                                  "ones are printed, not kept", {})
            return
        self._keep(level, _plain(str(event)),
                   {k: _plain(v) for k, v in {**self._fields, **fields}.items()})

    def debug(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.debug(event, *args, **fields)

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.info(event, *args, **fields)
        self._kept("info", event % args if args else event, fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.warning(event, *args, **fields)
        self._kept("warning", event % args if args else event, fields)

    warn = warning

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.error(event, *args, **fields)
        self._kept("error", event % args if args else event, fields)

    def exception(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.exception(event, *args, **fields)
        error = sys.exc_info()[1]
        self._kept("error", event % args if args else event,
                   {**fields, **({"exception": f"{type(error).__name__}: {error}"}
                                 if error is not None else {})})

    def critical(self, event: str, *args: Any, **fields: Any) -> None:
        self._log.critical(event, *args, **fields)
        self._kept("critical", event % args if args else event, fields)
