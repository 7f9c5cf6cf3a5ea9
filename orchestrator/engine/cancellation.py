"""Cancelling runs from anywhere: `orchestrator cancel`, or Ctrl-C answered with "cancel".

A cancel is first a request written to the store, so it survives whoever is down. Then, per
run: if a live process executes it, that process notices the request (it polls for them) and
cancels the run itself; this side only waits to see it end. If no one executes it, this process
takes the run's lease and carries the cancellation out here: every remote job the run launched
is cancelled on the provider and the run ends `cancelled`. Should that fail half-way (provider
unreachable), the request stays, and the next executor of the run (a worker, a resume, another
`cancel`) finishes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import anyio

from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.errors import LeaseLost, RunBusy, RunStranded
from orchestrator.store.records import RunRecord, RunStatus

__all__ = ["CancelResult", "cancel_runs", "restart_point"]


@dataclasses.dataclass(frozen=True)
class CancelResult:
    """Where one run stands after `cancel_runs`."""

    run_id: str
    status: RunStatus
    note: str
    restart_from: str | None = None
    """For a run cancelled with its remote work (its fine-tune job), the step to resume it
    from to start that again (`resume RUN --from STEP`)."""

    @property
    def done(self) -> bool:
        return self.status in (RunStatus.CANCELLED, RunStatus.SUCCEEDED)


async def cancel_runs(orch: Orchestrator, run_ids: Collection[str], *,
                      wait: float = 30.0) -> list[CancelResult]:
    """Request and carry out (or see carried out) the cancellation of `run_ids`."""
    store = orch.store
    before = {run_id: await store.get_run(run_id) for run_id in run_ids}
    for run in before.values():  # runs this process may have to cancel itself
        if not orch.executed_elsewhere(run) and run.status is not RunStatus.SUCCEEDED:
            orch.check_provider(orch.provider_of(run))  # a missing key: nothing written
    marked = {run.id for run in await store.request_cancel(list(run_ids))}
    results: dict[str, CancelResult] = {}
    for run_id, run in before.items():
        if run_id not in marked:
            note = ("already succeeded; nothing to cancel" if run.status is RunStatus.SUCCEEDED
                    else "already cancelled")
            results[run_id] = CancelResult(run_id, run.status, note)

    async def one(run_id: str) -> None:
        results[run_id] = await _cancel_one(orch, run_id, wait)

    async with anyio.create_task_group() as tg:
        for run_id in marked:
            tg.start_soon(one, run_id)
    for run_id in marked:
        if results[run_id].status is RunStatus.CANCELLED:
            results[run_id] = dataclasses.replace(
                results[run_id], restart_from=await restart_point(orch, run_id))
    return [results[run_id] for run_id in run_ids]


async def restart_point(orch: Orchestrator, run_id: str) -> str | None:
    """The first step, in the run's order, whose remote work a cancellation cancelled."""
    run = await orch.store.get_run(run_id)
    cancelled = [e.step_id for e in await orch.store.get_events(run_id)
                 if e.kind == "remote_cancelled" and e.step_id is not None]
    if not cancelled:
        return None
    order = {sid: i for i, sid in enumerate(run.step_ids or ())}
    return min(cancelled, key=lambda sid: order.get(sid, len(order)))


async def _cancel_one(orch: Orchestrator, run_id: str, wait: float) -> CancelResult:
    store = orch.store
    run = await store.get_run(run_id)
    if not orch.executed_elsewhere(run):
        try:
            outcome = await orch.execute(await orch.plan_resume(run_id))
        except (RunBusy, LeaseLost):
            pass  # someone took it up meanwhile: they will see the request
        except RunStranded as exc:
            return CancelResult(run_id, RunStatus.STRANDED, str(exc))
        else:
            if outcome.status is RunStatus.CANCELLED:
                return CancelResult(run_id, outcome.status, "cancelled")
            return CancelResult(run_id, outcome.status, outcome.error or outcome.status.value)
    return await _see_it_end(orch, run_id, wait)


async def _see_it_end(orch: Orchestrator, run_id: str, wait: float) -> CancelResult:
    """Wait for the process executing the run to cancel it (it polls for requests)."""
    run: RunRecord = await orch.store.get_run(run_id)
    executor = run.lease_owner
    with anyio.move_on_after(wait):
        while not run.status.finished:  # the executing process writes the store; poll it
            await anyio.sleep(0.2)
            run = await orch.store.get_run(run_id)
    if run.status is RunStatus.CANCELLED:
        return CancelResult(run_id, run.status, f"cancelled by its executor {executor}")
    if run.status.finished:
        return CancelResult(run_id, run.status, f"ended {run.status.value}: {run.error}")
    return CancelResult(run_id, run.status,
                        f"cancel requested; its executor {executor} has not finished it "
                        f"within {wait:.0f}s (it will; see `orchestrator show {run_id}`)")
