"""Announcements between the processes sharing a PostgreSQL store: NOTIFY (sent at commit) and
one LISTEN connection per process, waking whoever watches a topic (a run queued, a slot given
back, a cancel requested), so an idle fleet starts a queued run at once. Polling stays as the
fallback: a lost connection only makes news late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from orchestrator.errors import StateStoreInvalid, StoreUnavailable
from orchestrator.log import get_logger
from orchestrator.store.postgres.connection import Cursor

__all__ = ["RECONNECT_FIRST", "RECONNECT_MOST", "Announcements"]

RECONNECT_FIRST = 0.2
RECONNECT_MOST = 5.0
"""Seconds between tries to listen again: the first, and the most (doubling between)."""


class Announcements:
    """The store's channel: what it announces, and who is woken by what others announce."""

    def __init__(self, schema: str | None,
                 connect: Callable[[], Awaitable[psycopg.AsyncConnection[DictRow]]]) -> None:
        self.channel = "orchestrator" if schema is None else f"orchestrator.{schema}"
        self._connect = connect
        self._wakes: dict[str, list[Callable[[], None]]] = {}
        """What to call when a topic is announced, by topic (see `watch`)."""
        self._listener: anyio.Event | None = None
        """Set when the watcher running the LISTEN connection leaves; None: nobody runs it."""
        self._log = get_logger()

    async def notify(self, cur: Cursor, topic: str) -> None:
        """Announce `topic` when the transaction commits (NOTIFY is transactional)."""
        await cur.execute("SELECT pg_notify(%s, %s)", (self.channel, topic))

    async def watch(self, topic: str, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process announces `topic`, until cancelled.

        Every watcher of the process shares one LISTEN connection: the first to come runs it
        and calls the others' wakes too; when it leaves, one that stays takes over. Each
        watcher is also woken once after every (re)connection: what was announced while
        nobody listened is not lost, only late.
        """
        self._wakes.setdefault(topic, []).append(wake)
        try:
            while True:
                if self._listener is None:
                    self._listener = anyio.Event()
                    try:
                        await self._listen()
                    finally:
                        self._listener.set()  # gone: a watcher that stays takes over
                        self._listener = None
                else:
                    await self._listener.wait()
        finally:
            self._wakes[topic].remove(wake)

    async def _listen(self) -> None:
        """LISTEN on the store's channel and wake the watchers of each topic announced. The
        server gone (restarted, or out of reach), it tries again after RECONNECT_FIRST
        seconds, twice as long each time up to RECONNECT_MOST (the callers' polling goes on
        meanwhile)."""
        pause = RECONNECT_FIRST
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(
                        sql.Identifier(self.channel)))
                    if pause > RECONNECT_FIRST:
                        self._log.info("listening for state changes again")
                    pause = RECONNECT_FIRST
                    for wakes in self._wakes.values():
                        for wake in list(wakes):
                            wake()
                    while True:
                        # Woken by the socket alone: psycopg's own wait also wakes ten
                        # times a second (its interrupt check), every second of every
                        # idle worker's life.
                        await anyio.wait_readable(conn.fileno())
                        async for note in conn.notifies(timeout=0):
                            for wake in list(self._wakes.get(note.payload, ())):
                                wake()
                finally:  # cancelled (the usual end): still closed, not left to the GC
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            except (psycopg.Error, StateStoreInvalid, StoreUnavailable) as exc:
                if pause == RECONNECT_FIRST:
                    self._log.warning("not listening for state changes; polling until the "
                                      "database answers again", error=str(exc))
            await anyio.sleep(pause)
            pause = min(RECONNECT_MOST, pause * 2)
