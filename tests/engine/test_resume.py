"""Resume: keep what succeeded, re-enter what did not, re-run what --from or --reload say."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator.errors import ConfigError, PermanentError
from orchestrator.steps.context import StepContext
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus, StepStatus
from tests.engine.harness import Harness

CHAIN = """
    name: chain
    inputs:
      greeting: {default: hi}
    steps:
      a:
        uses: t/count
        with: {v: "${{ inputs.greeting }}"}
      b:
        uses: t/count
        with: {v: "${{ steps.a.outputs.v }}"}
      c:
        uses: t/count
        with: {v: "${{ steps.b.outputs.v }}", fail: true}
      d:
        uses: t/count
        with: {v: "${{ steps.c.outputs.v }}"}
"""


class CountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Any = None
    fail: bool = False


@pytest.fixture
def h(tmp_path: Path, store: StateStore) -> Harness:
    return Harness(tmp_path, store)


@pytest.fixture
def executions(h: Harness) -> Counter[str]:
    """Counts executions per step; a step with fail=true fails until `heal` is set."""
    counts: Counter[str] = Counter()
    heal = {"healed": False}

    @h.registry.step("t/count", params=CountParams)
    async def count(ctx: StepContext, params: CountParams) -> dict[str, Any]:
        counts[ctx.step_id] += 1
        if params.fail and not heal["healed"]:
            raise PermanentError("broken until healed")
        return {"v": params.v}

    counts.heal = heal  # type: ignore[attr-defined]
    return counts


async def test_resume_keeps_succeeded_steps(h: Harness, executions: Counter[str]) -> None:
    """After a failure, resume re-runs only the failed step and what follows."""
    first = await h.run(CHAIN)
    assert first.status is RunStatus.FAILED and first.failed_step == "c"
    executions.heal["healed"] = True  # type: ignore[attr-defined]
    second = await h.resume(first.run_id)
    assert second.status is RunStatus.SUCCEEDED
    assert executions == Counter({"a": 1, "b": 1, "c": 2, "d": 1})
    assert (await h.steps(first.run_id))["d"].outputs == {"v": "hi"}


async def test_failed_step_gets_a_fresh_retry_budget(h: Harness) -> None:
    """A step that exhausted its attempts starts counting again on resume."""
    outcome = await h.run("""
        name: p
        steps:
          s: {uses: core/fail, with: {times: 3}, retry: {max_attempts: 2, initial_delay: 1ms}}
    """)
    assert outcome.status is RunStatus.FAILED
    resumed = await h.resume(outcome.run_id)
    assert resumed.status is RunStatus.SUCCEEDED
    step = (await h.steps(outcome.run_id))["s"]
    assert (step.attempt, step.outputs) == (2, {"failures": 3})


async def test_resume_of_a_succeeded_run_does_nothing(h: Harness,
                                                      executions: Counter[str]) -> None:
    executions.heal["healed"] = True  # type: ignore[attr-defined]
    first = await h.run(CHAIN)
    again = await h.resume(first.run_id)
    assert again.status is RunStatus.SUCCEEDED
    assert sum(executions.values()) == 4


async def test_resume_from_reruns_the_step_and_downstream(h: Harness,
                                                          executions: Counter[str]) -> None:
    executions.heal["healed"] = True  # type: ignore[attr-defined]
    first = await h.run(CHAIN)
    await h.resume(first.run_id, from_step="b")
    assert executions == Counter({"a": 1, "b": 2, "c": 2, "d": 2})
    started = await h.events(first.run_id, "run_started")
    assert started[-1].data["reset"] == ["b", "c", "d"]


async def test_resume_from_unknown_step_is_bad_input(h: Harness,
                                                     executions: Counter[str]) -> None:
    first = await h.run(CHAIN)
    with pytest.raises(ConfigError, match=r"--from zz: run .* has no such step"):
        await h.resume(first.run_id, from_step="zz")


async def test_reload_reruns_changed_steps_and_downstream_only(
        h: Harness, executions: Counter[str], tmp_path: Path) -> None:
    """With --reload, a step whose resolved configuration changed re-runs, with dependents;
    an unchanged step keeps its outputs, and the run stores the new text."""
    executions.heal["healed"] = True  # type: ignore[attr-defined]
    first = await h.run(CHAIN)
    changed = CHAIN.replace('with: {v: "${{ steps.b.outputs.v }}", fail: true}',
                            'with: {v: "${{ steps.b.outputs.v }}!", fail: true}')
    h.pipeline(changed)  # rewrites p.yaml, the file the run came from

    async with h.orchestrator() as orch:
        plan = await orch.plan_resume(first.run_id, reload=True)
    assert (plan.kept(), plan.will_run()) == (["a", "b"], ["c", "d"])

    outcome = await h.resume(first.run_id, reload=True)
    assert outcome.status is RunStatus.SUCCEEDED
    assert executions == Counter({"a": 1, "b": 1, "c": 2, "d": 2})
    assert (await h.steps(first.run_id))["d"].outputs == {"v": "hi!"}
    assert "outputs.v }}!" in (await h.store.get_run(first.run_id)).pipeline_text


async def test_runs_of_one_stored_text_share_one_parsed_pipeline(
        h: Harness, executions: Counter[str]) -> None:
    """Two runs stored with the same text resume with one `Pipeline` (a worker executing a
    batch's cells parses it once); --reload reads the file anew."""
    first, second = await h.run(CHAIN), await h.run(CHAIN)
    async with h.orchestrator() as orch:
        plans = [await orch.plan_resume(run.run_id) for run in (first, second)]
        reloaded = await orch.plan_resume(first.run_id, reload=True)
    assert plans[0].pipeline is plans[1].pipeline
    assert reloaded.pipeline is not plans[0].pipeline
    assert plans[0].will_run() == plans[1].will_run() == ["c", "d"]


async def test_reload_without_changes_reruns_nothing(h: Harness,
                                                     executions: Counter[str]) -> None:
    executions.heal["healed"] = True  # type: ignore[attr-defined]
    first = await h.run(CHAIN)
    async with h.orchestrator() as orch:
        plan = await orch.plan_resume(first.run_id, reload=True)
    assert plan.will_run() == []


async def test_reload_reads_the_longer_hashes_earlier_versions_stored(
        h: Harness, executions: Counter[str]) -> None:
    """Steps stored with a 16-digit configuration hash (before it was 12) are unchanged if
    their configuration is; a changed one still re-runs."""
    import hashlib
    import json

    from orchestrator.store.records import Lease, RunUpdate

    executions.heal["healed"] = True  # type: ignore[attr-defined]
    first = await h.run(CHAIN)
    steps = await h.steps(first.run_id)
    assert {len(s.config_hash or "") for s in steps.values()} == {12}

    def old_hash(uses: str, rendered: dict[str, Any]) -> str:
        blob = json.dumps({"uses": uses, "with": rendered}, sort_keys=True, default=str,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    old = {"a": old_hash("t/count", {"v": "hi"}), "b": old_hash("t/count", {"v": "hi"}),
           "c": old_hash("t/count", {"v": "hi", "fail": True}),
           "d": old_hash("t/count", {"v": "not what it ran with"})}
    assert all(old[s].startswith(steps[s].config_hash or "-") for s in "abc")
    lease: Lease = await h.store.acquire_lease(first.run_id, "forger", ttl=60,
                                               max_recoveries=9)
    await h.store.commit(lease, run=RunUpdate(RunStatus.SUCCEEDED), steps=[
        dataclasses.replace(steps[s], config_hash=old[s]) for s in "abcd"])
    await h.store.release_lease(lease)
    async with h.orchestrator() as orch:
        plan = await orch.plan_resume(first.run_id, reload=True)
    assert plan.will_run() == ["d"]


async def test_interrupted_retry_waits_out_its_backoff(h: Harness) -> None:
    """A step stopped while waiting to retry keeps its retry time and attempt count."""
    from orchestrator.store.records import Lease, RunUpdate, StepRecord

    outcome = await h.run("name: p\nsteps:\n  s: {uses: core/fail, with: {times: 1}}\n")
    # Forge the state a crash during backoff leaves: attempt 1 failed, retry due now.
    run = await h.store.get_run(outcome.run_id)
    lease: Lease = await h.store.acquire_lease(run.id, "forger", ttl=60, max_recoveries=9)
    await h.store.commit(lease, run=RunUpdate(RunStatus.INTERRUPTED), steps=[
        StepRecord("s", StepStatus.RETRYING, attempt=1, checkpoint={"failures": 1},
                   retry_at=h.store.clock())])
    await h.store.release_lease(lease)
    resumed = await h.resume(run.id)
    assert resumed.status is RunStatus.SUCCEEDED
    step = (await h.steps(run.id))["s"]
    assert (step.attempt, step.outputs) == (2, {"failures": 1})
