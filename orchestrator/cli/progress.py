"""Live progress of long steps on a terminal: status, elapsed time, training step and loss.

Steps report progress through `ctx.report(...)`; the engine hands it to a ProgressSink, and on
a terminal that sink is this view. Log lines are printed through the same console, so they
scroll above the live lines instead of tearing them. The console and the clock are arguments,
so tests render into a string with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from orchestrator.ids import RunNames
from orchestrator.protocol.types import TERMINAL_JOB_STATUSES
from orchestrator.terminal import printable

__all__ = ["ConsoleWriter", "LiveProgress", "describe"]

FINISHED = TERMINAL_JOB_STATUSES | {"Complete", "Failed"}
"""Reported statuses after which a line stops: a fine-tune job's, or a model import's."""


def describe(fields: Mapping[str, Any]) -> str:
    """`running  step 12/30  loss 1.2345` from what a step reported."""
    parts = [printable(str(fields.get("status", "")))]
    if fields.get("step") is not None:
        total = fields.get("total_steps")
        parts.append(f"step {fields['step']}" + (f"/{total}" if total else ""))
    if isinstance(fields.get("loss"), int | float):
        parts.append(f"loss {fields['loss']:.4f}")
    return "  ".join(p for p in parts if p)


class LiveProgress:
    """A ProgressSink that draws one live line per reporting step."""

    def __init__(self, console: Console, *, get_time: Callable[[], float] | None = None,
                 auto_refresh: bool = True, names: RunNames | None = None) -> None:
        self.console = console
        self._names = names or RunNames()
        """Each line is labelled with its step, after its run where the header did not name
        it: two `wait` lines under a worker, or of two cells, say whose they are."""
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=console, get_time=get_time, transient=True, auto_refresh=auto_refresh)
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def __call__(self, run_id: str, step_id: str, fields: Mapping[str, Any]) -> None:
        key = (run_id, step_id)
        detail = describe(fields)
        total = fields.get("total_steps")
        completed = fields.get("step") or 0
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(printable(self._names.place(run_id,
                                                                                 step_id)),
                                                      total=total, detail=detail,
                                                      completed=completed)
        else:
            self.progress.update(self._tasks[key], total=total, completed=completed,
                                 detail=detail)
        if fields.get("status") in FINISHED:
            self.progress.remove_task(self._tasks.pop(key))

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()


class ConsoleWriter:
    """A file for the logger that prints whole lines through a rich console (ANSI kept)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return self._console.is_terminal
