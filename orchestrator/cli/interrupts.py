"""After Ctrl-C on `run`: cancel the run and its remote jobs, or say how to go on."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.parser import EXIT_FAILED, EXIT_INTERRUPTED
from orchestrator.cli.service import cancel_and_report
from orchestrator.cli.session import Session, err, out, with_store

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore

__all__ = ["after_interrupt", "started_remote_work", "wants_cancel"]


def wants_cancel(on_interrupt: str, *, remote: bool) -> bool:
    """Whether to cancel the run after Ctrl-C: the flag, or the person at the terminal (asked
    only when the run started remote jobs: otherwise there is nothing to decide)."""
    if on_interrupt != "ask":
        return on_interrupt == "cancel"
    if not remote or not sys.stdin.isatty():
        return False
    try:
        answer = input("Leave its remote jobs running, to resume later [L], or cancel them "
                       "and the run [c]? ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("c", "cancel")


def started_remote_work(settings: Settings, run_ids: Sequence[str]) -> bool:
    """Whether any of the runs began a step that starts remote work (one with a cancel hook,
    such as a fine-tune launch) far enough to have saved a checkpoint."""
    from orchestrator.steps.builtin import parse_pipeline  # noqa: PLC0415

    async def look(store: StateStore) -> bool:
        parsed: dict[str, Pipeline] = {}
        for run_id in run_ids:
            run = await store.get_run(run_id)
            if run.pipeline_text not in parsed:
                parsed[run.pipeline_text] = parse_pipeline(
                    run.pipeline_text, Path(run.pipeline_path),
                    limits=settings.pipeline_limits)
            steps = parsed[run.pipeline_text].steps
            for step_id, record in (await store.get_steps(run_id)).items():
                if step_id in steps and steps[step_id].type.cancel and record.checkpoint:
                    return True
        return False

    return with_store(settings, look)


def after_interrupt(settings: Settings, session: Session, on_interrupt: str) -> int:
    """After Ctrl-C: cancel the run (the flag or the person says so) or say how to go on."""
    if session.run_id is None:
        err("interrupted before the run was created")
        return EXIT_INTERRUPTED
    err(f"{session.run_id} interrupted; its state is saved.")
    remote = started_remote_work(settings, session.run_ids)
    if wants_cancel(on_interrupt, remote=remote):
        done = cancel_and_report(settings, session.run_ids, wait=30.0)
        what = "run" if session.run_ids == [session.run_id] else "batch"
        if done:
            out(f"{what} {session.run_id} cancelled")
        else:
            out(f"{what} {session.run_id}: cancellation incomplete; see: orchestrator show "
                f"{session.run_id}")
        return EXIT_FAILED
    if remote:
        err(f"Remote jobs were left running. Continue with:\n  orchestrator resume "
            f"{session.run_id}\nor stop them with:\n  orchestrator cancel {session.run_id}")
    else:
        err(f"Continue with:\n  orchestrator resume {session.run_id}")
    return EXIT_INTERRUPTED
