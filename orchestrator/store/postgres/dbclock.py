"""The time a PostgreSQL fleet decides leases by: the database server's, never a worker's.

Workers on several machines compare lease expiries one wrote with the time another reads. If
each used its own wall clock, a worker minutes ahead would take over runs whose leases are
live, and one behind would hold runs past their expiry. So a store reads the server's clock
(`clock_timestamp()`) when it opens and again every `RECALIBRATE_EVERY` seconds, and counts the
time between readings on this process's monotonic clock: its own wall clock, ahead, behind or
stepped by NTP, never enters a lease. A reading costs one query a minute; the error it leaves is
half the round trip of that query (well under a millisecond on a LAN), and the monotonic clock
drifts a few milliseconds between readings at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["RECALIBRATE_EVERY", "DatabaseClock"]

RECALIBRATE_EVERY = 60.0
"""Seconds between two readings of the server's clock."""

NOW = "SELECT extract(epoch FROM clock_timestamp())::float8 AS now"


class DatabaseClock:
    """A `Clock` (seconds since the epoch) that follows the database server's clock once read;
    the local wall clock only before the first reading."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._offset: float | None = None
        self._read_at = 0.0

    def __call__(self) -> float:
        if self._offset is None:
            return self._wall()
        return self._monotonic() + self._offset

    @property
    def due(self) -> bool:
        """Whether the server's clock should be read again."""
        return self._offset is None or self._monotonic() - self._read_at >= RECALIBRATE_EVERY

    async def read(self, conn: Any) -> None:
        """Read the server's clock on `conn` (a psycopg async connection with dict rows)."""
        before = self._monotonic()
        row = await (await conn.execute(NOW)).fetchone()
        after = self._monotonic()
        self._offset = float(row["now"]) - (before + after) / 2
        self._read_at = after

    @property
    def skew(self) -> float | None:
        """How far this machine's wall clock is from the server's (seconds; positive when
        ahead), as of now; None before the first reading."""
        return None if self._offset is None else self._wall() - self()
