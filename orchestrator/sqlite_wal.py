"""Switching a SQLite file to WAL when other processes may be opening it at the same moment.

Both the state store and the local API's data file start in rollback-journal mode and are
switched to WAL on first open. The switch needs an exclusive lock, and two connections that
each hold a read lock while asking for it deadlock; SQLite answers one of them "database is
locked" at once, without calling the busy handler. Six processes opening a new file together
failed that way a few times in forty, so the switch is retried until the caller's timeout.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["switch_to_wal"]


def switch_to_wal(conn: sqlite3.Connection, *, timeout: float) -> str:
    """Ask for WAL mode, retrying a lock conflict for up to `timeout` seconds; the journal mode
    the file ends in ("wal" unless the file or its file system cannot have it)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            return mode.lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
