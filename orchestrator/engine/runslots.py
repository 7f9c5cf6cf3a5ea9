"""The concurrency slots one run's executor holds, and the events that say so.

Three kinds: the run's own for its whole length (a batch's `max_parallel`, a schedule's queue,
the pipeline's `concurrency:`), a step's `concurrency:` for its span (the step, or the step
through its `until` step), and the named locks of `ctx.exclusive`. Slots are granted by the
store through the process's `SlotPool`. A slot's `slot_acquired` and `slot_released` events are
committed inside the time it is held, so the event log never shows more holders than the
limit: a release is written with the commit that ends the span, and given back after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import suppress

import anyio

from orchestrator.definition.expressions import ExpressionError
from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.journal import RunJournal
from orchestrator.engine.resolve import Resolution
from orchestrator.engine.slots import SlotPool
from orchestrator.errors import PermanentError
from orchestrator.log import Logger
from orchestrator.store.records import NewEvent, RunStatus, RunUpdate

__all__ = ["RunSlots"]


class RunSlots:
    """Which slots a run takes when, holds now, and gives back after which step."""

    def __init__(self, pool: SlotPool | None, run_id: str, pipeline: Pipeline, *,
                 resolution: Resolution, journal: RunJournal, log: Logger) -> None:
        self.pool = pool
        """None: this process grants no slots (a bare orchestrator in a test)."""
        self._run_id = run_id
        self._pipeline = pipeline
        self._resolution = resolution
        self._journal = journal
        self._log = log
        self._held: dict[str, tuple[str, str]] = {}
        """Slots held: by owner ('' for the run's own, else the step that declares it) the
        (key, holder)."""
        self._spans_of = pipeline.slot_owners
        """For each step, the steps whose slot it runs under (the spans it belongs to)."""
        self._release_after = pipeline.slots_released_after

    def pipeline_slot(self) -> list[tuple[str, int]]:
        """The pipeline's own `concurrency:` as (key, limit); raises ExpressionError."""
        spec = self._pipeline.concurrency
        return [] if spec is None else [(self._resolution.key(spec.key), spec.limit)]

    async def take_run_slot(self, key: str, limit: int) -> None:
        """Hold one of `key`'s slots for the whole run; while waiting, the run shows it."""
        if self.pool is None:
            return
        journal = self._journal

        async def waiting() -> None:
            journal.note(NewEvent("slot_waiting", data={"key": key, "limit": limit}))
            await journal.flush(run=RunUpdate(RunStatus.RUNNING, waiting_for=key))
            self._log.info("waiting for a concurrency slot", key=key, limit=limit)

        waited = await self.pool.acquire(key, limit, holder=self._run_id,
                                         run_id=self._run_id, on_wait=waiting)
        self._held[""] = (key, self._run_id)
        journal.note(NewEvent("slot_acquired", data={"key": key}))
        if waited:
            await journal.flush(run=RunUpdate(RunStatus.RUNNING))
        else:
            journal.defer()

    async def take_step_slots(self, step_id: str) -> None:
        """Before `step_id` starts: the slots of every span it belongs to, if not held yet.
        Raises PermanentError for a key that cannot be evaluated."""
        if self.pool is None:
            return
        for owner in self._spans_of.get(step_id, ()):
            if owner in self._held:
                continue
            spec = self._pipeline.steps[owner].concurrency
            assert spec is not None
            try:
                key = self._resolution.key(spec.key)
            except ExpressionError as exc:
                msg = f"steps.{owner}.concurrency.key: {exc}"
                raise PermanentError(msg) from None
            holder = f"{self._run_id}:{owner}"

            async def waiting(key: str = key, limit: int = spec.limit) -> None:
                await self._journal.save(step_id, NewEvent("slot_waiting", step_id, data={
                    "key": key, "limit": limit}), waiting_for=key)
                self._log.info("waiting for a concurrency slot", step=step_id, key=key,
                               limit=limit)

            await self.pool.acquire(key, spec.limit, holder=holder, run_id=self._run_id,
                                    on_wait=waiting)
            self._held[owner] = (key, holder)
            await self._journal.save(step_id, NewEvent("slot_acquired", step_id,
                                                       data={"key": key}),
                                     defer=True, waiting_for=None)

    def note_released(self, step_id: str) -> list[str]:
        """The slots to give back once `step_id` succeeded; their events go with its commit
        (give them back with `release` after it)."""
        owners = [o for o in self._release_after.get(step_id, ()) if o in self._held]
        self._journal.note(*(self._released(owner) for owner in owners))
        return owners

    def note_all_released(self) -> None:
        """The run ends: every slot still held is given back with its last commit."""
        self._journal.note(*(self._released(owner) for owner in self._held))

    def _released(self, owner: str) -> NewEvent:
        return NewEvent("slot_released", owner or None, data={"key": self._held[owner][0]})

    async def release(self, owners: list[str]) -> None:
        assert self.pool is not None
        for owner in owners:
            key, holder = self._held.pop(owner)
            await self.pool.release(key, holder)

    async def release_all(self) -> None:
        if self.pool is not None and self._held:
            with suppress(Exception):  # else they expire with this process's heartbeat
                await self.release(list(self._held))

    @contextlib.asynccontextmanager
    async def exclusive(self, step_id: str, name: str) -> AsyncIterator[None]:
        """A lock held through the store: a concurrency slot of `lock:<name>` with limit 1,
        renewed by the heartbeat, so a crashed holder lets the next one in after lease_ttl."""
        assert self.pool is not None
        key, holder = f"lock:{name}", f"{self._run_id}:{step_id}"
        await self.pool.acquire(key, 1, holder=holder, run_id=self._run_id)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True), suppress(Exception):
                await self.pool.release(key, holder)
