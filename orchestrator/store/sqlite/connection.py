"""The SQLite file's two connections, and running a transaction on the right one.

Why statements usually run on the event loop: measured on the 2-core machines this project
targets, handing a statement to a worker thread costs ~150 µs, while a whole WAL commit at
`synchronous=NORMAL` costs ~25 µs. So a transaction first runs inline on a connection whose busy
timeout is zero; only when another process holds the write lock (SQLITE_BUSY), or when
durability is `machine` (every commit waits for an fsync), does it go to a worker thread on a
second connection that waits for the lock. See `bench/engine_overhead.py`.

Durability: `process` (synchronous=NORMAL) survives a killed process, `machine` (FULL) also an
OS crash or power cut, `none` (OFF) survives nothing and exists for benchmarks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.errors import StateStoreInvalid, StoreUnavailable
from orchestrator.store.sqlite.schema import migrate

__all__ = ["SYNCHRONOUS", "Busy", "SQLiteConnections", "sqlite_path"]

T = TypeVar("T")

SYNCHRONOUS = {"process": "NORMAL", "machine": "FULL", "none": "OFF"}


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/state.db` is relative to the current directory; `sqlite:////abs` is not."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        msg = f"state_url {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute.db"
        raise StateStoreInvalid(msg)
    return Path(url[len(prefix):]).expanduser()


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds a lock: SQLITE_BUSY or SQLITE_LOCKED, extended codes too
    (SQLITE_BUSY_RECOVERY, met when processes open a new WAL file together, is 261)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Busy(Exception):
    """Another process holds a lock this open would wait for (see `SQLiteConnections.open`)."""


class SQLiteConnections:
    """The store's file: opened (created, checked, migrated), its transactions run, closed."""

    def __init__(self, path: Path, *, durability: str, busy_timeout: float,
                 read_only: bool) -> None:
        if durability not in SYNCHRONOUS:
            msg = f"durability {durability!r}: expected one of {', '.join(SYNCHRONOUS)}"
            raise StateStoreInvalid(msg)
        self.path = path
        self._durability = durability
        self._busy_timeout = busy_timeout
        self._read_only = read_only
        self._inline: sqlite3.Connection | None = None
        self._threaded: sqlite3.Connection | None = None
        self._thread_limiter: Any = None
        """One statement at a time on the threaded connection (made on first use: a command
        that never meets a lock never imports anyio's threads)."""

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row  # columns read by name, never by position
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[self._durability]}")
        return conn

    def open(self, *, wait: bool = True) -> tuple[int, int] | None:
        """Open the file (made if missing) on its two connections; (from, to) if this
        migrated its schema. With `wait`, it waits up to busy_timeout for another process's
        lock (run it in a thread then); without, it raises Busy at once instead: the usual
        open takes a few hundred microseconds, and runs inline."""
        where = self.path
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the state directory {where.parent}: {exc.strerror or exc}"
            raise StateStoreInvalid(msg) from None
        if where.exists() and not where.is_file():
            msg = f"state database {where} is not a file"
            raise StateStoreInvalid(msg)
        timeout = self._busy_timeout if wait else 0.0
        try:
            conn = self._connect(timeout)
            try:
                change = migrate(conn, self.path, timeout)
            except BaseException:
                conn.close()
                raise
            if not wait:
                conn.execute(f"PRAGMA busy_timeout = {round(self._busy_timeout * 1000)}")
            self._threaded = conn
            self._inline = self._connect(0)
            if self._read_only:  # after the schema is in place: from now on, reads only
                for opened in (self._threaded, self._inline):
                    opened.execute("PRAGMA query_only = ON")
            return change
        except sqlite3.OperationalError as exc:
            if is_busy(exc) and not wait:
                raise Busy from None
            raise (self._unavailable() if is_busy(exc) else self._invalid(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise self._invalid(exc) from None

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"state database {self.path} is locked by another process for longer than "
            f"busy_timeout ({self._busy_timeout:g}s); nothing was written, try again (or raise "
            "the setting busy_timeout)")

    def _invalid(self, exc: sqlite3.Error) -> StateStoreInvalid:
        text = str(exc)
        if "file is not a database" in text or "malformed" in text:
            why = "is not a SQLite database, or is corrupt; it was left untouched"
        elif self._read_only and "readonly" in text:
            why = "was opened to be read only (the web view without --allow-actions)"
        elif "readonly" in text or "unable to open" in text or "disk I/O" in text:
            why = f"cannot be written ({text})"
        else:
            why = f"cannot be used: {text}"
        return StateStoreInvalid(f"state database {self.path} {why}")

    def close(self) -> None:
        for conn in (self._inline, self._threaded):
            if conn is not None:
                conn.close()
        self._inline = self._threaded = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `fn` in a transaction: inline when the lock is free, else on a worker thread."""
        assert self._inline is not None and self._threaded is not None
        if self._durability != "machine" or not write:
            try:
                return self._transaction(self._inline, fn, write=write)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise self._invalid(exc) from None
            except sqlite3.DatabaseError as exc:  # e.g. corruption found mid-run
                raise self._invalid(exc) from None
        import anyio.to_thread  # noqa: PLC0415  (only when another process holds the lock)

        threaded = self._threaded
        if self._thread_limiter is None:
            self._thread_limiter = anyio.CapacityLimiter(1)
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._transaction(threaded, fn, write=write),
                limiter=self._thread_limiter,
            )
        except sqlite3.OperationalError as exc:
            raise (self._unavailable() if is_busy(exc) else self._invalid(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise self._invalid(exc) from None

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], *,
                     write: bool) -> T:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result
