"""What the web view's buttons ask for, as one protocol: the page runs no engine itself.

The server (`ui --allow-actions`, `serve --allow-actions`) hands the app an implementation
(`orchestrator.schedule.actions.StoreActions`, which matches this protocol without importing
it) built by the command on the same store; the app only forwards a checked form to it. Each
action answers with what the page says, or raises ActionRefused saying why it cannot be done
now (a 403).
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.errors import ActionRefused

__all__ = ["ActionRefused", "Actions"]


class Actions(Protocol):
    """The writes a page may ask for. Every one is what a command does too: `cancel RUN`,
    `resume RUN [--from STEP] --detach`, a schedule fired now, a schedule paused."""

    async def cancel(self, run_id: str) -> str:
        """Ask for the run's cancellation (its executor, or the next worker, carries it
        out, cancelling its remote jobs)."""

    async def resume(self, run_id: str, from_step: str | None) -> str:
        """Queue the run for a worker to resume, from `from_step` if given."""

    async def fire_now(self, schedule_id: str) -> str:
        """Queue a run (a batch, for a matrix) of the schedule's pipeline now, outside its
        cron; the new run's (or batch's) id."""

    async def pause(self, schedule_id: str, paused: bool) -> str:
        """Pause the schedule, or resume it from now."""
