"""What the web view's buttons do to a run: ask for its cancellation, or queue its resume.

The page runs no engine (`orchestrator ui` holds no worker), so a resume is handed to one: the
run goes back to the queue, with the steps a `--from STEP` re-runs cleared first, under a
short lease of this process's (fenced like any executor's write: a run another process
executes is refused, never touched). The worker that claims it plans it as `resume` does:
succeeded steps keep their outputs, the rest run.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine.plan import cancelled_work
from orchestrator.errors import RunBusy
from orchestrator.owners import new_owner_id
from orchestrator.steps.builtin import parse_pipeline
from orchestrator.store.base import StateStore
from orchestrator.store.records import NewEvent, RunStatus, RunUpdate, StepRecord

__all__ = ["ActionRefused", "queue_resume"]

_LEASE = 30.0


class ActionRefused(PermissionError):
    """An action the run's state does not allow, saying why (403)."""


async def queue_resume(store: StateStore, run_id: str, from_step: str | None) -> str:
    """Queue the run for a worker to resume (from `from_step`, re-running it and everything
    after it); returns what the page says. ActionRefused when it cannot be resumed now."""
    run = await store.get_run(run_id)
    if run.status is RunStatus.QUEUED:
        msg = f"run {run_id} is already queued for a worker"
        raise ActionRefused(msg)
    if run.status is RunStatus.STRANDED:
        msg = (f"run {run_id} is stranded (its executors crashed too often): resume it by "
               f"hand, orchestrator resume {run_id} --force")
        raise ActionRefused(msg)
    if run.status is RunStatus.SUCCEEDED and not from_step:
        msg = f"run {run_id} already succeeded; choose a step to run again from"
        raise ActionRefused(msg)
    pipeline = parse_pipeline(run.pipeline_text, Path(run.pipeline_path))
    if from_step and from_step not in pipeline.steps:
        msg = f"run {run_id} has no step {from_step!r} (steps: {', '.join(pipeline.steps)})"
        raise ActionRefused(msg)
    reset = sorted(pipeline.downstream({from_step})) if from_step else []
    if run.status is RunStatus.CANCELLED:
        step = cancelled_work(pipeline, await store.get_steps(run_id),
                              await store.get_events(run_id), reset)
        if step is not None:
            msg = (f"run {run_id} was cancelled, and the remote work of step {step} (its job) "
                   f"with it: resume it from {step} to start that again")
            raise ActionRefused(msg)
    try:
        lease = await store.acquire_lease(run_id, new_owner_id(), ttl=_LEASE,
                                          max_recoveries=1_000_000)
    except RunBusy:
        msg = f"run {run_id} is being executed by {run.lease_owner}; it cannot be resumed now"
        raise ActionRefused(msg) from None
    await store.commit(
        lease, run=RunUpdate(RunStatus.QUEUED, release=True,
                             clear_cancel=run.status is RunStatus.CANCELLED),
        steps=[StepRecord(sid) for sid in reset],
        events=[NewEvent("resume_queued", data={"from": from_step, "reset": reset,
                                                "by": "web view"})])
    where = f" from {from_step}" if from_step else ""
    return f"queued for a worker to resume{where} (orchestrator worker, or orchestrator serve)"
