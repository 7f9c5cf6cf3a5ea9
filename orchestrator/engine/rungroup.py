"""Runs executing side by side in one process, stopped a few at a time.

Why not a plain task group: anyio delivers a cancellation by walking every unfinished task
and scope under the cancelled one, again on every turn of the event loop, until they have all
ended. A stopped run writes its state before it ends (shielded), and on PostgreSQL those
writes take turns for the process's few connections, so thousands of runs stopping at once
cost a walk of thousands of scopes per turn for thousands of turns: measured, a worker with
1,000 sleeping runs took 10.5 s to stop, with 2,500 over a minute (SQLite, whose writes do
not wait, 2.4 s). Here each run executes in a shielded scope of its own, which the outer
cancellation does not reach; `stop` cancels them `wave` at a time, so each walk is short:
the same 2,500 runs stop in 6.3 s instead of 22.5 s (a worker process on PostgreSQL). The wave
is 256: with 8, four SQLite workers stopping 10,000 runs at once took 21 s (their writes
contend for the file's lock; 64: 6.3 s, 256: 5.2 s), and one PostgreSQL worker with 2,500 runs
5.4 s (256: 4.6 s); measured with `python -m bench.fleet`'s stop on 2026-12-06.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

__all__ = ["RunGroup"]


class RunGroup:
    """Starts runs in `tg`; `stop` ends them in waves (call it shielded, on the way out:
    the outer cancellation does not reach the runs, so without it they would go on)."""

    def __init__(self, tg: TaskGroup, *, wave: int = 256) -> None:
        self._tg = tg
        self._wave = wave
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._superseded: set[anyio.CancelScope] = set()
        """Executions of a key started again, still ending (see `start`)."""
        self._ended = anyio.Event()

    def __len__(self) -> int:
        return len(self._scopes)

    def start(self, key: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Execute `fn` (a run, named by `key`) until it ends or `stop` reaches it.

        A key still executing is superseded: the run came back to this process (its lease
        ran out while the process was cut off from the database, and it claimed the run
        again) while its old execution has not noticed yet. The old one is cancelled (its
        writes are refused by then) and the new one starts once it has ended.
        """
        previous = self._scopes.get(key)
        scope = anyio.CancelScope(shield=True)
        self._scopes[key] = scope

        async def execute() -> None:
            try:
                if previous is not None:
                    previous.cancel()
                    while previous in self._superseded:
                        await self._an_end()
                with scope:
                    await fn()
            finally:
                if self._scopes.get(key) is scope:
                    del self._scopes[key]
                else:  # superseded in turn: the newer one waits for this one
                    self._superseded.discard(scope)
                self._ended.set()

        if previous is not None:
            self._superseded.add(previous)
        self._tg.start_soon(execute, name=key)

    async def wait(self) -> None:
        """Until every run started has ended (cancelled meanwhile: `stop` them)."""
        while self._scopes or self._superseded:
            await self._an_end()

    async def stop(self) -> None:
        """Cancel every run, `wave` at a time, each wave ended before the next."""
        while self._scopes:
            wave = list(self._scopes.items())[: self._wave]
            for _, scope in wave:
                scope.cancel()
            while any(key in self._scopes for key, _ in wave):
                await self._an_end()

    async def _an_end(self) -> None:
        """Until a run ends. Several tasks may wait at once: the first to wake makes the
        next event, the others keep it (each making its own, one would wait on an event no
        one sets)."""
        ended = self._ended
        await ended.wait()
        if self._ended is ended:
            self._ended = anyio.Event()
