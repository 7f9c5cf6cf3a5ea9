"""The write-behind journal of one run's executor: every write it makes, masked and fenced.

A step's record changes and the events that explain them are queued here and committed
together in one transaction fenced on the executor's lease, secrets masked before they reach
the store. Some writes may wait (`defer`): that an attempt started, the lines a step logs,
the metric points of the job it follows. Nothing depends on them, so they ride along with
the step's next commit, or are flushed within `FLUSH_DELAY` for a step that takes longer
(which is when `show` and `logs` need them); for short steps this halves the commits
(bench/engine_overhead.py). One `DeferredFlusher` per process does the flushing for every
run it executes: a task, a task group, a cancel scope and an event per run made a sleeping
run cost more memory than everything else it holds (bench/scale.py).

A commit the store cannot take now (`StoreUnavailable`: a database restarting, or out of
reach) is tried again, after 0.1 s and twice as long each time up to 5 s, for as long as
`STORE_OUTAGE_RIDE`: the run waits for its state to be written instead of failing for it. An
outage longer than the lease ends the run here anyway (the heartbeat finds the lease gone and
stops it), and the next executor takes it over once the database is back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from orchestrator.errors import LeaseLost, StoreUnavailable
from orchestrator.log import get_logger
from orchestrator.redact import REDACTOR
from orchestrator.store.base import StateStore
from orchestrator.store.records import (
    ErrorInfo,
    Lease,
    MetricPoint,
    NewEvent,
    RunUpdate,
    StepRecord,
)

__all__ = ["FLUSH_DELAY", "STORE_OUTAGE_RIDE", "DeferredFlusher", "RunJournal"]

T = TypeVar("T")

STORE_OUTAGE_RIDE = 300.0
"""Seconds a commit waits for an unavailable store before the error is the run's."""

FLUSH_DELAY = 0.05
"""Seconds within which a deferred write (an attempt's start) reaches the store."""


class DeferredFlusher:
    """Commits, within FLUSH_DELAY, the deferred writes of every journal that asked (`soon`),
    in one task for the whole process. A flush the store refuses is kept by its journal for
    the run's next commit; a lost lease is told to the run."""

    def __init__(self) -> None:
        self._due: dict[RunJournal, Callable[[], None]] = {}
        self._wake = anyio.Event()
        self._log = get_logger(component="journal")

    def soon(self, journal: RunJournal, on_lease_lost: Callable[[], None]) -> None:
        if journal not in self._due:
            self._due[journal] = on_lease_lost
            self._wake.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Forever: wait for a journal's request, give later commits FLUSH_DELAY to take its
        writes along, then flush every journal that asked meanwhile."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(FLUSH_DELAY)
            due, self._due = self._due, {}
            for journal, on_lease_lost in due.items():
                try:
                    await journal.flush()
                except LeaseLost:
                    on_lease_lost()
                except Exception as exc:  # noqa: BLE001  (kept for the run's next commit)
                    self._log.warning("deferred writes not saved yet; the next commit takes "
                                      "them", error=f"{type(exc).__name__}: {exc}")


class RunJournal:
    """The step records of one run as this executor knows them, and what is still unsaved."""

    def __init__(self, store: StateStore, lease: Lease, records: dict[str, StepRecord], *,
                 flusher: DeferredFlusher, on_lease_lost: Callable[[], None]) -> None:
        self._store = store
        self._lease = lease
        self.records = records
        """Every step's record as last saved (secrets in the clear: this process's own)."""
        self._steps: dict[str, StepRecord] = {}
        self._events: list[NewEvent] = []
        self._metrics: dict[tuple[str, str, int], MetricPoint] = {}
        self._flusher = flusher
        self._on_lease_lost = on_lease_lost
        self._committing: anyio.Lock | None = None
        """One commit in flight at a time: a flush (the process's flusher) overtaken by a later
        commit (the step's success) would leave the older record in the store. Held only
        while commits are in flight (a lock is 0.8 KiB of the 15 a waiting run may take)."""

    def note(self, *events: NewEvent) -> None:
        """Queue `events` for the next commit, secrets masked."""
        self._events.extend(dataclasses.replace(e, data=REDACTOR.value(e.data))
                            if REDACTOR.active else e for e in events)

    def note_metrics(self, points: list[MetricPoint]) -> None:
        """Queue metric points for the next commit; a point queued twice is merged."""
        for point in points:
            known = self._metrics.get(point.key)
            self._metrics[point.key] = point if known is None else known.merged(point)

    def defer(self) -> None:
        """Ask for the queued writes to be committed within FLUSH_DELAY, not now."""
        self._flusher.soon(self, self._on_lease_lost)

    async def save(self, step_id: str, event: NewEvent, *, defer: bool = False,
                   **changes: Any) -> StepRecord:
        """Update the step's record and commit it with `event` (secrets masked at rest).

        With `defer`, return at once and let the write ride along with the next commit; only
        for writes nothing depends on.
        """
        record = dataclasses.replace(self.records[step_id], **changes)
        self.records[step_id] = record
        stored = record
        if REDACTOR.active:
            stored = dataclasses.replace(
                record,
                outputs=REDACTOR.value(record.outputs),
                checkpoint=REDACTOR.value(record.checkpoint),
                error=record.error and ErrorInfo(record.error.type,
                                                 REDACTOR.text(record.error.message)),
            )
        self._steps[step_id] = stored
        self.note(event)
        if defer:
            self.defer()
        else:
            await self.flush()
        return record

    async def flush(self, run: RunUpdate | None = None) -> None:
        """Commit every unsaved write (and `run`) in one fenced transaction, after any commit
        still in flight."""
        lock = self._committing = self._committing or anyio.Lock()
        try:
            async with lock:
                await self._commit(run)
        finally:
            if lock is self._committing and not lock.statistics().tasks_waiting \
                    and not lock.locked():
                self._committing = None  # the last commit in flight: the next makes one

    async def _commit(self, run: RunUpdate | None) -> None:
        steps, events, metrics = list(self._steps.values()), self._events, self._metrics
        self._steps, self._events, self._metrics = {}, [], {}
        if run is None and not steps and not events and not metrics:
            return
        try:
            await self._commit_through_outages(run, steps, events, list(metrics.values()))
        except BaseException:
            # Not written (cancelled before the database took it, or refused): keep it for the
            # next commit, e.g. the run's last one, behind any newer write of the same step.
            for step in steps:
                self._steps.setdefault(step.step_id, step)
            self._events[:0] = events
            for key, point in metrics.items():
                newer = self._metrics.get(key)
                self._metrics[key] = point if newer is None else point.merged(newer)
            raise

    async def secure_lease(self, ttl: float) -> None:
        """Renew the lease now, by the database's clock, for `ttl` from now; LeaseLost if it
        was taken over (or ran out and was released), StoreUnavailable past
        STORE_OUTAGE_RIDE. Until `ttl` has passed no other executor can take the run."""
        held = await self._through_outages(
            lambda: self._store.renew_leases(self._lease.owner, ttl=ttl))
        if self._lease.run_id not in held:
            self._on_lease_lost()
            raise LeaseLost(f"run {self._lease.run_id}: this process's lease ended; another "
                            "executor may have the run")

    async def _commit_through_outages(self, run: RunUpdate | None, steps: list[StepRecord],
                                      events: list[NewEvent], metrics: list[MetricPoint]
                                      ) -> None:
        await self._through_outages(lambda: self._store.commit(
            self._lease, run=run, steps=steps, events=events, metrics=metrics))

    async def _through_outages(self, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()`, tried again while the store is unavailable, after 0.1 s and twice
        as long each time up to 5 s, for STORE_OUTAGE_RIDE at most."""
        pause, deadline = 0.1, anyio.current_time() + STORE_OUTAGE_RIDE
        while True:
            try:
                return await operation()
            except StoreUnavailable as exc:
                if anyio.current_time() + pause > deadline:
                    raise
                if pause == 0.1:
                    get_logger().warning("the state store is unavailable; this run's writes "
                                         "wait for it", run_id=self._lease.run_id,
                                         error=str(exc))
            await anyio.sleep(pause)
            pause = min(5.0, pause * 2)
