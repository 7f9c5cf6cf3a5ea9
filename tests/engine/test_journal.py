"""The run journal: its commits reach the store in the order they were made."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from orchestrator.engine.journal import DeferredFlusher, RunJournal
from orchestrator.errors import LeaseLost, StoreUnavailable
from orchestrator.store.base import StateStore
from orchestrator.store.records import NewEvent, NewRun, StepRecord, StepStatus


class SlowFirstCommit:
    """A store whose first commit is held until `release` is set (a slow connection, a
    thread hop): whatever is committed after it must not be overtaken by it."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.release = anyio.Event()
        self.held = anyio.Event()
        self.later_entered = False
        self.later_done = anyio.Event()
        self._first = True

    async def commit(self, *args: Any, **kwargs: Any) -> None:
        if self._first:
            self._first = False
            self.held.set()
            await self.release.wait()
            await self._store.commit(*args, **kwargs)
            return
        self.later_entered = True
        await self._store.commit(*args, **kwargs)
        self.later_done.set()


async def test_a_deferred_write_never_lands_after_a_later_one(store: StateStore) -> None:
    """An attempt's start, deferred and being flushed, and its success committed meanwhile:
    the step's row ends as succeeded (a flush overtaken by the next commit had left it
    `running`, for a run that succeeded)."""
    await store.create_run(NewRun("r-1", "p", "/p.yaml", "name: p\n", {}))
    lease = await store.acquire_lease("r-1", "me", ttl=60, max_recoveries=3)
    slow = SlowFirstCommit(store)
    journal = RunJournal(slow, lease, {"a": StepRecord("a")},  # type: ignore[arg-type]
                         flusher=DeferredFlusher(), on_lease_lost=lambda: None)
    await journal.save("a", NewEvent("step_started", "a", 1), defer=True,
                       status=StepStatus.RUNNING, attempt=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.flush)  # the flusher's: the start, held in the store
        await slow.held.wait()
        tg.start_soon(lambda: journal.save("a", NewEvent("step_succeeded", "a", 1),
                                           status=StepStatus.SUCCEEDED, outputs={"x": 1}))
        # The later commit waits for the held one, or (the race) overtakes it: let it finish.
        await anyio.wait_all_tasks_blocked()
        if slow.later_entered:
            await slow.later_done.wait()
        slow.release.set()
    step = (await store.get_steps("r-1"))["a"]
    assert (step.status, step.outputs) == (StepStatus.SUCCEEDED, {"x": 1})
    assert [e.kind for e in await store.get_events("r-1")][-2:] == ["step_started",
                                                                  "step_succeeded"]


async def test_securing_a_lease_renews_it_or_says_it_is_gone(store: StateStore) -> None:
    """Before a create that must happen once: the lease is renewed from now (by the store's
    clock), and one another executor took over is LeaseLost, the run told to stop."""
    await store.create_run(NewRun("r-1", "p", "/p.yaml", "name: p\n", {}))
    lease = await store.acquire_lease("r-1", "me", ttl=5, max_recoveries=3)
    lost: list[bool] = []
    journal = RunJournal(store, lease, {"a": StepRecord("a")}, flusher=DeferredFlusher(),
                         on_lease_lost=lambda: lost.append(True))
    await journal.secure_lease(60)
    assert (await store.get_run("r-1")).lease_expires_at == store.clock() + 60
    await store.acquire_lease("r-1", "another", ttl=60, max_recoveries=3, dead_owners=["me"])
    with pytest.raises(LeaseLost):
        await journal.secure_lease(60)
    assert lost == [True]


class OutageThenStore:
    """A store unavailable for its first `outages` commits (a database restarting)."""

    def __init__(self, store: StateStore, outages: int) -> None:
        self._store = store
        self.outages = outages

    async def commit(self, *args: Any, **kwargs: Any) -> None:
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("state database x: restarting; nothing was written")
        await self._store.commit(*args, **kwargs)


async def test_a_commit_waits_through_an_outage_of_the_store(store: StateStore) -> None:
    await store.create_run(NewRun("r-1", "p", "/p.yaml", "name: p\n", {}))
    lease = await store.acquire_lease("r-1", "me", ttl=60, max_recoveries=3)
    flaky = OutageThenStore(store, outages=3)
    journal = RunJournal(flaky, lease, {"a": StepRecord("a")},  # type: ignore[arg-type]
                         flusher=DeferredFlusher(), on_lease_lost=lambda: None)
    await journal.save("a", NewEvent("step_succeeded", "a", 1), status=StepStatus.SUCCEEDED,
                       outputs={"x": 1})
    assert flaky.outages == 0
    assert (await store.get_steps("r-1"))["a"].outputs == {"x": 1}
