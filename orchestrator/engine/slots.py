"""Concurrency slots for one process: `{key, limit}` enforced through the state store.

The store grants slots (`acquire_slots`), so a limit holds across every process sharing the
database, and a slot is a lease renewed by the process's heartbeat, so a crashed process gives
its slots back by itself. This module only makes *waiting* for a slot cheap: a waiting step
costs an `anyio.Event`, not a query. Waiters queue per key, first come first served within the
process; one grant loop asks the store for all of a key's waiters in one statement, at once
when this process gives a slot of that key back or the store announces one given back
elsewhere (PostgreSQL's NOTIFY), and every `poll_interval` seconds otherwise. With no one
waiting, the loop sleeps on an event.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
from anyio.abc import TaskStatus

from orchestrator.log import get_logger
from orchestrator.store.base import SLOTS, StateStore

__all__ = ["SlotPool"]


@dataclasses.dataclass
class _Waiter:
    holder: str
    run_id: str
    limit: int
    granted: anyio.Event = dataclasses.field(default_factory=anyio.Event)


class SlotPool:
    """Grants this process's runs their concurrency slots (see the module docstring)."""

    def __init__(self, store: StateStore, owner: str, *, ttl: float,
                 poll_interval: float = 1.0) -> None:
        self._store = store
        self._owner = owner
        self._ttl = ttl
        self._poll_interval = poll_interval
        self._waiting: dict[str, list[_Waiter]] = {}
        self._wake = anyio.Event()
        self._log = get_logger()

    async def acquire(self, key: str, limit: int, *, holder: str, run_id: str,
                      on_wait: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Hold a slot of `key` for `holder`, waiting as long as it takes (cancellable).

        `on_wait` runs once if the slot is not free at once (to record that the run waits).
        Returns True if it had to wait.
        """
        if key not in self._waiting:  # nobody of ours queues for it: try at once
            granted = await self._store.acquire_slots(key, limit, [(holder, run_id)],
                                                      owner=self._owner, ttl=self._ttl)
            if granted:
                return False
        waiter = _Waiter(holder, run_id, limit)
        self._waiting.setdefault(key, []).append(waiter)
        self._wake.set()
        try:
            if on_wait is not None:
                await on_wait()
            await waiter.granted.wait()
        except BaseException:
            queue = self._waiting.get(key, [])
            if waiter in queue:
                queue.remove(waiter)
                if not queue:
                    del self._waiting[key]
            if waiter.granted.is_set():  # granted just as we were cancelled: give it back
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await self.release(key, holder)
            raise
        return True

    async def release(self, key: str, holder: str) -> None:
        """Give a slot back; the next waiter of this process for `key` is served at once."""
        await self._store.release_slot(key, holder, owner=self._owner)
        if key in self._waiting:
            self._wake.set()

    async def grant_forever(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                            ) -> None:
        """The grant loop; runs in the orchestrator's task group."""
        async with anyio.create_task_group() as tg:
            task_status.started()
            watching: anyio.CancelScope | None = None
            while True:
                # A store that announces freed slots (PostgreSQL) serves waiters at once; it
                # is listened to only while someone waits (a connection of its own).
                if self._waiting and watching is None:
                    watching = await tg.start(self._watch_slots)
                elif not self._waiting and watching is not None:
                    watching.cancel()
                    watching = None
                timeout = self._poll_interval if self._waiting else math.inf
                with anyio.move_on_after(timeout):
                    await self._wake.wait()
                self._wake = anyio.Event()
                for key in list(self._waiting):
                    try:
                        await self._grant(key)
                    except Exception as exc:  # noqa: BLE001  (waiters stay queued; retried)
                        self._log.warning("could not grant concurrency slots", key=key,
                                          error=f"{type(exc).__name__}: {exc}")

    async def _watch_slots(self, *, task_status: TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await self._store.watch(SLOTS, self._wake_up)

    def _wake_up(self) -> None:
        self._wake.set()  # the event of the loop's current wait (it is replaced after each)

    async def _grant(self, key: str) -> None:
        queue = self._waiting.get(key, [])
        for limit in dict.fromkeys(w.limit for w in queue):
            asking = [w for w in queue if w.limit == limit]
            granted = set(await self._store.acquire_slots(
                key, limit, [(w.holder, w.run_id) for w in asking], owner=self._owner,
                ttl=self._ttl))
            for waiter in asking:
                if waiter.holder not in granted:
                    continue
                if waiter in queue:
                    queue.remove(waiter)
                    waiter.granted.set()
                else:  # it stopped waiting while the store answered
                    await self._store.release_slot(key, waiter.holder, owner=self._owner)
        if not queue and self._waiting.get(key) is queue:
            del self._waiting[key]
