"""The web view's actions (the protocol `web.actions.Actions`), done with the engine's own
operations.

A page asks; this does what the matching command does, on the store the page reads: a
cancel is a request in the store (the process executing the run, or the next worker, carries
it out); a resume is planned and queued as `resume RUN --detach` does
(`Orchestrator.queue_resume`: the steps it re-runs cleared under a lease of this process's, a
run another live process executes refused); a schedule fired now is a queued run of its
pipeline, as the scheduler makes one; a pause is kept in the store, where every scheduler
reads it. Nothing here executes a run: a worker does (`ui` runs none; `serve` does).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.errors import ActionRefused, CancelledWork, ConfigError, RunBusy, RunNotFound
from orchestrator.providers.refs import ProviderRef
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus, ScheduleEntry
from orchestrator.views.schedules import Scheduled

__all__ = ["StoreActions"]


class StoreActions:
    """`Actions` on an open `store`: runs fired now are bound to `provider` (the serving
    process's, as `run --detach` binds them); `scheduled` are the schedules it may fire."""

    def __init__(self, store: StateStore, engine: Orchestrator, *,
                 scheduled: Sequence[Scheduled] = (),
                 provider: ProviderRef | None = None) -> None:
        self._store = store
        self._engine = engine
        """Not entered: it executes nothing here, only plans, queues and creates runs (made
        by the composition root, `runtime.web_actions`)."""
        self._scheduled = {s.id: s for s in scheduled}
        self._provider = provider

    async def cancel(self, run_id: str) -> str:
        run = await self._store.get_run(run_id)
        if run.status.finished and not run.cancelling:
            msg = f"run {run_id} already ended {run.status.value}; nothing to cancel"
            raise ActionRefused(msg)
        await self._store.request_cancel([run_id])
        return "cancel requested"

    async def resume(self, run_id: str, from_step: str | None) -> str:
        run = await self._store.get_run(run_id)
        if run.status is RunStatus.QUEUED:
            msg = f"run {run_id} is already queued for a worker"
            raise ActionRefused(msg)
        if run.status is RunStatus.STRANDED:
            msg = (f"run {run_id} is stranded (its executors crashed too often): resume it "
                   f"by hand, orchestrator resume {run_id} --force")
            raise ActionRefused(msg)
        if run.status is RunStatus.SUCCEEDED and not from_step:
            msg = f"run {run_id} already succeeded; choose a step to run again from"
            raise ActionRefused(msg)
        try:
            plan = await self._engine.plan_resume(run_id, from_step=from_step)
            await self._engine.queue_resume(plan, from_step=from_step, by="web view")
        except CancelledWork as exc:
            msg = (f"run {run_id} was cancelled, and the remote work of step {exc.step} (its "
                   f"job) with it: resume it from {exc.step} to start that again")
            raise ActionRefused(msg) from None
        except RunBusy:
            msg = (f"run {run_id} is being executed by {run.lease_owner}; it cannot be "
                   "resumed now")
            raise ActionRefused(msg) from None
        except ConfigError as exc:
            raise ActionRefused(str(exc)) from None
        where = f" from {from_step}" if from_step else ""
        return f"queued for a worker to resume{where} (orchestrator worker, or serve)"

    async def fire_now(self, schedule_id: str) -> str:
        item = self._scheduled.get(schedule_id)
        if item is None:
            msg = f"no schedule {schedule_id!r} is served here"
            raise ActionRefused(msg)
        pipeline, spec = item.pipeline, item.pipeline.schedule
        assert spec is not None
        inputs = resolve_inputs(pipeline.inputs, spec.inputs, pipeline_dir=pipeline.base_dir,
                                cwd=pipeline.base_dir)
        now = self._store.clock()
        if pipeline.matrix is not None:
            batch, _ = await self._engine.create_batch(
                pipeline, inputs, status=RunStatus.QUEUED, schedule_id=schedule_id,
                scheduled_for=now, provider=self._provider)
            return batch.id
        run = await self._engine.create_run(pipeline, inputs, status=RunStatus.QUEUED,
                                            schedule_id=schedule_id, scheduled_for=now,
                                            provider=self._provider)
        return run.id

    async def pause(self, schedule_id: str, paused: bool) -> str:
        """A schedule no scheduler has recorded yet (none ran since it was written) is
        recorded first, as a scheduler records it, so that it starts paused."""
        try:
            await self._store.pause_schedule(schedule_id, paused)
        except RunNotFound:
            item = self._scheduled.get(schedule_id)
            if item is None or item.pipeline.schedule is None:
                raise
            spec = item.pipeline.schedule
            await self._store.sync_schedule(ScheduleEntry(
                item.id, item.pipeline.name, str(item.pipeline.path.resolve()), spec.cron,
                spec.timezone))
            await self._store.pause_schedule(schedule_id, paused)
        return "paused" if paused else "resumed"
