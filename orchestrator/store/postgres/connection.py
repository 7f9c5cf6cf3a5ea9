"""The store's connections to PostgreSQL: the URL read (with `?schema=`), a pool opened after
the schema is migrated, transactions run on it with their errors in one line.

Transactions take turns before they take a connection (a worker starting thousands of runs at
once queues them in order), except the lease heartbeat's, which must never queue behind them.
A deadlock or serialization failure the server still reports is retried.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import anyio
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from orchestrator.errors import StateStoreInvalid, StoreUnavailable
from orchestrator.store.postgres.dbclock import DatabaseClock
from orchestrator.store.postgres.schema import migrate
from orchestrator.store.records import Clock
from orchestrator.store.urls import shown_url

__all__ = ["Cursor", "PgConnections", "conninfo", "one_line"]

T = TypeVar("T")
Cursor = psycopg.AsyncCursor[DictRow]
_ONE_STATEMENT = _NO_QUEUE = contextlib.nullcontext()
"""An autocommit connection runs a lone statement in a transaction of its own."""

# The driver's own log lines (e.g. "query cancellation interrupted" when a LISTEN is cancelled
# at shutdown) would reach the terminal through logging's last-resort handler; what matters
# reaches us as exceptions, which become our one-line errors.
logging.getLogger("psycopg").addHandler(logging.NullHandler())
logging.getLogger("psycopg").propagate = False

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_ATTEMPTS = 4
_POOL_SIZE = 4
"""Connections per process for the work (an executor's commits are short, and a fleet of many
processes must stay well inside the server's max_connections, 100 by default), plus one kept
for the lease heartbeat, which must never queue behind them."""


def one_line(exc: BaseException) -> str:
    """A libpq message (often several lines, with hints) as one line."""
    text = " ".join(str(exc).split())
    return text.removeprefix("connection failed: ") or type(exc).__name__


DEAD_LINK = (("tcp_user_timeout", "10000"), ("keepalives", "1"), ("keepalives_idle", "10"),
             ("keepalives_interval", "3"), ("keepalives_count", "3"))
"""How a connection whose server went out of reach (a network partition: no refusal, no
reset, only silence) fails instead of hanging for the kernel's 15 minutes: data unanswered
for 10 s, or an idle connection (LISTEN) unanswered by three probes 3 s apart after 10 s
idle. A URL that sets one of them keeps its own."""


def conninfo(url: str) -> tuple[str, str | None]:
    """libpq's connection string for `url`, and the schema named by `?schema=`: one of the
    user's own (PostgreSQL's `information_schema`, `pg_catalog`, `pg_toast` and every `pg_*`
    are refused: the tables would be made among the server's own)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (checked here: urllib checks a port only when asked)
        _ = parts.password
    except ValueError as exc:
        msg = f"state_url {shown_url(url)!r} is not a valid URL ({exc})"
        raise StateStoreInvalid(msg) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    schema = schemas[-1] if schemas else None
    if schema is not None:
        if not _SCHEMA_NAME.fullmatch(schema):
            msg = (f"state_url {shown_url(url)!r}: schema {schema[:70]!r} is not a plain "
                   "lowercase name (letters, digits, _; at most 63)")
            raise StateStoreInvalid(msg)
        if schema == "information_schema" or schema.startswith("pg_"):
            msg = (f"state_url {shown_url(url)!r}: schema {schema!r} is PostgreSQL's own; "
                   "name a schema of your own (?schema=orchestrator)")
            raise StateStoreInvalid(msg)
        rest.append(("options", f"-c search_path={schema}"))
    if not any(key == "application_name" for key, _ in rest):  # who it is, in pg_stat_activity
        rest.append(("application_name", f"orchestrator {schema or ''}".strip()))
    given = {key for key, _ in rest}
    rest += [(key, value) for key, value in DEAD_LINK if key not in given]
    query_text = urlencode(rest, quote_via=quote)
    return urlunsplit(parts._replace(scheme="postgresql", query=query_text)), schema


async def _still_connected(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before it lends a connection, at the cost of a system call.

    An idle connection has nothing to read unless the server closed it (restarted, or the
    connection was terminated): only then the full check, a round trip, which raises and makes
    the pool connect anew. (psycopg's own check makes that round trip every time: 0.2 ms of
    every transaction, measured.) A connection that fails mid-transaction is not retried:
    what reached the server is unknown, so it is StoreUnavailable.
    """
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


_NOT_NOW = ("starting up", "shutting down", "in recovery mode", "too many clients",
            "remaining connection slots")


def server_down(exc: psycopg.Error) -> bool:
    """Whether a failed connection means the server is not there now (refused, timed out,
    starting up, shutting down: try again later) rather than that the URL is wrong (no such
    role or database, bad password: try again never). libpq reports a refusal by a server
    that answered as `FATAL: ...` and gives no SQLSTATE for it, so the text decides."""
    text = str(exc)
    if not isinstance(exc, psycopg.OperationalError):
        return False
    return "FATAL:" not in text or any(reason in text for reason in _NOT_NOW)


class PgConnections:
    """The pool a store's transactions run on; see the module docstring."""

    def __init__(self, url: str, *, durability: str, busy_timeout: float, read_only: bool,
                 clock: Clock) -> None:
        if durability not in ("process", "machine", "none"):
            msg = f"durability {durability!r}: expected one of process, machine, none"
            raise StateStoreInvalid(msg)
        self.conninfo, self.schema = conninfo(url)
        self.shown = shown_url(url)
        self._synchronous = "on" if durability == "machine" else "off"
        self.busy_timeout = busy_timeout
        self._read_only = read_only
        self._clock = clock
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = None
        self._turns: anyio.CapacityLimiter | None = None
        """Transactions take turns here before they take a connection: a worker starting
        thousands of runs at once queues them in order for as long as that takes, while the
        pool's own timeout (busy_timeout) still catches a server that stopped answering."""

    async def connect(self) -> psycopg.AsyncConnection[DictRow]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=dict_row,
                connect_timeout=max(1, round(self.busy_timeout)))
        except psycopg.Error as exc:
            if server_down(exc):
                raise self._unavailable(f"cannot connect: {one_line(exc)}") from None
            msg = f"state database {self.shown}: cannot connect: {one_line(exc)}"
            raise StateStoreInvalid(msg) from None

    async def open(self) -> tuple[int, int] | None:
        """Migrate the schema on a connection of its own, then open the pool; (from, to) if
        this process migrated it."""
        conn = await self.connect()
        try:
            async with conn:
                await self._configure(conn)
                if isinstance(self._clock, DatabaseClock):
                    await self._clock.read(conn)
                change = await migrate(conn, where=f"state database {self.shown}",
                                       schema=self.schema, clock=self._clock)
        except psycopg.Error as exc:
            if server_down(exc):
                raise self._unavailable(f"went away while opening: {one_line(exc)}") from None
            msg = f"state database {self.shown} cannot be used: {one_line(exc)}"
            raise StateStoreInvalid(msg) from None
        pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            self.conninfo, min_size=1, max_size=_POOL_SIZE + 1, open=False,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=self._configure_pooled, check=_still_connected,
            timeout=self.busy_timeout, name="orchestrator-state")
        try:
            await pool.open(wait=True, timeout=self.busy_timeout)
        except PoolTimeout:
            await pool.close()
            raise self._unavailable(f"no connection within {self.busy_timeout:g}s") from None
        self._pool = pool
        self._turns = anyio.CapacityLimiter(_POOL_SIZE)
        return change

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Per connection: how long to wait for a row lock, and what a commit waits for."""
        await conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(f"{max(1, round(self.busy_timeout * 1000))}ms")))
        await conn.execute(sql.SQL("SET synchronous_commit = {}").format(
            sql.Literal(self._synchronous)))

    async def _configure_pooled(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A pooled connection: as every connection, and refusing writes in a read-only store
        (the migration, on a connection of its own, is done by then)."""
        await self._configure(conn)
        if self._read_only:
            await conn.execute("SET default_transaction_read_only = on")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def tx(self, fn: Callable[[Cursor], Awaitable[T]], *,
                  transaction: bool = True, urgent: bool = False) -> T:
        """Run `fn` in a transaction (or, for one statement, in its own), again if the server
        broke a deadlock by aborting it. `urgent` skips the queue (the lease heartbeat)."""
        assert self._pool is not None and self._turns is not None
        turn = _NO_QUEUE if urgent else self._turns
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with turn, self._pool.connection() as conn:
                    if isinstance(self._clock, DatabaseClock) and self._clock.due:
                        await self._clock.read(conn)
                    async with (conn.transaction() if transaction else _ONE_STATEMENT), \
                            conn.cursor() as cur:
                        return await fn(cur)
            except _RETRIED:
                if attempt == _ATTEMPTS:
                    raise self._unavailable("kept conflicting with other processes") from None
                await anyio.sleep(0.01 * attempt)
            except psycopg.errors.LockNotAvailable:
                raise self._unavailable(
                    f"a row stayed locked by another process for longer than busy_timeout "
                    f"({self.busy_timeout:g}s)") from None
            except PoolTimeout:
                raise self._unavailable(
                    f"no connection within busy_timeout ({self.busy_timeout:g}s)") from None
            except psycopg.errors.ReadOnlySqlTransaction:
                msg = (f"state database {self.shown} was opened to be read only (the web "
                       "view without --allow-actions)")
                raise StateStoreInvalid(msg) from None
            except psycopg.OperationalError as exc:
                raise self._unavailable(one_line(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run `fn`, which only reads, each statement on its own: no BEGIN and COMMIT around
        it, a third of the trips through the driver (what a read costs here). What it reads
        together needs no one snapshot: a run and its pipeline text (a text never changes),
        or one statement."""
        return await self.tx(fn, transaction=False)

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"state database {self.shown}: {why}; nothing was written, "
                                "try again")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        """A connection of the pool, in turn, for what one transaction cannot say (a
        snapshot read streamed by server-side cursors)."""
        assert self._pool is not None and self._turns is not None
        async with self._turns, self._pool.connection() as conn:
            yield conn
