"""The worker loop's promises that no single run's pipeline shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.errors import StoreUnavailable
from orchestrator.schedule.worker import Worker
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus
from orchestrator.testing import FakeClock, wait_until
from tests.conftest import write


class StoreHiccup(Orchestrator):
    """An orchestrator whose first reading of a claimed run meets a state database that
    stopped answering (a connection the server dropped mid-transaction)."""

    failed = 0

    async def plan_resume(self, run_id: str, **kwargs: Any) -> ExecutionPlan:
        if not self.failed:
            self.failed += 1
            raise StoreUnavailable("state database: server closed the connection; try again")
        return await super().plan_resume(run_id, **kwargs)


async def test_a_run_the_worker_failed_to_start_is_given_back_and_executed(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    """Held after the failure, its lease would be renewed by the worker's heartbeat for as
    long as the worker lives, and no one would ever execute it."""
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          a: {uses: core/echo, with: {x: 1}}
    """))
    async with StoreHiccup(store) as orch, anyio.create_task_group() as tg:
        run = await orch.create_run(pipeline, {}, status=RunStatus.QUEUED)
        worker = Worker(orch, poll_interval=0.05)
        await tg.start(worker.run_forever)

        async def done() -> bool:
            return bool(worker.finished)

        await wait_until(done, "the worker executed the run on a later claim")
        tg.cancel_scope.cancel()
    assert orch.failed == 1
    assert worker.finished == [(run.id, RunStatus.SUCCEEDED)]
    kinds = [e.kind for e in await store.get_events(run.id)]
    assert kinds.count("lease_acquired") == 2
