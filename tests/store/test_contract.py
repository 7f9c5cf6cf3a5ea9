"""The state store contract: every implementation must pass this suite unchanged."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from orchestrator.errors import LeaseLost, RunBusy, RunExists, RunNotFound, RunStranded
from orchestrator.store.base import StateStore
from orchestrator.store.records import (
    ErrorInfo,
    MetricPoint,
    NewBatch,
    NewEvent,
    NewRun,
    RunStatus,
    RunUpdate,
    StepRecord,
    StepStatus,
)
from orchestrator.testing import FakeClock

TTL = 30.0


def new_run(run_id: str = "r-1") -> NewRun:
    return NewRun(run_id, "p", "/x/p.yaml", "name: p\n", {"n": 3})


async def test_create_and_read_a_run(store: StateStore, clock: FakeClock) -> None:
    """A new run is pending, keeps its text and inputs, and logs its creation."""
    created = await store.create_run(new_run())
    assert created == await store.get_run("r-1")
    assert (created.status, created.inputs, created.pipeline_text) == (
        RunStatus.PENDING, {"n": 3}, "name: p\n")
    assert created.created_at == clock.now
    assert [e.kind for e in await store.get_events("r-1")] == ["run_created"]


async def test_a_run_keeps_its_provider_until_an_executor_moves_it(store: StateStore) -> None:
    """The provider a run was created with is stored with it; only a fenced commit that names
    another one changes it, and other updates leave it alone."""
    await store.create_run(dataclasses.replace(new_run(), provider="together",
                                               provider_url="http://127.0.0.1:1/v1"))
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING))
    run = await store.get_run("r-1")
    assert (run.provider, run.provider_url) == ("together", "http://127.0.0.1:1/v1")
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING, provider=("local", "/data")))
    run = await store.get_run("r-1")
    assert (run.provider, run.provider_url) == ("local", "/data")


async def test_a_runs_step_order_is_kept_with_its_text(store: StateStore) -> None:
    """The step order given with a text comes back with every run of it (a batch's cells
    too), is added to a text stored without one, and a reloaded text brings its own."""
    text = f"name: ordered\n# {store!r}\n"  # its own text: texts are cached by hash
    plain = NewRun("r-0", "p", "/x/p.yaml", text, {})
    assert (await store.create_run(plain)).step_ids is None
    ordered = dataclasses.replace(plain, id="r-1", step_ids=("b", "a", "on_failure.n"))
    assert (await store.create_run(ordered)).step_ids == ("b", "a", "on_failure.n")
    batch = NewBatch("b-1", "p", "/x/p.yaml", text, {}, step_ids=("b", "a", "on_failure.n"))
    _, cells = await store.create_batch(batch, [dataclasses.replace(ordered, id="b-1.0")])
    assert cells[0].step_ids == ("b", "a", "on_failure.n")
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING, pipeline_text=text + "#2\n",
                                            step_ids=("a", "b")))
    assert (await store.get_run("r-1")).step_ids == ("a", "b")


async def test_duplicate_and_unknown_ids(store: StateStore) -> None:
    """Run ids are unique; an unknown id is a clear error."""
    await store.create_run(new_run())
    with pytest.raises(RunExists):
        await store.create_run(new_run())
    with pytest.raises(RunNotFound, match="no run with id 'r-9'"):
        await store.get_run("r-9")


async def test_list_runs_newest_first(store: StateStore, clock: FakeClock) -> None:
    for i in range(3):
        await store.create_run(new_run(f"r-{i}"))
        clock.advance(1)
    assert [r.id for r in await store.list_runs(limit=2)] == ["r-2", "r-1"]


async def test_commit_writes_steps_run_status_and_events_together(store: StateStore,
                                                                   clock: FakeClock) -> None:
    """One commit applies a status change, whole step rows and events atomically."""
    await store.create_run(new_run())
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    step = StepRecord("a", StepStatus.SUCCEEDED, 2, {"x": [1, "y"]}, {"k": "v"},
                      ErrorInfo("TransientError", "flaky"), 1.0, 2.0, None, "abc")
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING), steps=[step],
                       events=[NewEvent("step_succeeded", "a", 2, {"outputs": {"x": 1}})])
    assert (await store.get_steps("r-1")) == {"a": step}
    run = await store.get_run("r-1")
    assert run.status is RunStatus.RUNNING and run.started_at == clock.now
    events = await store.get_events("r-1")
    assert events[-1].kind == "step_succeeded" and events[-1].data == {"outputs": {"x": 1}}
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert await store.get_events("r-1", after=events[-2].seq) == [events[-1]]


async def test_a_long_event_log_is_read_a_page_at_a_time(store: StateStore) -> None:
    """From its start (`after`, `limit`) or its end (`newest`, `before`), oldest first."""
    await store.create_run(new_run())
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, events=[NewEvent("note", data={"n": n}) for n in range(10)])
    every = await store.get_events("r-1")
    seqs = [e.seq for e in every]
    assert [e.seq for e in await store.get_events("r-1", after=seqs[1], limit=2)] == seqs[2:4]
    assert [e.seq for e in await store.get_events("r-1", limit=3, newest=True)] == seqs[-3:]
    assert [e.seq for e in await store.get_events("r-1", before=seqs[5], limit=2,
                                                  newest=True)] == seqs[3:5]
    assert [e.seq for e in await store.get_events("r-1", after=seqs[0], before=seqs[3])
            ] == seqs[1:3]
    assert await store.get_events("r-1", after=2**63 - 2) == []


async def test_metric_points_are_kept_once_and_filled_in(store: StateStore,
                                                         clock: FakeClock) -> None:
    """A training step seen twice is one point: the second report fills in what the first
    lacked (an eval loss) and keeps what it had; points come back by step, job, training
    step; a stale lease writes none."""
    await store.create_run(new_run())
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, metrics=[
        MetricPoint("wait", "ft-1", 20, epoch=2.0, train_loss=0.9, learning_rate=1e-5),
        MetricPoint("wait", "ft-1", 10, epoch=1.0, train_loss=1.5, tokens=100)])
    clock.advance(5)
    await store.commit(lease, metrics=[MetricPoint("wait", "ft-1", 20, eval_loss=1.1),
                                       MetricPoint("wait", "ft-1", 30, train_loss=0.5)])
    points = await store.get_metrics("r-1")
    assert [(p.train_step, p.train_loss, p.eval_loss) for p in points] == [
        (10, 1.5, None), (20, 0.9, 1.1), (30, 0.5, None)]
    assert (points[0].tokens, points[1].epoch, points[1].learning_rate) == (100, 2.0, 1e-5)
    assert points[0].ts == clock.now - 5 and points[2].ts == clock.now
    clock.advance(TTL + 1)
    await store.acquire_lease("r-1", "other", ttl=TTL, max_recoveries=3)
    with pytest.raises(LeaseLost):
        await store.commit(lease, metrics=[MetricPoint("wait", "ft-1", 40, train_loss=0.1)])
    assert len(await store.get_metrics("r-1")) == 3
    assert await store.get_metrics("r-9") == []


async def test_finished_status_sets_finished_at(store: StateStore, clock: FakeClock) -> None:
    await store.create_run(new_run())
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    clock.advance(5)
    await store.commit(lease, run=RunUpdate(RunStatus.FAILED, "step a failed"))
    run = await store.get_run("r-1")
    assert (run.status, run.error, run.finished_at) == (RunStatus.FAILED, "step a failed",
                                                        clock.now)


async def test_live_lease_is_refused(store: StateStore) -> None:
    """A second owner cannot take a live lease."""
    await store.create_run(new_run())
    await store.acquire_lease("r-1", "first", ttl=TTL, max_recoveries=3)
    with pytest.raises(RunBusy, match="being executed by first"):
        await store.acquire_lease("r-1", "second", ttl=TTL, max_recoveries=3)


async def test_expired_lease_is_taken_over_and_the_old_owner_fenced(
        store: StateStore, clock: FakeClock) -> None:
    """After expiry a new owner takes over; the old owner's writes are refused entirely."""
    await store.create_run(new_run())
    old = await store.acquire_lease("r-1", "old", ttl=TTL, max_recoveries=3)
    await store.commit(old, run=RunUpdate(RunStatus.RUNNING))
    clock.advance(TTL + 1)
    new = await store.acquire_lease("r-1", "new", ttl=TTL, max_recoveries=3)
    assert new.generation == old.generation + 1
    with pytest.raises(LeaseLost):
        await store.commit(old, steps=[StepRecord("a", StepStatus.SUCCEEDED)],
                           events=[NewEvent("late")])
    assert await store.get_steps("r-1") == {}
    assert "late" not in [e.kind for e in await store.get_events("r-1")]
    await store.commit(new, steps=[StepRecord("a", StepStatus.SUCCEEDED)])
    assert (await store.get_run("r-1")).recoveries == 1


async def test_dead_owner_is_taken_over_before_expiry(store: StateStore) -> None:
    """An owner known to have exited does not block until its lease expires."""
    await store.create_run(new_run())
    await store.acquire_lease("r-1", "gone", ttl=TTL, max_recoveries=3)
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3,
                                      dead_owners=["gone"])
    assert lease.owner == "me"


async def test_renew_extends_only_the_owners_leases(store: StateStore,
                                                    clock: FakeClock) -> None:
    """One call renews every lease of an owner and says which it still holds."""
    for run_id in ("r-1", "r-2", "r-3"):
        await store.create_run(new_run(run_id))
    await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.acquire_lease("r-2", "me", ttl=TTL, max_recoveries=3)
    await store.acquire_lease("r-3", "other", ttl=TTL, max_recoveries=3)
    clock.advance(20)
    assert await store.renew_leases("me", ttl=TTL) == {"r-1", "r-2"}
    clock.advance(20)  # r-1 was renewed: still live at +40s; r-3 was not
    with pytest.raises(RunBusy):
        await store.acquire_lease("r-1", "thief", ttl=TTL, max_recoveries=3)
    assert (await store.acquire_lease("r-3", "thief", ttl=TTL, max_recoveries=3)).owner == \
        "thief"


async def test_release_is_fenced(store: StateStore) -> None:
    """Releasing frees the run; a stale lease's release changes nothing."""
    await store.create_run(new_run())
    first = await store.acquire_lease("r-1", "a", ttl=TTL, max_recoveries=3)
    await store.release_lease(first)
    second = await store.acquire_lease("r-1", "b", ttl=TTL, max_recoveries=3)
    await store.release_lease(first)
    assert (await store.get_run("r-1")).lease_owner == "b"
    await store.release_lease(second)
    assert (await store.get_run("r-1")).lease_owner is None


async def test_too_many_recoveries_strand_the_run(store: StateStore, clock: FakeClock) -> None:
    """A run found `running` under an expired lease counts a recovery; past the max it parks."""
    await store.create_run(new_run())
    for attempt in range(3):
        lease = await store.acquire_lease("r-1", f"w{attempt}", ttl=TTL, max_recoveries=2)
        await store.commit(lease, run=RunUpdate(RunStatus.RUNNING))
        clock.advance(TTL + 1)
    with pytest.raises(RunStranded, match="recovered from a crashed executor 2 times"):
        await store.acquire_lease("r-1", "w3", ttl=TTL, max_recoveries=2)
    run = await store.get_run("r-1")
    assert (run.status, run.lease_owner) == (RunStatus.STRANDED, None)
    assert (await store.get_events("r-1"))[-1].kind == "run_stranded"
    forced = await store.acquire_lease("r-1", "w3", ttl=TTL, max_recoveries=2, force=True)
    assert (await store.get_run("r-1")).recoveries == 0 and forced.owner == "w3"


async def test_clean_stop_is_not_a_recovery(store: StateStore, clock: FakeClock) -> None:
    """Resuming a run that stopped cleanly (failed, interrupted) does not count a recovery."""
    await store.create_run(new_run())
    lease = await store.acquire_lease("r-1", "a", ttl=TTL, max_recoveries=0)
    await store.commit(lease, run=RunUpdate(RunStatus.INTERRUPTED))
    await store.release_lease(lease)
    await store.acquire_lease("r-1", "b", ttl=TTL, max_recoveries=0)
    assert (await store.get_run("r-1")).recoveries == 0


async def test_using_a_closed_store_is_an_error(store_url: str) -> None:
    """Lifecycle misuse fails with a message saying what is wrong."""
    from orchestrator.store.opening import open_store

    store = open_store(store_url)
    with pytest.raises(RuntimeError, match="the state store is unopened"):
        await store.get_run("x")
    async with store:
        pass
    with pytest.raises(RuntimeError, match="can be opened once; this one is closed"):
        await store.__aenter__()


async def test_create_run_already_leased(store: StateStore, clock: FakeClock) -> None:
    """A run created for an owner is leased from the first instant (no one can claim it)."""
    record = await store.create_run(new_run(), owner="me", ttl=TTL)
    assert record.lease is not None
    assert (record.lease.owner, record.lease.generation, record.lease.expires_at) == (
        "me", 1, clock.now + TTL)
    with pytest.raises(RunBusy):
        await store.acquire_lease("r-1", "other", ttl=TTL, max_recoveries=3)
    await store.commit(record.lease, run=RunUpdate(RunStatus.RUNNING))
    assert [e.kind for e in await store.get_events("r-1")] == ["run_created", "lease_acquired"]


async def test_final_commit_can_release_the_lease(store: StateStore) -> None:
    """An executor's last write gives the lease up in the same transaction."""
    record = await store.create_run(new_run(), owner="me", ttl=TTL)
    assert record.lease is not None
    await store.commit(record.lease, run=RunUpdate(RunStatus.SUCCEEDED, release=True))
    run = await store.get_run("r-1")
    assert (run.status, run.lease_owner, run.lease) == (RunStatus.SUCCEEDED, None, None)
    with pytest.raises(LeaseLost):
        await store.commit(record.lease, events=[NewEvent("late")])


async def test_model_registry(store: StateStore, clock: FakeClock) -> None:
    """Entries are upserted by name with their lineage, and listed newest first."""
    from orchestrator.store.records import ModelEntry

    first = await store.record_model(ModelEntry(
        "user/m-1", "r-1", "register", "lora", provider="local", base_model="base",
        job_id="ft-1", training_file="file-1", hyperparameters={"n_epochs": 3},
        metrics={"train_loss": 0.4}))
    assert first.recorded_at == clock.now
    clock.advance(1)
    await store.record_model(ModelEntry("user/m-2", "r-2", "register", "lora"))
    clock.advance(1)
    await store.record_model(ModelEntry("user/m-1", "r-3", "register", "lora",
                                        metrics={"train_loss": 0.3}))
    listed = await store.list_models()
    assert [(m.name, m.run_id) for m in listed] == [("user/m-1", "r-3"), ("user/m-2", "r-2")]
    assert listed[0].metrics == {"train_loss": 0.3}
    found = await store.get_model("user/m-1")
    assert found is not None and found.run_id == "r-3"


async def test_an_alias_moves_once_to_a_model_and_keeps_its_history(
        store: StateStore, clock: FakeClock) -> None:
    """A move to where the alias already points adds nothing (a promotion done twice, or
    again after a crash); the current model is the latest move; every move is kept."""
    from orchestrator.store.records import AliasMove

    first = await store.move_alias(AliasMove("production", "user/m-1", "ann", "best lr",
                                             "b-1"))
    assert first is not None and first.moved_at == clock.now and first.seq > 0
    clock.advance(1)
    assert await store.move_alias(AliasMove("production", "user/m-1", "bob")) is None
    await store.move_alias(AliasMove("staging", "user/m-1", "bob"))
    clock.advance(1)
    moved = await store.move_alias(AliasMove("production", "user/m-2", "bob", "retrained"))
    assert moved is not None and moved.seq > first.seq
    current = {a.alias: (a.model, a.moved_by, a.reason) for a in await store.aliases()}
    assert current == {"production": ("user/m-2", "bob", "retrained"),
                       "staging": ("user/m-1", "bob", "")}
    history = await store.alias_history()
    assert [(a.alias, a.model) for a in history] == [
        ("production", "user/m-2"), ("staging", "user/m-1"), ("production", "user/m-1")]
    assert history[-1].source == "b-1"
    assert [a.model for a in await store.alias_history(alias="production")] == [
        "user/m-2", "user/m-1"]
    assert await store.get_model("user/m-1") is None  # aliases name models; they record none


async def test_concurrent_moves_of_one_alias_to_one_model_make_one_move(
        store: StateStore) -> None:
    from orchestrator.store.records import AliasMove

    async def promote() -> None:
        await store.move_alias(AliasMove("production", "user/m-1", "w"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(promote)
    assert len(await store.alias_history()) == 1


# -- batches ---------------------------------------------------------------------------------

async def test_a_batch_and_its_cells_are_stored_together(store: StateStore,
                                                         clock: FakeClock) -> None:
    """Cells get their batch id and index; the batch counts them; listing keeps cell order."""
    from orchestrator.store.records import NewBatch

    cells = [NewRun(f"r-{i}", "p", "/x/p.yaml", "t", {"n": 1}, matrix={"lr": lr})
             for i, lr in enumerate([0.1, 0.2, 0.3])]
    batch, runs = await store.create_batch(
        NewBatch("b-1", "p", "/x/p.yaml", "t", {"n": 1}, max_parallel=2, fail_fast=True),
        cells, owner="me", ttl=TTL)
    assert (batch.cells, batch.max_parallel, batch.fail_fast) == (3, 2, True)
    assert [(r.batch_id, r.cell, r.matrix) for r in runs] == [
        ("b-1", 0, {"lr": 0.1}), ("b-1", 1, {"lr": 0.2}), ("b-1", 2, {"lr": 0.3})]
    assert all(r.lease is not None and r.lease.owner == "me" for r in runs)
    assert [r.id for r in await store.list_runs(batch_id="b-1")] == ["r-0", "r-1", "r-2"]
    assert await store.get_batch("b-1") == batch
    assert [b.id for b in await store.list_batches()] == ["b-1"]
    with pytest.raises(RunNotFound, match="no batch with id 'b-2'"):
        await store.get_batch("b-2")


async def test_a_batch_with_a_taken_run_id_stores_nothing(store: StateStore) -> None:
    from orchestrator.store.records import NewBatch

    await store.create_run(new_run("r-1"))
    with pytest.raises(RunExists):
        await store.create_batch(NewBatch("b-1", "p", "/p", "t", {}),
                                 [new_run("r-0"), new_run("r-1")])
    with pytest.raises(RunNotFound):
        await store.get_batch("b-1")
    assert [r.id for r in await store.list_runs()] == ["r-1"]


# -- claiming runs ---------------------------------------------------------------------------

async def test_workers_claim_queued_orphaned_and_cancel_requested_runs(
        store: StateStore, clock: FakeClock) -> None:
    """Queued runs, crashed runs (lease expired) and unexecuted cancel requests are claimed,
    oldest first; pending runs (their creator executes them) and live leases are not."""
    from dataclasses import replace

    queued = replace(new_run("r-queued"), status=RunStatus.QUEUED)
    await store.create_run(queued)
    clock.advance(1)
    await store.create_run(new_run("r-pending"))
    clock.advance(1)
    await store.create_run(new_run("r-crashed"))
    lease = await store.acquire_lease("r-crashed", "old", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING))
    clock.advance(1)
    await store.create_run(new_run("r-failed"))
    lease = await store.acquire_lease("r-failed", "old", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.FAILED, "x", release=True))
    await store.request_cancel(["r-failed"])
    await store.create_run(new_run("r-live"))
    live = await store.acquire_lease("r-live", "other", ttl=10 * TTL, max_recoveries=3)
    await store.commit(live, run=RunUpdate(RunStatus.RUNNING))

    claimed = await store.claim_runs("w", limit=10, ttl=TTL, max_recoveries=3)
    assert [lease.run_id for lease in claimed] == ["r-queued", "r-failed"]
    clock.advance(TTL + 1)
    await store.renew_leases("w", ttl=TTL)  # expired, but no one took them: renewed
    claimed = await store.claim_runs("w2", limit=10, ttl=TTL, max_recoveries=3)
    assert [lease.run_id for lease in claimed] == ["r-crashed"]
    assert (await store.get_run("r-crashed")).recoveries == 1


async def test_a_failed_cancellation_is_claimed_again_only_after_a_pause(
        store: StateStore, clock: FakeClock) -> None:
    """A run that ended with its cancel request pending (the provider unreachable) is not
    claimed at every poll, which would hammer the provider, but once a CANCEL_RETRY_AFTER."""
    from orchestrator.store.records import CANCEL_RETRY_AFTER

    await store.create_run(new_run("r-1"))
    await store.request_cancel(["r-1"])
    [lease] = await store.claim_runs("w", limit=1, ttl=TTL, max_recoveries=3)
    clock.advance(1)
    await store.commit(lease, run=RunUpdate(RunStatus.INTERRUPTED, "cancellation incomplete",
                                            release=True))
    clock.advance(CANCEL_RETRY_AFTER - 1)
    assert await store.claim_runs("w", limit=1, ttl=TTL, max_recoveries=3) == []
    clock.advance(1)
    assert [x.run_id for x in await store.claim_runs("w", limit=1, ttl=TTL,
                                                    max_recoveries=3)] == ["r-1"]


async def test_runs_of_an_owner_known_dead_are_claimed_before_their_lease_expires(
        store: StateStore) -> None:
    """Live leases name their owners; a claim given one of them as dead takes its runs at
    once (recovered from a crash), and leaves other owners' live runs alone."""
    for run_id, owner in (("r-dead", "host:1:aa"), ("r-alive", "host:2:bb")):
        await store.create_run(new_run(run_id))
        lease = await store.acquire_lease(run_id, owner, ttl=TTL, max_recoveries=3)
        await store.commit(lease, run=RunUpdate(RunStatus.RUNNING))
    assert await store.lease_owners() == {"host:1:aa", "host:2:bb"}
    assert await store.claim_runs("w", limit=5, ttl=TTL, max_recoveries=3) == []
    claimed = await store.claim_runs("w", limit=5, ttl=TTL, max_recoveries=3,
                                     dead_owners=["host:1:aa"])
    assert [lease.run_id for lease in claimed] == ["r-dead"]
    assert (await store.get_run("r-dead")).recoveries == 1
    assert await store.lease_owners() == {"w", "host:2:bb"}


async def test_claiming_takes_the_lease_once(store: StateStore, clock: FakeClock) -> None:
    from dataclasses import replace

    for i in range(3):
        await store.create_run(replace(new_run(f"r-{i}"), status=RunStatus.QUEUED))
        clock.advance(1)
    first = await store.claim_runs("a", limit=2, ttl=TTL, max_recoveries=3)
    second = await store.claim_runs("b", limit=2, ttl=TTL, max_recoveries=3)
    assert [lease.run_id for lease in first] == ["r-0", "r-1"]
    assert [lease.run_id for lease in second] == ["r-2"]
    assert await store.claim_runs("c", limit=2, ttl=TTL, max_recoveries=3) == []


# -- cancellation ----------------------------------------------------------------------------

async def test_cancel_requests_reach_the_owner(store: StateStore) -> None:
    await store.create_run(new_run("r-1"))
    await store.create_run(new_run("r-2"))
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING))
    assert await store.cancel_requests("me") == set()
    marked = await store.request_cancel(["r-1", "r-2", "r-9"])
    assert [(r.id, r.cancelling) for r in marked] == [("r-1", True), ("r-2", True)]
    assert await store.cancel_requests("me") == {"r-1"}
    await store.commit(lease, run=RunUpdate(RunStatus.CANCELLED, "cancelled", release=True))
    assert await store.cancel_requests("me") == set()
    assert not (await store.get_run("r-1")).cancelling
    assert await store.request_cancel(["r-1"]) == []  # already cancelled
    kinds = [e.kind for e in await store.get_events("r-2")]
    assert kinds == ["run_created", "cancel_requested"]


async def test_resuming_a_cancelled_run_can_withdraw_the_request(store: StateStore) -> None:
    await store.create_run(new_run("r-1"))
    await store.request_cancel(["r-1"])
    lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
    await store.commit(lease, run=RunUpdate(RunStatus.RUNNING, clear_cancel=True))
    assert (await store.get_run("r-1")).cancel_requested_at is None


# -- concurrency slots -----------------------------------------------------------------------

async def test_slots_are_granted_up_to_the_limit_in_order(store: StateStore) -> None:
    granted = await store.acquire_slots("k", 2, [("a", "r-a"), ("b", "r-b"), ("c", "r-c")],
                                        owner="me", ttl=TTL)
    assert granted == ["a", "b"]
    assert await store.acquire_slots("k", 2, [("c", "r-c")], owner="me", ttl=TTL) == []
    assert await store.acquire_slots("other", 1, [("c", "r-c")], owner="me", ttl=TTL) == ["c"]
    await store.release_slot("k", "a", owner="someone else")  # not theirs: nothing happens
    assert await store.acquire_slots("k", 2, [("c", "r-c")], owner="me", ttl=TTL) == []
    await store.release_slot("k", "a", owner="me")
    assert await store.acquire_slots("k", 2, [("c", "r-c"), ("d", "r-d")], owner="me",
                                     ttl=TTL) == ["c"]


async def test_a_holder_keeps_its_slot_and_another_owner_can_take_it_over(
        store: StateStore) -> None:
    """A run resumed by another process re-acquires its own slot without counting twice."""
    assert await store.acquire_slots("k", 1, [("a", "r-a")], owner="p1", ttl=TTL) == ["a"]
    assert await store.acquire_slots("k", 1, [("a", "r-a")], owner="p2", ttl=TTL) == ["a"]
    assert await store.acquire_slots("k", 1, [("b", "r-b")], owner="p2", ttl=TTL) == []


async def test_slots_expire_unless_their_owner_renews(store: StateStore,
                                                      clock: FakeClock) -> None:
    await store.acquire_slots("k", 1, [("a", "r-a")], owner="alive", ttl=TTL)
    await store.acquire_slots("j", 1, [("x", "r-x")], owner="dead", ttl=TTL)
    clock.advance(TTL - 1)
    await store.renew_leases("alive", ttl=TTL)
    clock.advance(2)
    assert await store.acquire_slots("k", 1, [("b", "r-b")], owner="me", ttl=TTL) == []
    assert await store.acquire_slots("j", 1, [("y", "r-y")], owner="me", ttl=TTL) == ["y"]


# -- schedules -------------------------------------------------------------------------------

async def test_schedules_keep_their_last_fire_and_advance_by_compare_and_set(
        store: StateStore) -> None:
    from orchestrator.store.records import ScheduleEntry

    entry = await store.sync_schedule(ScheduleEntry("nightly", "nightly", "/p.yaml", "@daily",
                                                    "UTC"))
    assert entry.last_fire is None
    assert await store.advance_schedule("nightly", None, 100.0)
    assert not await store.advance_schedule("nightly", None, 200.0)  # someone moved it
    assert await store.advance_schedule("nightly", 100.0, 200.0)
    changed = await store.sync_schedule(ScheduleEntry("nightly", "nightly", "/q.yaml",
                                                      "0 3 * * *", "Europe/Berlin"))
    assert (changed.last_fire, changed.cron, changed.pipeline_path) == (200.0, "0 3 * * *",
                                                                        "/q.yaml")
    assert [s.id for s in await store.list_schedules()] == ["nightly"]


async def test_a_paused_schedule_keeps_its_pause_and_resumes_from_now(
        store: StateStore, clock: FakeClock) -> None:
    """Paused, it stays so across a scheduler's sync; resumed, its last fire is now (the
    fire times it skipped are let go); an unknown schedule is not found."""
    from orchestrator.errors import RunNotFound
    from orchestrator.store.records import ScheduleEntry

    await store.sync_schedule(ScheduleEntry("nightly", "nightly", "/p.yaml", "@daily", "UTC"))
    await store.advance_schedule("nightly", None, 100.0)
    paused = await store.pause_schedule("nightly", True)
    assert paused.paused_at == clock.now and paused.last_fire == 100.0
    clock.advance(60)
    assert (await store.pause_schedule("nightly", True)).paused_at == paused.paused_at
    synced = await store.sync_schedule(ScheduleEntry("nightly", "nightly", "/p.yaml",
                                                     "@hourly", "UTC"))
    assert synced.paused_at == paused.paused_at and synced.cron == "@hourly"
    resumed = await store.pause_schedule("nightly", False)
    assert (resumed.paused_at, resumed.last_fire) == (None, clock.now)
    with pytest.raises(RunNotFound, match="no schedule 'weekly'"):
        await store.pause_schedule("weekly", True)


async def test_runs_filter_by_schedule_and_status(store: StateStore, clock: FakeClock) -> None:
    from dataclasses import replace

    await store.create_run(replace(new_run("s-1"), schedule_id="nightly", scheduled_for=1.0,
                                   status=RunStatus.QUEUED))
    clock.advance(1)
    await store.create_run(replace(new_run("s-2"), schedule_id="nightly", scheduled_for=2.0))
    await store.create_run(new_run("r-1"))
    found = await store.list_runs(schedule_id="nightly", statuses=[RunStatus.QUEUED])
    assert [(r.id, r.scheduled_for) for r in found] == [("s-1", 1.0)]
    assert [r.id for r in await store.list_runs(schedule_id="nightly")] == ["s-2", "s-1"]


async def test_runs_filter_by_pipeline_and_creation_time(store: StateStore,
                                                         clock: FakeClock) -> None:
    from dataclasses import replace

    start = clock.now
    for i, name in enumerate(["a", "b", "a", "a"]):
        await store.create_run(replace(new_run(f"r-{i}"), pipeline_name=name))
        clock.advance(10)
    assert [r.id for r in await store.list_runs(pipeline="a")] == ["r-3", "r-2", "r-0"]
    assert [r.id for r in await store.list_runs(pipeline="a", since=start + 10,
                                                until=start + 30)] == ["r-2"]
    assert [r.id for r in await store.list_runs(since=start + 25)] == ["r-3"]
    assert await store.list_runs(statuses=[]) == []
    assert await store.list_runs(pipeline="nope") == []


async def test_the_claim_query_agrees_with_the_policy(store: StateStore,
                                                       clock: FakeClock) -> None:
    """Over runs in every state a claim meets (each status, leased or not, live or expired or
    dead, cancel requested before or after it ended, long ago or just now), a store claims
    exactly the runs `policy.claimable` names: the rule each backend's SQL implements."""
    from orchestrator.store.policy import claimable
    from orchestrator.store.records import CANCEL_RETRY_AFTER

    n = 0
    for age in ("long ago", "just now"):
        for status in (RunStatus.QUEUED, RunStatus.PENDING, RunStatus.RUNNING,
                       RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.SUCCEEDED,
                       RunStatus.CANCELLED):
            for holder in (None, "live", "expired", "dead"):
                for cancel in (None, "before-end", "after-end"):
                    n += 1
                    run_id = f"r-{n:03d}"
                    await store.create_run(dataclasses.replace(
                        new_run(run_id), status=RunStatus.QUEUED
                        if status is RunStatus.QUEUED else RunStatus.PENDING))
                    if cancel == "before-end":
                        await store.request_cancel([run_id])
                        clock.advance(1)
                    if status not in (RunStatus.QUEUED, RunStatus.PENDING):
                        lease = await store.acquire_lease(run_id, "setup", ttl=TTL,
                                                          max_recoveries=99)
                        await store.commit(lease, run=RunUpdate(status, release=True))
                    if cancel == "after-end":
                        await store.request_cancel([run_id])
                    if holder is not None:
                        owner = {"live": "live", "expired": "gone", "dead": "host:9:dd"}[holder]
                        ttl = 1.0 if holder == "expired" else 10 * CANCEL_RETRY_AFTER
                        await store.acquire_lease(run_id, owner, ttl=ttl, max_recoveries=99,
                                                  force=True)
        if age == "long ago":
            clock.advance(2 * CANCEL_RETRY_AFTER)
    clock.advance(2.0)  # the 1 s leases have expired
    before = {run.id: run for run in await store.list_runs(limit=None)}
    expected = {run_id for run_id, run in before.items()
                if claimable(run, now=clock.now, dead_owners=["host:9:dd"])}
    claimed = await store.claim_runs("w", limit=1000, ttl=TTL, max_recoveries=99,
                                     dead_owners=["host:9:dd"])
    assert {lease.run_id for lease in claimed} == expected
    assert 10 < len(expected) < len(before) - 10  # both kinds are well represented


async def test_a_read_only_store_reads_and_refuses_every_write(store: StateStore,
                                                              store_url: str) -> None:
    """What the web view opens without actions: it sees what the writer commits, and a write
    through it is one clear error, nothing written."""
    from orchestrator.errors import StateStoreInvalid
    from orchestrator.store.opening import open_store

    await store.create_run(new_run("r-1"))
    async with open_store(store_url, read_only=True) as reader:
        assert (await reader.get_run("r-1")).id == "r-1"
        with pytest.raises(StateStoreInvalid, match="opened to be read only"):
            await reader.create_run(new_run("r-2"))
        with pytest.raises(StateStoreInvalid, match="opened to be read only"):
            await reader.request_cancel(["r-1"])
        await store.create_run(new_run("r-3"))  # the writer is not held up by the reader
        assert {r.id for r in await reader.list_runs()} == {"r-1", "r-3"}
