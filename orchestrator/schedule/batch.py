"""Batches: executing a matrix's cells in one process, and resuming them (what a batch holds,
as people see it: `views.batches`).

A batch is only a row that groups runs; each cell is a run like any other, with its own lease,
steps and resume. What the batch adds: `max_parallel` (a concurrency key `batch:<id>`, held for
the whole run, so it holds across workers too) and `fail_fast` (the first failed cell cancels
the cells still going). Resuming a batch resumes every cell that did not succeed, and leaves
alone cells that succeeded or that another process is executing right now.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import anyio

from orchestrator.engine.executor import RunOutcome
from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.engine.plan import ExecutionPlan, ResumeRequest
from orchestrator.engine.rungroup import RunGroup
from orchestrator.errors import CancelledWork, RunBusy, RunStranded
from orchestrator.store.records import BatchRecord, Lease, RunRecord, RunStatus

__all__ = ["BatchResumePlan", "execute_cells", "plan_batch_resume"]


async def execute_cells(orch: Orchestrator, plans: Sequence[ExecutionPlan], *, fail_fast: bool,
                        leases: Mapping[str, Lease] | None = None,
                        force: bool = False) -> list[RunOutcome]:
    """Execute the cells' runs concurrently (their batch slot bounds how many at once).

    With `fail_fast`, the first cell to fail cancels every other cell still executing or
    waiting to (their remote jobs are cancelled with them); `force` resumes stranded cells.
    Outcomes are in `plans`' order.
    """
    outcomes: dict[str, RunOutcome] = {}
    held = leases or {}

    async def one(plan: ExecutionPlan) -> None:
        try:
            outcome = await orch.execute(plan, lease=held.get(plan.run.id), force=force)
        except (RunStranded, RunBusy) as exc:  # parked now, or taken by another process
            status = RunStatus.STRANDED if isinstance(exc, RunStranded) else plan.run.status
            outcome = RunOutcome(plan.run.id, status, str(exc))
        outcomes[plan.run.id] = outcome
        if fail_fast and outcome.status is RunStatus.FAILED:
            for other in plans:
                if other.run.id not in outcomes:
                    orch.cancel_soon(other.run.id)

    async with anyio.create_task_group() as tg:
        cells = RunGroup(tg)
        for plan in plans:
            cells.start(f"cell {plan.run.id}", functools.partial(one, plan))
        try:
            await cells.wait()
        finally:  # interrupted: every cell stops and saves its state, a few at a time
            with anyio.CancelScope(shield=True):
                await cells.stop()
    return [outcomes[plan.run.id] for plan in plans]


@dataclasses.dataclass(frozen=True)
class BatchResumePlan:
    """What `resume BATCH` does: cells it resumes, cells it keeps, cells busy elsewhere."""

    batch: BatchRecord
    runs: list[RunRecord]
    resume: list[ExecutionPlan]
    busy: list[RunRecord]
    stranded: list[RunRecord] = dataclasses.field(default_factory=list)
    """Cells parked as stranded, left alone: `resume BATCH --force` resumes them too."""

    @property
    def kept(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status is RunStatus.SUCCEEDED]


async def plan_batch_resume(orch: Orchestrator, batch_id: str,
                            request: ResumeRequest | None = None) -> BatchResumePlan:
    """Plan every cell that did not succeed, each as `resume` of it alone would with the
    same `request` (`--from`, `--reload`, `--provider`...); succeeded cells are kept, even
    with `from_step` or a changed file (their jobs are paid for and done)."""
    request = request or ResumeRequest()
    batch = await orch.store.get_batch(batch_id)
    runs = await orch.store.list_runs(batch_id=batch_id, limit=None)
    plans, busy, stranded = [], [], []
    cancelled: list[tuple[str, str]] = []
    for run in runs:
        if run.status is RunStatus.SUCCEEDED:
            continue
        if orch.executed_elsewhere(run):
            busy.append(run)
            continue
        if run.status is RunStatus.STRANDED and not request.force:
            stranded.append(run)
            continue
        try:
            plans.append(await orch.plan_request(run.id, request))
        except CancelledWork as exc:
            cancelled.append((run.id, exc.step))
    if cancelled:
        step = cancelled[0][1]
        msg = (f"batch {batch_id}: {len(cancelled)} cell{'s' * (len(cancelled) != 1)} "
               f"({', '.join(cell for cell, _ in cancelled[:3])}"
               f"{', ...' if len(cancelled) > 3 else ''}) were cancelled, and the remote work "
               f"of step {step} (their jobs) with them: resumed as they are, they would follow "
               f"cancelled jobs. To start that again: orchestrator resume {batch_id} --from "
               f"{step}")
        raise CancelledWork(msg, step=step)
    return BatchResumePlan(batch, runs, plans, busy, stranded)
