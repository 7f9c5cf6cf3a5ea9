"""Concurrency keys: limits hold at every instant, waiting shows and costs no polling per run."""

from __future__ import annotations

import functools
import time

import anyio
import pytest

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.store.records import RunStatus
from tests.engine.harness import Harness, intervals, max_overlap, wait_until


@pytest.fixture
def h(live_harness: Harness) -> Harness:
    return live_harness


async def run_all(h: Harness, text: str, count: int) -> list[str]:
    """Start `count` runs of `text` at once in one orchestrator; their ids once all ended."""
    pipeline = h.pipeline(text)
    inputs = resolve_inputs(pipeline.inputs, {}, pipeline_dir=h.folder, cwd=h.folder)
    ids = []
    async with h.orchestrator() as orch, anyio.create_task_group() as tg:
        for _ in range(count):
            record = await orch.create_run(pipeline, inputs, hold=True)
            ids.append(record.id)
            tg.start_soon(functools.partial(orch.execute, ExecutionPlan.new_run(record, pipeline),
                                            lease=record.lease))
    return ids


async def all_events(h: Harness, ids: list[str]) -> dict[str, list]:  # type: ignore[type-arg]
    return {run_id: await h.events(run_id) for run_id in ids}


async def test_a_pipeline_limit_holds_for_ten_runs(h: Harness) -> None:
    """10 runs, limit 2: never more than 2 between slot_acquired and slot_released, nor
    between a step's start and end; and the limit is used (2 at once, not 1)."""
    started = time.monotonic()
    ids = await run_all(h, """
        name: p
        concurrency: {key: gpu, limit: 2}
        steps:
          work: {uses: core/sleep, with: {duration: 150ms}}
    """, 10)
    wall = time.monotonic() - started
    events = await all_events(h, ids)
    held = [i for e in events.values() for i in intervals(e, "slot_acquired", "slot_released")]
    work = [i for e in events.values()
            for i in intervals(e, "step_started", "step_succeeded", "work")]
    assert len(held) == len(work) == 10
    assert max_overlap(held) == 2
    assert max_overlap(work) == 2
    assert wall >= 5 * 0.15
    assert {(await h.store.get_run(r)).status for r in ids} == {RunStatus.SUCCEEDED}
    rows = await h.store.acquire_slots("gpu", 2, [("probe", "probe")], owner="t", ttl=1)
    assert rows == ["probe"], "every slot was given back"


async def test_a_step_slot_is_held_until_its_until_step_ends(h: Harness) -> None:
    """`launch` takes the slot and `wait` gives it back: at most 2 runs between the start of
    launch and the end of wait; steps outside the span run freely."""
    ids = await run_all(h, """
        name: p
        inputs: {account: {default: acct-1}}
        steps:
          prepare: {uses: core/sleep, with: {duration: 100ms}}
          launch:
            uses: core/sleep
            needs: prepare
            with: {duration: 50ms}
            concurrency: {key: "together-${{ inputs.account }}", limit: 2, until: wait}
          wait: {uses: core/sleep, needs: launch, with: {duration: 100ms}}
          after: {uses: core/echo, needs: wait, with: {x: 1}}
    """, 8)
    events = await all_events(h, ids)
    spans = []
    for run_events in events.values():
        launch = intervals(run_events, "step_started", "step_succeeded", "launch")[0]
        wait = intervals(run_events, "step_started", "step_succeeded", "wait")[0]
        spans.append((launch[0], wait[1]))
    prepare = [intervals(e, "step_started", "step_succeeded", "prepare")[0]
               for e in events.values()]
    assert max_overlap(spans) == 2
    assert max_overlap(prepare) == 8  # not bounded
    kinds = [(e.kind, e.step_id, e.data.get("key")) for e in events[ids[0]]
             if e.kind.startswith("slot_")]
    assert ("slot_acquired", "launch", "together-acct-1") in kinds
    assert ("slot_released", "launch", "together-acct-1") in kinds


async def test_waiting_shows_in_the_store_and_goes_away(h: Harness) -> None:
    """A step waiting for its slot has `waiting_for`; a run waiting for its own, too."""
    pipeline = h.pipeline("""
        name: p
        concurrency: {key: run-key, limit: 1}
        steps:
          s:
            uses: core/sleep
            with: {duration: 300ms}
    """)
    stepwise = h.pipeline("""
        name: q
        steps:
          s:
            uses: core/sleep
            with: {duration: 300ms}
            concurrency: {key: step-key, limit: 1}
    """, name="q.yaml")
    async with h.orchestrator() as orch, anyio.create_task_group() as tg:
        records = []
        for p in (pipeline, pipeline, stepwise, stepwise):
            record = await orch.create_run(p, {}, hold=True)
            records.append(record)
            tg.start_soon(functools.partial(orch.execute, ExecutionPlan.new_run(record, p),
                                            lease=record.lease))
        async def both_wait() -> bool:
            runs = [await h.store.get_run(r.id) for r in records[:2]]
            steps = [(await h.store.get_steps(r.id)).get("s") for r in records[2:]]
            return any(r.waiting_for == "run-key" for r in runs) and any(
                s is not None and s.waiting_for == "step-key" for s in steps)

        await wait_until(both_wait, "a run and a step wait for their keys")
    for record in records:
        run = await h.store.get_run(record.id)
        assert (run.status, run.waiting_for) == (RunStatus.SUCCEEDED, None)
        assert (await h.store.get_steps(record.id))["s"].waiting_for is None


async def test_cancelling_a_waiting_run_gives_nothing_away(h: Harness) -> None:
    """A run cancelled while it waits ends cancelled, its step not left 'waiting'."""
    pipeline = h.pipeline("""
        name: p
        steps:
          s:
            uses: core/sleep
            with: {duration: 10s}
            concurrency: {key: k, limit: 1}
    """)
    async with h.orchestrator() as orch, anyio.create_task_group() as tg:
        first = await orch.create_run(pipeline, {}, hold=True)
        second = await orch.create_run(pipeline, {}, hold=True)
        for record in (first, second):
            tg.start_soon(functools.partial(orch.execute, ExecutionPlan.new_run(record, pipeline),
                                            lease=record.lease))
        async def second_waits() -> bool:
            step = (await h.store.get_steps(second.id)).get("s")
            return step is not None and step.waiting_for == "k"

        await wait_until(second_waits, "the second run waits for k")
        assert orch.cancel(second.id) and orch.cancel(first.id)
    for record in (first, second):
        assert (await h.store.get_run(record.id)).status is RunStatus.CANCELLED
        assert (await h.store.get_steps(record.id))["s"].waiting_for is None
    assert await h.store.acquire_slots("k", 1, [("probe", "probe")], owner="t", ttl=1) == [
        "probe"]
