"""Batches in one process: every cell runs, max_parallel bounds them, fail_fast stops them,
and resuming a batch touches only the cells that did not succeed."""

from __future__ import annotations

import time

import pytest

from orchestrator.engine.plan import ExecutionPlan
from orchestrator.schedule.batch import execute_cells, plan_batch_resume
from orchestrator.store.records import RunStatus
from orchestrator.views.batches import batch_status
from tests.engine.harness import Harness, intervals, max_overlap


@pytest.fixture
def h(live_harness: Harness) -> Harness:
    return live_harness


async def run_batch(h: Harness, text: str) -> tuple[str, list[RunStatus]]:
    pipeline = h.pipeline(text)
    async with h.orchestrator() as orch:
        batch, runs = await orch.create_batch(pipeline, {}, hold=True)
        plans = [ExecutionPlan.new_run(r, pipeline) for r in runs]
        outcomes = await execute_cells(orch, plans, fail_fast=batch.fail_fast,
                                       leases={r.id: r.lease for r in runs if r.lease})
    return batch.id, [o.status for o in outcomes]


async def resume_batch(h: Harness, batch_id: str) -> list[str]:
    async with h.orchestrator() as orch:
        plan = await plan_batch_resume(orch, batch_id)
        await execute_cells(orch, plan.resume, fail_fast=plan.batch.fail_fast)
    return [p.run.id for p in plan.resume]


FLAKY = """
    name: sweep
    matrix:
      x: [1, 2, 3, 4]
      include: [{fails: 0}, {x: 2, fails: 1}, {x: 4, fails: 1}]
      max_parallel: 2
    steps:
      before: {uses: core/sleep, with: {duration: 50ms}}
      flaky:
        uses: core/fail
        needs: before
        retry: null
        with: {times: "${{ matrix.fails }}", transient: false}
      after: {uses: core/echo, needs: flaky, with: {x: "${{ matrix.x }}"}}
"""


async def test_a_batch_runs_its_cells_bounded_and_resumes_only_what_failed(h: Harness) -> None:
    batch_id, statuses = await run_batch(h, FLAKY)
    assert statuses == [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SUCCEEDED,
                        RunStatus.FAILED]
    runs = await h.store.list_runs(batch_id=batch_id)
    assert [r.matrix for r in runs] == [{"x": 1, "fails": 0}, {"x": 2, "fails": 1},
                                        {"x": 3, "fails": 0}, {"x": 4, "fails": 1}]
    assert batch_status(runs) == "failed"
    events = {r.id: await h.events(r.id) for r in runs}
    held = [i for e in events.values() for i in intervals(e, "slot_acquired", "slot_released")]
    assert max_overlap(held) == 2  # max_parallel, and it was used

    resumed = await resume_batch(h, batch_id)
    assert resumed == [f"{batch_id}.1", f"{batch_id}.3"]
    runs = await h.store.list_runs(batch_id=batch_id)
    assert batch_status(runs) == "succeeded"
    for run in runs:  # succeeded cells were left alone; resumed ones kept their `before`
        starts = [e.step_id for e in await h.events(run.id, "step_started")]
        assert starts.count("before") == 1
        assert len(await h.events(run.id, "run_started")) == (2 if run.id in resumed else 1)


async def test_fail_fast_cancels_the_rest(h: Harness) -> None:
    """The first failed cell cancels cells in the middle of a long step, at once."""
    started = time.monotonic()
    batch_id, statuses = await run_batch(h, """
        name: sweep
        matrix:
          x: [bad, slow, slower]
          include: [{fails: 0, nap: 10s}, {x: bad, fails: 1, nap: 0s}]
          fail_fast: true
        steps:
          nap: {uses: core/sleep, with: {duration: "${{ matrix.nap }}"}}
          f:
            uses: core/fail
            needs: nap
            retry: null
            with: {times: "${{ matrix.fails }}", transient: false}
    """)
    assert statuses == [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CANCELLED]
    assert time.monotonic() - started < 5
    runs = await h.store.list_runs(batch_id=batch_id)
    assert batch_status(runs) == "failed"
    assert [(await h.store.get_steps(r.id))["nap"].status.value for r in runs[1:]] == [
        "cancelled", "cancelled"]


async def test_fail_fast_stops_cells_that_have_not_started(h: Harness) -> None:
    """With max_parallel 1, the cells waiting their turn are cancelled, not started."""
    batch_id, statuses = await run_batch(h, """
        name: sweep
        matrix: {x: [1, 2, 3], max_parallel: 1, fail_fast: true}
        steps:
          f: {uses: core/fail, retry: null, with: {transient: false}}
    """)
    assert statuses == [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CANCELLED]
    for run in (await h.store.list_runs(batch_id=batch_id))[1:]:
        assert await h.events(run.id, "step_started") == []


async def test_resume_leaves_cells_another_process_executes(h: Harness) -> None:
    batch_id, _ = await run_batch(h, FLAKY)
    busy = f"{batch_id}.1"
    await h.store.acquire_lease(busy, "someone-else", ttl=300, max_recoveries=3)
    async with h.orchestrator() as orch:
        plan = await plan_batch_resume(orch, batch_id)
    assert [r.id for r in plan.busy] == [busy]
    assert [p.run.id for p in plan.resume] == [f"{batch_id}.3"]
    assert [r.id for r in plan.kept] == [f"{batch_id}.0", f"{batch_id}.2"]
