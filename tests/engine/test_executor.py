"""The run executor: concurrency, failure, retries, timeouts, checkpoints and interruption."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator.errors import PermanentError, RateLimited, TransientError
from orchestrator.steps.context import StepContext
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus, StepStatus
from tests.engine.harness import Harness


class Free(BaseModel):
    model_config = ConfigDict(extra="allow")


@pytest.fixture
def h(tmp_path: Path, store: StateStore) -> Harness:
    return Harness(tmp_path, store)


def counted_overlap(h: Harness) -> Callable[[], int]:
    """Registers `t/count`, a step that stays a few scheduler turns; returns the most of
    them that ran at once so far."""
    running = peak = 0

    @h.registry.step("t/count", params=Free)
    async def count(ctx: StepContext, params: Free) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()  # let other steps in, if the limiter allows
        running -= 1
        return {}

    return lambda: peak


def slow_and_bad(h: Harness) -> None:
    """Registers `t/slow`, which runs until cancelled, and `t/bad`, which fails for good
    once `t/slow` started."""
    slow_started = anyio.Event()

    @h.registry.step("t/slow", params=Free)
    async def slow(ctx: StepContext, params: Free) -> dict[str, Any]:
        slow_started.set()
        await anyio.sleep_forever()
        return {}

    @h.registry.step("t/bad", params=Free)
    async def bad(ctx: StepContext, params: Free) -> dict[str, Any]:
        await slow_started.wait()
        raise PermanentError("the model does not exist")


async def test_independent_steps_run_concurrently(h: Harness) -> None:
    """Steps with no path between them overlap: `a` can only finish once `b` has started."""
    b_started = anyio.Event()

    @h.registry.step("t/a", params=Free)
    async def a(ctx: StepContext, params: Free) -> dict[str, Any]:
        with anyio.fail_after(5):
            await b_started.wait()
        return {"saw_b": True}

    @h.registry.step("t/b", params=Free)
    async def b(ctx: StepContext, params: Free) -> dict[str, Any]:
        b_started.set()
        return {}

    outcome = await h.run("""
        name: p
        steps:
          a: {uses: t/a}
          b: {uses: t/b}
    """)
    assert outcome.status is RunStatus.SUCCEEDED
    assert (await h.steps(outcome.run_id))["a"].outputs == {"saw_b": True}


async def test_outputs_flow_downstream_with_native_types(h: Harness) -> None:
    """A dependent step starts after its upstream and receives its outputs, types intact."""
    outcome = await h.run("""
        name: p
        inputs:
          n: {type: integer, default: 2}
        steps:
          first:
            uses: core/echo
            with: {count: "${{ inputs.n }}", items: [1, 2]}
          second:
            uses: core/echo
            with:
              count: "${{ steps.first.outputs.count }}"
              text: "n=${{ steps.first.outputs.count }} run=${{ run.name }}"
              item: "${{ steps.first.outputs.items[1] }}"
    """)
    steps = await h.steps(outcome.run_id)
    assert steps["second"].outputs == {"count": 2, "text": "n=2 run=p", "item": 2}
    assert steps["first"].finished_at is not None and steps["second"].started_at is not None
    assert steps["first"].finished_at <= steps["second"].started_at


async def test_max_parallel_steps_bounds_concurrency(tmp_path: Path, store: StateStore) -> None:
    """No more than max_parallel_steps steps of a run execute at once."""
    h = Harness(tmp_path, store, max_parallel_steps=2)
    peak = counted_overlap(h)
    steps = "\n".join(f"  s{i}: {{uses: t/count}}" for i in range(6))
    outcome = await h.run(f"name: p\nsteps:\n{steps}\n")
    assert outcome.status is RunStatus.SUCCEEDED
    assert peak() == 2


async def test_failure_cancels_in_flight_siblings(h: Harness) -> None:
    """A step failing for good cancels running siblings; the run fails naming the step."""
    slow_and_bad(h)
    with anyio.fail_after(10):
        outcome = await h.run("""
            name: p
            steps:
              slow: {uses: t/slow}
              bad: {uses: t/bad}
              after: {uses: core/echo, needs: [slow]}
        """)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "step bad failed: PermanentError: the model does not exist"
    steps = await h.steps(outcome.run_id)
    assert steps["bad"].status is StepStatus.FAILED
    assert steps["bad"].attempt == 1
    assert steps["slow"].status is StepStatus.CANCELLED
    assert "after" not in steps
    run = await h.store.get_run(outcome.run_id)
    assert (run.status, run.lease_owner) == (RunStatus.FAILED, None)


async def test_a_chain_that_forks_keeps_the_bounds_and_the_failures(tmp_path: Path,
                                                                    store: StateStore) -> None:
    """A run that starts as one chain runs it in its own task; where the chain forks, its
    branches still overlap no more than max_parallel_steps, and a branch failing for good
    cancels the others."""
    h = Harness(tmp_path, store, max_parallel_steps=2)
    peak = counted_overlap(h)
    slow_and_bad(h)
    branches = "\n".join(f"  s{i}: {{uses: t/count, needs: [root]}}" for i in range(6))
    outcome = await h.run(f"name: p\nsteps:\n  root: {{uses: core/echo}}\n{branches}\n")
    assert outcome.status is RunStatus.SUCCEEDED
    assert peak() == 2
    with anyio.fail_after(10):
        outcome = await h.run("""
            name: q
            steps:
              root: {uses: core/echo}
              slow: {uses: t/slow, needs: [root]}
              bad: {uses: t/bad, needs: [root]}
        """)
    assert outcome.error == "step bad failed: PermanentError: the model does not exist"
    steps = await h.steps(outcome.run_id)
    assert (steps["slow"].status, steps["bad"].status) == (StepStatus.CANCELLED,
                                                            StepStatus.FAILED)


async def test_transient_errors_are_retried(h: Harness) -> None:
    """Transient failures are retried with backoff until the step succeeds."""
    calls = 0

    @h.registry.step("t/flaky", params=Free)
    async def flaky(ctx: StepContext, params: Free) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError(f"blip {calls}")
        return {"attempt": ctx.attempt}

    outcome = await h.run("""
        name: p
        steps:
          s:
            uses: t/flaky
            retry: {max_attempts: 3, initial_delay: 1ms, max_delay: 5ms}
    """)
    assert outcome.status is RunStatus.SUCCEEDED
    step = (await h.steps(outcome.run_id))["s"]
    assert (step.attempt, step.outputs, step.error) == (3, {"attempt": 3}, None)
    failures = await h.events(outcome.run_id, "attempt_failed")
    assert [e.data["error"]["message"] for e in failures] == ["blip 1", "blip 2"]


async def test_retries_exhausted_fail_the_step(h: Harness) -> None:
    outcome = await h.run("""
        name: p
        steps:
          s:
            uses: core/fail
            retry: {max_attempts: 2, initial_delay: 1ms}
    """)
    assert outcome.status is RunStatus.FAILED
    step = (await h.steps(outcome.run_id))["s"]
    assert (step.status, step.attempt) == (StepStatus.FAILED, 2)
    assert (await h.events(outcome.run_id, "step_failed"))[0].data["note"] == \
        "gave up after 2 attempts"


@pytest.mark.parametrize("step", [
    pytest.param("{uses: core/fail, with: {transient: false}}", id="permanent-error"),
    pytest.param("{uses: core/fail, retry: null}", id="retry-null"),
])
async def test_not_retried(h: Harness, step: str) -> None:
    """A permanent error fails at once; `retry: null` makes even transient errors final."""
    outcome = await h.run(f"name: p\nsteps:\n  s: {step}\n")
    record = (await h.steps(outcome.run_id))["s"]
    assert (record.status, record.attempt) == (StepStatus.FAILED, 1)
    assert await h.events(outcome.run_id, "attempt_failed") == []


async def test_retry_after_is_honoured(h: Harness) -> None:
    """A rate limit's retry_after is the least wait before the next attempt."""
    called_at: list[float] = []

    @h.registry.step("t/limited", params=Free)
    async def limited(ctx: StepContext, params: Free) -> dict[str, Any]:
        called_at.append(anyio.current_time())
        if len(called_at) == 1:
            raise RateLimited("slow down", retry_after=0.3)
        return {}

    outcome = await h.run("""
        name: p
        steps:
          s: {uses: t/limited, retry: {initial_delay: 1ms, max_delay: 1ms}}
    """)
    failed = await h.events(outcome.run_id, "attempt_failed")
    assert failed[0].data["retry_in"] == 0.3
    assert called_at[1] - called_at[0] >= 0.3


async def test_timeout_applies_per_attempt_and_is_retried(h: Harness) -> None:
    """An attempt over the step's timeout fails as StepTimeout and is retried."""

    @h.registry.step("t/hang_once", params=Free)
    async def hang_once(ctx: StepContext, params: Free) -> dict[str, Any]:
        if ctx.attempt == 1:
            await anyio.sleep_forever()
        return {"ok": True}

    outcome = await h.run("""
        name: p
        steps:
          s: {uses: t/hang_once, timeout: 50ms, retry: {initial_delay: 1ms}}
    """)
    assert outcome.status is RunStatus.SUCCEEDED
    failure = (await h.events(outcome.run_id, "attempt_failed"))[0]
    assert failure.data["error"]["type"] == "StepTimeout"
    assert "longer than the step's timeout of 50ms" in failure.data["error"]["message"]


async def test_unexpected_exception_is_recorded_with_traceback_in_events(h: Harness) -> None:
    """An unexpected exception fails the step with its type and message; the traceback goes
    to the event log only."""

    @h.registry.step("t/buggy", params=Free)
    async def buggy(ctx: StepContext, params: Free) -> dict[str, Any]:
        return {"x": 1 / 0}

    outcome = await h.run("name: p\nsteps:\n  s: {uses: t/buggy}\n")
    step = (await h.steps(outcome.run_id))["s"]
    assert (step.error and (step.error.type, step.error.message)) == (
        "ZeroDivisionError", "division by zero")
    assert step.attempt == 1
    event = (await h.events(outcome.run_id, "step_failed"))[0]
    assert "Traceback" in event.data["traceback"]
    assert "ZeroDivisionError: division by zero" in event.data["traceback"]


async def test_bad_runtime_parameter_is_a_permanent_failure(h: Harness) -> None:
    """A parameter whose expression yields the wrong type fails the step with the field."""
    outcome = await h.run("""
        name: p
        inputs:
          n: {default: many}
        steps:
          s: {uses: core/fail, with: {times: "${{ inputs.n }}"}}
    """)
    step = (await h.steps(outcome.run_id))["s"]
    assert step.error is not None
    assert step.error.message.startswith("steps.s.with: times: Input should be a valid integer")
    assert step.attempt == 1


async def test_non_mapping_outputs_fail_clearly(h: Harness) -> None:

    @h.registry.step("t/list", params=Free)
    async def returns_list(ctx: StepContext, params: Free) -> Any:
        return [1, 2]

    outcome = await h.run("name: p\nsteps:\n  s: {uses: t/list}\n")
    assert outcome.error == ("step s failed: PermanentError: a step must return a mapping of "
                             "outputs or None, not list")


async def test_outputs_and_checkpoints_are_bounded(h: Harness) -> None:
    """What a step hands the store is bounded (16 MiB of JSON each), so every row of the
    store is, and an exported history can be read back a bounded line at a time."""

    @h.registry.step("t/big", params=Free)
    async def big(ctx: StepContext, params: Free) -> dict[str, Any]:
        if params.model_extra and params.model_extra.get("checkpoint"):
            await ctx.checkpoint(blob="x" * (16 * 2**20))
        return {"blob": "x" * (16 * 2**20)}

    outcome = await h.run("name: p\nsteps:\n  s: {uses: t/big}\n")
    assert outcome.error == ("step s failed: PermanentError: a step's outputs are 16.0 MiB of "
                             "JSON; the store keeps at most 16 MiB: write large results to a "
                             "file and output its path")
    outcome = await h.run("name: p\nsteps:\n  s: {uses: t/big, with: {checkpoint: true}}\n")
    assert outcome.error is not None and "a checkpoint of 16.0 MiB of JSON" in outcome.error
    assert (await h.steps(outcome.run_id))["s"].checkpoint == {}


async def test_checkpoint_is_committed_and_handed_to_the_next_attempt(h: Harness) -> None:
    """What a step checkpoints before failing is in the store and in the next attempt's ctx;
    each checkpoint event holds what that checkpoint changed."""
    seen: list[dict[str, Any]] = []

    @h.registry.step("t/cp", params=Free)
    async def cp(ctx: StepContext, params: Free) -> dict[str, Any]:
        seen.append(dict(ctx.last_checkpoint))
        if ctx.attempt == 1:
            await ctx.checkpoint(job_id="job-1")
            await ctx.checkpoint(stage="created")
            raise TransientError("lost connection")
        return {"job": ctx.last_checkpoint["job_id"]}

    outcome = await h.run("name: p\nsteps:\n  s: {uses: t/cp, retry: {initial_delay: 1ms}}\n")
    assert seen == [{}, {"job_id": "job-1", "stage": "created"}]
    step = (await h.steps(outcome.run_id))["s"]
    assert step.checkpoint == {"job_id": "job-1", "stage": "created"}
    assert step.outputs == {"job": "job-1"}
    assert [e.data for e in await h.events(outcome.run_id, "checkpoint")] == [
        {"job_id": "job-1"}, {"stage": "created"}]


async def test_cancellation_leaves_run_interrupted_and_resume_reenters(h: Harness) -> None:
    """Cancelling the executor (as SIGINT does) saves states; resume re-enters the step."""
    entered = anyio.Event()
    calls: list[tuple[int, dict[str, Any]]] = []

    @h.registry.step("t/long", params=Free)
    async def long(ctx: StepContext, params: Free) -> dict[str, Any]:
        calls.append((ctx.attempt, dict(ctx.last_checkpoint)))
        if not ctx.last_checkpoint:
            await ctx.checkpoint(half="done")
            entered.set()
            await anyio.sleep_forever()
        return {"resumed_with": ctx.last_checkpoint}

    text = """
        name: p
        steps:
          before: {uses: core/echo, with: {x: 1}}
          long: {uses: t/long, needs: [before]}
    """
    pipeline = h.pipeline(text)
    async with h.orchestrator() as orch, anyio.create_task_group() as tg:
        record = await h.start(orch, tg, pipeline)
        with anyio.fail_after(5):
            await entered.wait()
        tg.cancel_scope.cancel()
    run = await h.store.get_run(record.id)
    steps = await h.steps(record.id)
    assert (run.status, run.lease_owner) == (RunStatus.INTERRUPTED, None)
    assert steps["long"].status is StepStatus.INTERRUPTED
    assert steps["before"].status is StepStatus.SUCCEEDED

    outcome = await h.resume(record.id)
    assert outcome.status is RunStatus.SUCCEEDED
    assert calls == [(1, {}), (1, {"half": "done"})]
    assert len(await h.events(record.id, "step_succeeded")) == 2  # before once, long once


async def test_lost_lease_stops_the_executor_without_writing(tmp_path: Path,
                                                              store: StateStore) -> None:
    """When another process takes the lease over, this executor stops and writes nothing."""
    from orchestrator.engine.plan import ExecutionPlan
    from orchestrator.errors import LeaseLost

    h = Harness(tmp_path, store, lease_ttl=0.3)
    entered, release = anyio.Event(), anyio.Event()

    @h.registry.step("t/wait", params=Free)
    async def wait(ctx: StepContext, params: Free) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"late": True}

    pipeline = h.pipeline("name: p\nsteps:\n  s: {uses: t/wait}\n")
    async with h.orchestrator() as orch:
        record = await orch.create_run(pipeline, {})
        outcome: list[BaseException] = []
        stopped = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def execute() -> None:
                try:
                    await orch.execute(ExecutionPlan.new_run(record, pipeline))
                except LeaseLost as exc:
                    outcome.append(exc)
                stopped.set()

            tg.start_soon(execute)
            with anyio.fail_after(5):
                await entered.wait()
            thief = await store.acquire_lease(record.id, "thief", ttl=60, max_recoveries=9,
                                              dead_owners=[orch.owner])
            with anyio.fail_after(5):  # the heartbeat (every 0.1 s) notices within a beat
                await stopped.wait()
            release.set()
    assert "another process took the run's lease over" in str(outcome[0])
    steps = await h.steps(record.id)
    assert "s" not in steps or steps["s"].status is StepStatus.RUNNING  # no late write
    assert await h.events(record.id, "step_succeeded") == []
    run = await store.get_run(record.id)
    assert (run.lease_owner, run.lease_generation) == ("thief", thief.generation)


async def test_a_long_step_is_visible_as_running(h: Harness) -> None:
    """An attempt's start is written within FLUSH_DELAY, so `show` sees a long step running."""
    from orchestrator.engine.journal import FLUSH_DELAY

    entered, release = anyio.Event(), anyio.Event()

    @h.registry.step("t/long", params=Free)
    async def long(ctx: StepContext, params: Free) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {}

    pipeline = h.pipeline("name: p\nsteps:\n  s: {uses: t/long}\n")
    async with h.orchestrator() as orch, anyio.create_task_group() as tg:
        record = await h.start(orch, tg, pipeline)
        with anyio.fail_after(5):
            await entered.wait()
        started = anyio.current_time()
        with anyio.fail_after(5):
            while "s" not in await h.steps(record.id):  # noqa: ASYNC110  (store state)
                await anyio.sleep(FLUSH_DELAY / 5)  # polling the store, with a deadline
        assert anyio.current_time() - started < FLUSH_DELAY + 1.0
        assert (await h.steps(record.id))["s"].status is StepStatus.RUNNING
        release.set()
    assert (await h.steps(record.id))["s"].status is StepStatus.SUCCEEDED
