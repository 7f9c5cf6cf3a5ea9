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
        self._ended = anyio.Event()

    def __len__(self) -> int:
        return len(self._scopes)

    def start(self, key: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Execute `fn` (a run, named by `key`) until it ends or `stop` reaches it."""
        scope = anyio.CancelScope(shield=True)
        self._scopes[key] = scope

        async def execute() -> None:
            try:
                with scope:
                    await fn()
            finally:
                del self._scopes[key]
                self._ended.set()

        self._tg.start_soon(execute, name=key)

    async def wait(self) -> None:
        """Until every run started has ended (cancelled meanwhile: `stop` them)."""
        while self._scopes:
            await self._ended.wait()
            self._ended = anyio.Event()

    async def stop(self) -> None:
        """Cancel every run, `wave` at a time, each wave ended before the next."""
        while self._scopes:
            wave = list(self._scopes.items())[: self._wave]
            for _, scope in wave:
                scope.cancel()
            while any(key in self._scopes for key, _ in wave):
                await self._ended.wait()
                self._ended = anyio.Event()
