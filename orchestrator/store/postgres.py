"""The state store on PostgreSQL: one database shared by a fleet of workers on many machines.

The same contract as SQLite, where SQLite's one writer at a time is replaced by row locks:

- Every write that fences on a lease, or appends to a run's event log, first locks the run's
  row (`FOR NO KEY UPDATE`, or the UPDATE itself), so a stalled executor cannot write past its
  successor, and a run's events are numbered in the order they are committed (`logs --follow`
  reads them by number and never skips one that committed late).
- Workers claim with `FOR UPDATE SKIP LOCKED`: two workers never wait on each other, and
  never take the same run.
- A concurrency key's slots are granted under a transaction-scoped advisory lock of the key,
  so N workers never exceed its limit.
- Runs queued and slots given back are announced with NOTIFY (sent at commit); `watch` LISTENs,
  so an idle fleet starts a queued run at once. Polling stays as the fallback.

Multi-row locks are taken in id order (renewals, cancel requests); a deadlock or serialization
failure the server still reports is retried. `durability`: `machine` waits for the server's WAL
flush (`synchronous_commit = on`); `process` does not (`off`): a killed orchestrator loses
nothing, only a crash of the database server itself can lose the last moments' commits.

The URL is libpq's (`postgresql://user@host:5432/db`), plus `?schema=NAME` to keep the tables
in a schema of their own (several deployments, or tests, in one database).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import select
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import anyio
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from orchestrator.errors import RunStranded, StateStoreInvalid, StoreUnavailable
from orchestrator.log import get_logger
from orchestrator.redact import REDACTOR
from orchestrator.store import statements
from orchestrator.store.base import CANCEL, SLOTS, WORK, StateStore
from orchestrator.store.policy import (
    Stranded,
    batch_exists,
    check_lease_free,
    claimable,
    creation_events,
    lease_lost,
    no_such_batch,
    no_such_run,
    no_such_schedule,
    run_exists,
    slot_grants,
    take_lease,
)
from orchestrator.store.postgres_schema import APPLICATION, MIGRATIONS, SCHEMA_VERSION
from orchestrator.store.records import (
    CANCEL_RETRY_AFTER,
    BatchRecord,
    Clock,
    EventRecord,
    Lease,
    MetricPoint,
    ModelEntry,
    NewBatch,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleEntry,
    StepRecord,
    text_hash,
)
from orchestrator.store.rows import (
    BATCH_COLUMNS,
    EVENT_COLUMNS,
    EVENTS_END,
    METRIC_COLUMNS,
    METRIC_ORDER,
    MODEL_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    SHARED_TEXTS,
    STEP_COLUMNS,
    StoredText,
    batch_record,
    event_record,
    metric_record,
    metric_row,
    model_record,
    model_row,
    run_record,
    schedule_record,
    step_record,
    step_row,
    steps_json,
)
from orchestrator.store.schema import NEEDS_EXECUTOR
from orchestrator.store.statements import (
    PAUSE_SCHEDULE,
    batch_values,
    event_values,
    format_style,
    pause_values,
    run_values,
    schedule_values,
    update_values,
)
from orchestrator.store.transfer import HISTORY, IMPORTS, HistoryRow, row_name
from orchestrator.store.urls import shown_url

__all__ = ["PostgresStore"]

T = TypeVar("T")
_ONE_STATEMENT = _NO_QUEUE = contextlib.nullcontext()
"""An autocommit connection runs a lone statement in a transaction of its own."""
Cursor = psycopg.AsyncCursor[DictRow]

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

CLAIMABLE = (
    f"{NEEDS_EXECUTOR} AND (lease_owner IS NULL OR lease_expires_at <= %s OR "
    "lease_owner = ANY(%s)) AND (finished_at IS NULL OR "
    "finished_at <= cancel_requested_at OR finished_at <= %s)"
)
"""`policy.claimable` in SQL (parameters: now, the dead owners, now - CANCEL_RETRY_AFTER; the
contract suite checks they agree), repeating NEEDS_EXECUTOR's literals so the partial index
serves it."""

# The shared writes (`statements`), in psycopg's parameter style.
_INSERT_TEXT = format_style(statements.INSERT_TEXT)
_INSERT_RUN = format_style(statements.INSERT_RUN)
_INSERT_BATCH = format_style(statements.INSERT_BATCH)
_INSERT_EVENT = format_style(statements.INSERT_EVENT)
_UPSERT_STEP = format_style(statements.UPSERT_STEP)
_TAKE_LEASE = format_style(statements.TAKE_LEASE)
_STRAND_RUN = format_style(statements.STRAND_RUN)
_UPDATE_RUN = format_style(statements.UPDATE_RUN)
_INSERT_SLOT = format_style(statements.INSERT_SLOT)
_MOVE_SLOT = format_style(statements.MOVE_SLOT)
_UPSERT_SCHEDULE = format_style(statements.UPSERT_SCHEDULE)
_UPSERT_MODEL = format_style(statements.UPSERT_MODEL)
_IMPORTS = {table: (format_style(statement), columns)
            for table, (statement, columns) in IMPORTS.items()}

# A fenced commit is one statement: the fence (the run's row locked, or updated, while the
# lease holds) and the rows written from it, so nothing is written when it finds no row. One
# statement costs one round trip and, what counts more here, one trip through the driver:
# measured 0.35 ms against 1.1 ms as a transaction of five statements.
_FENCE_READ = ("SELECT id FROM runs WHERE id = %s AND lease_owner = %s AND "
               "lease_generation = %s FOR NO KEY UPDATE")
_FENCE_UPDATE = f"{_UPDATE_RUN} RETURNING id"
_STEPS_FROM_FENCE = (
    f"INSERT INTO steps (run_id, {STEP_COLUMNS}) SELECT fence.id, u.* FROM fence, "
    "unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::text[], %s::text[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[]) AS "
    f"u({STEP_COLUMNS}) {statements.STEP_CONFLICT}"
)
_EVENTS_FROM_FENCE = (
    "INSERT INTO events (run_id, ts, kind, step_id, attempt, data) SELECT fence.id, %s, "
    "u.kind, u.step_id, u.attempt, u.data FROM fence, unnest(%s::text[], %s::text[], "
    "%s::int[], %s::text[]) WITH ORDINALITY AS u(kind, step_id, attempt, data, n) ORDER BY u.n"
)
_METRICS_FROM_FENCE = (
    f"INSERT INTO metric_points ({METRIC_COLUMNS}) SELECT fence.id, u.* FROM fence, "
    "unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::float8[], "
    "%s::float8[], %s::bigint[], %s::float8[]) AS "
    f"u({METRIC_COLUMNS.removeprefix('run_id, ')}) {statements.METRIC_CONFLICT}"
)


def _one_line(exc: BaseException) -> str:
    """A libpq message (often several lines, with hints) as one line."""
    text = " ".join(str(exc).split())
    return text.removeprefix("connection failed: ") or type(exc).__name__


def _conninfo(url: str) -> tuple[str, str | None]:
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


class PostgresStore(StateStore):
    """`StateStore` on a PostgreSQL database; see the module docstring."""

    announces = True

    def __init__(self, url: str, *, durability: str = "process", busy_timeout: float = 10.0,
                 clock: Clock | None = None, read_only: bool = False) -> None:
        super().__init__(url, read_only=read_only, **({"clock": clock} if clock else {}))
        if durability not in ("process", "machine", "none"):
            msg = f"durability {durability!r}: expected one of process, machine, none"
            raise StateStoreInvalid(msg)
        self._conninfo, self._schema = _conninfo(url)
        password = urlsplit(url).password
        if password:
            REDACTOR.add([password])
        self.shown = shown_url(url)
        self._synchronous = "on" if durability == "machine" else "off"
        self._busy_timeout = busy_timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = None
        self._turns: anyio.CapacityLimiter | None = None
        """Transactions take turns here before they take a connection: a worker starting
        thousands of runs at once queues them in order for as long as that takes, while the
        pool's own timeout (busy_timeout) still catches a server that stopped answering."""
        self._channel = "orchestrator" if self._schema is None else f"orchestrator.{self._schema}"
        self._wakes: dict[str, list[Callable[[], None]]] = {}
        """What to call when a topic is announced, by topic (see `watch`)."""
        self._listener: anyio.Event | None = None
        """Set when the watcher running the LISTEN connection leaves; None: nobody runs it."""
        self._log = get_logger()

    # -- opening, checking and migrating the schema -----------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[DictRow]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, row_factory=dict_row,
                connect_timeout=max(1, round(self._busy_timeout)))
        except psycopg.Error as exc:
            msg = f"state database {self.shown}: cannot connect: {_one_line(exc)}"
            raise StateStoreInvalid(msg) from None

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            async with conn:
                await self._configure(conn)
                self.schema_change = await self._migrate(conn)
        except psycopg.Error as exc:
            msg = f"state database {self.shown} cannot be used: {_one_line(exc)}"
            raise StateStoreInvalid(msg) from None
        pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            self._conninfo, min_size=1, max_size=_POOL_SIZE + 1, open=False,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=self._configure_pooled, check=_still_connected,
            timeout=self._busy_timeout, name="orchestrator-state")
        try:
            await pool.open(wait=True, timeout=self._busy_timeout)
        except PoolTimeout:
            await pool.close()
            msg = f"state database {self.shown}: no connection within {self._busy_timeout:g}s"
            raise StateStoreInvalid(msg) from None
        self._pool = pool
        self._turns = anyio.CapacityLimiter(_POOL_SIZE)

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Per connection: how long to wait for a row lock, and what a commit waits for."""
        await conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(f"{max(1, round(self._busy_timeout * 1000))}ms")))
        await conn.execute(sql.SQL("SET synchronous_commit = {}").format(
            sql.Literal(self._synchronous)))

    async def _configure_pooled(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A pooled connection: as every connection, and refusing writes in a read-only store
        (the migration, on a connection of its own, is done by then)."""
        await self._configure(conn)
        if self.read_only:
            await conn.execute("SET default_transaction_read_only = on")

    async def _version(self, cur: Cursor) -> int:
        """The schema's version (0: empty); raises if it is someone else's or newer than us."""
        await cur.execute("SELECT to_regclass('orchestrator_schema') IS NOT NULL AS ours, "
                          "to_regclass('runs') IS NOT NULL AS taken")
        found = await cur.fetchone()
        assert found is not None
        where = f"state database {self.shown}"
        if not found["ours"]:
            if found["taken"]:
                msg = (f"{where} already has a table 'runs' that is not an orchestrator's; it "
                       "was left untouched (use another database, or ?schema=NAME)")
                raise StateStoreInvalid(msg)
            return 0
        await cur.execute("SELECT application, version FROM orchestrator_schema")
        row = await cur.fetchone()
        if row is None or row["application"] != APPLICATION:
            msg = f"{where} belongs to another application; it was left untouched"
            raise StateStoreInvalid(msg)
        version = int(row["version"])
        if version > SCHEMA_VERSION:
            msg = (f"{where} was written by a newer orchestrator (schema {version}; this "
                   f"version reads up to {SCHEMA_VERSION}); upgrade orchestrator")
            raise StateStoreInvalid(msg)
        return version

    async def _migrate(self, conn: psycopg.AsyncConnection[DictRow]) -> tuple[int, int] | None:
        """Bring the schema to SCHEMA_VERSION, once across a fleet starting together."""
        async with conn.cursor() as cur:
            exists = self._schema is None or await self._schema_exists(cur)
            if exists and await self._version(cur) == SCHEMA_VERSION:
                return None  # the usual start: nothing to lock, nothing written
            async with conn.transaction():
                await cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                  (f"orchestrator.migrate.{self._schema or ''}",))
                if self._schema is not None:
                    await cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self._schema)))
                version = await self._version(cur)
                if version == SCHEMA_VERSION:
                    return None  # another process migrated it while we waited
                if version == 0:
                    await cur.execute("CREATE TABLE orchestrator_schema (application TEXT NOT "
                                      "NULL, version INTEGER NOT NULL, migrated_at "
                                      "DOUBLE PRECISION NOT NULL)")
                    await cur.execute("INSERT INTO orchestrator_schema VALUES (%s, 0, %s)",
                                      (APPLICATION, self.clock()))
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        await cur.execute(statement)
                await cur.execute("UPDATE orchestrator_schema SET version = %s, migrated_at = %s",
                                  (SCHEMA_VERSION, self.clock()))
                return version, SCHEMA_VERSION

    async def _schema_exists(self, cur: Cursor) -> bool:
        await cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,))
        return await cur.fetchone() is not None

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- running transactions ---------------------------------------------------------------

    async def _tx(self, fn: Callable[[Cursor], Awaitable[T]], *,
                  transaction: bool = True, urgent: bool = False) -> T:
        """Run `fn` in a transaction (or, for one statement, in its own), again if the server
        broke a deadlock by aborting it. `urgent` skips the queue (the lease heartbeat)."""
        self._check_open()
        assert self._pool is not None and self._turns is not None
        turn = _NO_QUEUE if urgent else self._turns
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with turn, self._pool.connection() as conn, \
                        (conn.transaction() if transaction else _ONE_STATEMENT), \
                        conn.cursor() as cur:
                    return await fn(cur)
            except _RETRIED:
                if attempt == _ATTEMPTS:
                    raise self._unavailable("kept conflicting with other processes") from None
                await anyio.sleep(0.01 * attempt)
            except psycopg.errors.LockNotAvailable:
                raise self._unavailable(
                    f"a row stayed locked by another process for longer than busy_timeout "
                    f"({self._busy_timeout:g}s)") from None
            except PoolTimeout:
                raise self._unavailable(
                    f"no connection within busy_timeout ({self._busy_timeout:g}s)") from None
            except psycopg.errors.ReadOnlySqlTransaction:
                msg = (f"state database {self.shown} was opened to be read only (the web "
                       "view without --allow-actions)")
                raise StateStoreInvalid(msg) from None
            except psycopg.OperationalError as exc:
                raise self._unavailable(_one_line(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run `fn`, which only reads, each statement on its own: no BEGIN and COMMIT around
        it, a third of the trips through the driver (what a read costs here). What it reads
        together needs no one snapshot: a run and its pipeline text (a text never changes),
        or one statement."""
        return await self._tx(fn, transaction=False)

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"state database {self.shown}: {why}; nothing was written, "
                                "try again")

    async def _notify(self, cur: Cursor, topic: str) -> None:
        """Announce `topic` when the transaction commits (NOTIFY is transactional)."""
        await cur.execute("SELECT pg_notify(%s, %s)", (self._channel, topic))

    async def watch(self, topic: str, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process announces `topic`, until cancelled.

        Every watcher of the process shares one LISTEN connection: the first to come runs it
        and calls the others' wakes too; when it leaves, one that stays takes over. Each
        watcher is also woken once after every (re)connection: what was announced while
        nobody listened is not lost, only late.
        """
        self._check_open()
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
        server gone, it tries again every few seconds (the callers' polling goes on)."""
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(
                        sql.Identifier(self._channel)))
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
            except (psycopg.Error, StateStoreInvalid) as exc:
                self._log.warning("not listening for state changes; polling only",
                                  error=str(exc))
            await anyio.sleep(5.0)

    # -- reading rows -----------------------------------------------------------------------

    async def _texts(self, cur: Cursor, hashes: Iterable[str | None]
                     ) -> dict[str, StoredText]:
        found, missing = SHARED_TEXTS.lookup(hashes)
        if not missing:
            return found
        await cur.execute("SELECT hash, text, steps FROM pipeline_texts WHERE hash = ANY(%s)",
                          (missing,))
        fetched = {row["hash"]: StoredText.of(row["text"], row["steps"])
                   for row in await cur.fetchall()}
        SHARED_TEXTS.remember(fetched)
        return found | fetched

    async def _runs(self, cur: Cursor, where: str, params: Sequence[Any], order: str,
                    limit: int | None, *, lock: str = "") -> list[RunRecord]:
        await cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY {order} "
                          f"LIMIT %s {lock}", (*params, limit))
        rows = await cur.fetchall()
        texts = await self._texts(cur, (row["pipeline_hash"] for row in rows))
        return [run_record(row, texts) for row in rows]

    async def _get_run(self, cur: Cursor, run_id: str, *, lock: str = "") -> RunRecord:
        found = await self._runs(cur, "id = %s", (run_id,), "id", 1, lock=lock)
        if not found:
            raise no_such_run(run_id)
        return found[0]

    async def _get_batch(self, cur: Cursor, batch_id: str) -> BatchRecord:
        await cur.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,))
        row = await cur.fetchone()
        if row is None:
            raise no_such_batch(batch_id)
        return batch_record(row, await self._texts(cur, [row["pipeline_hash"]]))

    # -- writing rows -----------------------------------------------------------------------

    async def _store_text(self, cur: Cursor, text: str, steps: Sequence[str] | None) -> str:
        key = text_hash(text)
        await cur.execute(_INSERT_TEXT, (key, text, steps_json(steps)))
        SHARED_TEXTS.stored(key, text, steps)
        return key

    async def _insert_events(self, cur: Cursor, run_id: str, now: float,
                             events: Sequence[NewEvent]) -> None:
        if events:
            await cur.executemany(_INSERT_EVENT, event_values(run_id, now, events))

    async def _insert_run(self, cur: Cursor, run: NewRun, now: float, owner: str | None,
                          ttl: float, *, text_key: str) -> None:
        await cur.execute(_INSERT_RUN, run_values(run, now, owner, ttl, text_key=text_key))
        if cur.rowcount != 1:
            raise run_exists(run.id)
        await self._insert_events(cur, run.id, now, creation_events(run, owner))

    async def _take_lease(self, cur: Cursor, run: RunRecord, owner: str, *, now: float,
                          ttl: float, max_recoveries: int, force: bool) -> Lease | RunStranded:
        """Write what `policy.take_lease` decides (the run's row is locked by the caller)."""
        decided = take_lease(run, owner, now=now, ttl=ttl, max_recoveries=max_recoveries,
                             force=force)
        if isinstance(decided, Stranded):
            await cur.execute(_STRAND_RUN, (RunStatus.STRANDED.value, decided.recoveries, now,
                                            run.id))
            await self._insert_events(cur, run.id, now, [decided.event])
            return decided.error
        lease = decided.lease
        await cur.execute(_TAKE_LEASE, (owner, lease.generation, lease.expires_at,
                                        decided.recoveries, run.id))
        await self._insert_events(cur, run.id, now, [decided.event])
        return lease

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, run: NewRun, *, owner: str | None = None,
                         ttl: float = 0.0) -> RunRecord:
        now = self.clock()

        async def insert(cur: Cursor) -> RunRecord:
            await self._insert_run(cur, run, now, owner, ttl,
                                   text_key=await self._store_text(cur, run.pipeline_text,
                                                                   run.step_ids))
            if run.status is RunStatus.QUEUED and owner is None:
                await self._notify(cur, WORK)
            return await self._get_run(cur, run.id)

        return await self._tx(insert)

    async def create_batch(self, batch: NewBatch, cells: Sequence[NewRun], *,
                           owner: str | None = None, ttl: float = 0.0
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        now = self.clock()

        async def insert(cur: Cursor) -> tuple[BatchRecord, list[RunRecord]]:
            stored = {batch.pipeline_text: await self._store_text(cur, batch.pipeline_text,
                                                                  batch.step_ids)}
            await cur.execute(_INSERT_BATCH, batch_values(
                batch, len(cells), now, text_key=stored[batch.pipeline_text]))
            if cur.rowcount != 1:
                raise batch_exists(batch.id)
            for index, cell in enumerate(cells):
                text = cell.pipeline_text
                if text not in stored:  # cells share their batch's text (one dict lookup)
                    stored[text] = await self._store_text(cur, text, cell.step_ids)
                await self._insert_run(cur, dataclasses.replace(cell, batch_id=batch.id,
                                                                cell=index),
                                       now, owner, ttl, text_key=stored[text])
            if owner is None and any(c.status is RunStatus.QUEUED for c in cells):
                await self._notify(cur, WORK)
            return (await self._get_batch(cur, batch.id),
                    await self._runs(cur, "batch_id = %s", (batch.id,), "cell", None))

        return await self._tx(insert)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        return await self._read(lambda cur: self._get_batch(cur, batch_id))

    async def list_batches(self, *, limit: int = 50) -> list[BatchRecord]:
        async def select(cur: Cursor) -> list[BatchRecord]:
            await cur.execute(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, "
                              "id DESC LIMIT %s", (limit,))
            rows = await cur.fetchall()
            texts = await self._texts(cur, (row["pipeline_hash"] for row in rows))
            return [batch_record(row, texts) for row in rows]

        return await self._read(select)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._read(lambda cur: self._get_run(cur, run_id))

    async def list_runs(self, *, limit: int | None = 50, batch_id: str | None = None,
                        schedule_id: str | None = None,
                        statuses: Collection[RunStatus] | None = None,
                        pipeline: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[RunRecord]:
        where, params, order = statements.run_filter(
            batch_id=batch_id, schedule_id=schedule_id, statuses=statuses, pipeline=pipeline,
            since=since, until=until)
        return await self._read(lambda cur: self._runs(cur, format_style(where), params, order,
                                                     limit))

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        async def select(cur: Cursor) -> dict[str, StepRecord]:
            await cur.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s "
                              "ORDER BY position", (run_id,))
            return {row["step_id"]: step_record(row) for row in await cur.fetchall()}

        return await self._read(select)

    async def get_events(self, run_id: str, *, after: int = 0, before: int | None = None,
                         limit: int | None = None, newest: bool = False) -> list[EventRecord]:
        async def select(cur: Cursor) -> list[EventRecord]:
            await cur.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = %s AND "
                              f"seq > %s AND seq < %s ORDER BY seq {'DESC' if newest else ''} "
                              "LIMIT %s",
                              (run_id, after, EVENTS_END if before is None else before, limit))
            records = [event_record(row) for row in await cur.fetchall()]
            return records[::-1] if newest else records

        return await self._read(select)

    async def get_metrics(self, run_id: str) -> list[MetricPoint]:
        async def select(cur: Cursor) -> list[MetricPoint]:
            await cur.execute(f"SELECT {METRIC_COLUMNS} FROM metric_points WHERE run_id = %s "
                              f"ORDER BY {METRIC_ORDER}", (run_id,))
            return [metric_record(row) for row in await cur.fetchall()]

        return await self._read(select)

    # -- leases ------------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, *, ttl: float, max_recoveries: int,
                            dead_owners: Collection[str] = (), force: bool = False) -> Lease:
        now = self.clock()

        async def acquire(cur: Cursor) -> Lease | RunStranded:
            run = await self._get_run(cur, run_id, lock="FOR NO KEY UPDATE")
            check_lease_free(run, owner, now=now, dead_owners=dead_owners)
            return await self._take_lease(cur, run, owner, now=now, ttl=ttl,
                                          max_recoveries=max_recoveries, force=force)

        result = await self._tx(acquire)
        if isinstance(result, RunStranded):
            raise result
        return result

    async def claim_runs(self, owner: str, *, limit: int, ttl: float, max_recoveries: int,
                         dead_owners: Collection[str] = ()) -> list[Lease]:
        now = self.clock()
        dead = list(dead_owners)
        params = (now, dead, now - CANCEL_RETRY_AFTER)

        async def claim(cur: Cursor) -> list[Lease]:
            candidates = await self._runs(cur, CLAIMABLE, params, "created_at, id", limit,
                                          lock="FOR NO KEY UPDATE SKIP LOCKED")
            leases = []
            for run in candidates:
                # Read at the start of the statement; a row another worker changed and
                # committed meanwhile is re-read when locked, so check it against the rule.
                if not claimable(run, now=now, dead_owners=dead):
                    continue
                taken = await self._take_lease(cur, run, owner, now=now, ttl=ttl,
                                               max_recoveries=max_recoveries, force=False)
                if isinstance(taken, Lease):
                    leases.append(taken)
            return leases

        return await self._tx(claim)

    async def lease_owners(self) -> set[str]:
        now = self.clock()

        async def select(cur: Cursor) -> set[str]:
            await cur.execute("SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT "
                              "NULL AND lease_expires_at > %s", (now,))
            return {row["lease_owner"] for row in await cur.fetchall()}

        return await self._read(select)

    async def renew_leases(self, owner: str, *, ttl: float) -> set[str]:
        expires = self.clock() + ttl

        async def renew(cur: Cursor) -> set[str]:
            await cur.execute("UPDATE slots SET expires_at = %s WHERE owner = %s",
                              (expires, owner))
            # Locked in id order, as every statement locking several runs does; the ids come
            # back as one array (one value to decode, not a row per run).
            await cur.execute(
                "WITH renewed AS (UPDATE runs SET lease_expires_at = %s WHERE id IN (SELECT id "
                "FROM runs WHERE lease_owner = %s ORDER BY id FOR NO KEY UPDATE) AND "
                "lease_owner = %s RETURNING id) SELECT array_agg(id) AS ids FROM renewed",
                (expires, owner, owner))
            row = await cur.fetchone()
            return set(row["ids"] or ()) if row else set()

        return await self._tx(renew, urgent=True)  # late, it would lose every lease at once

    async def release_lease(self, lease: Lease) -> None:
        async def release(cur: Cursor) -> None:
            await cur.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND "
                "lease_owner = %s AND lease_generation = %s RETURNING status",
                (lease.run_id, lease.owner, lease.generation))
            row = await cur.fetchone()
            if row is not None and row["status"] in (RunStatus.QUEUED, RunStatus.RUNNING):
                await self._notify(cur, WORK)

        await self._tx(release)

    # -- cancellation ------------------------------------------------------------------------

    async def request_cancel(self, run_ids: Collection[str]) -> list[RunRecord]:
        now = self.clock()
        ids = sorted(set(run_ids))

        async def request(cur: Cursor) -> list[RunRecord]:
            await cur.execute(
                "UPDATE runs SET cancel_requested_at = coalesce(cancel_requested_at, %s) "
                "WHERE id IN (SELECT id FROM runs WHERE id = ANY(%s) ORDER BY id "
                "FOR NO KEY UPDATE) AND status <> ALL(%s) RETURNING id",
                (now, ids, [RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value]))
            marked = sorted(row["id"] for row in await cur.fetchall())
            for run_id in marked:
                await self._insert_events(cur, run_id, now, [NewEvent("cancel_requested")])
            if marked:
                await self._notify(cur, CANCEL)  # to the process executing it, if any
                await self._notify(cur, WORK)  # else to a worker, to carry it out
            found = {r.id: r for r in await self._runs(cur, "id = ANY(%s)", (marked,), "id",
                                                       None)}
            order = [run_id for run_id in dict.fromkeys(run_ids) if run_id in found]
            return [found[run_id] for run_id in order]

        return await self._tx(request) if ids else []

    async def cancel_requests(self, owner: str) -> set[str]:
        async def select(cur: Cursor) -> set[str]:
            await cur.execute("SELECT id FROM runs WHERE lease_owner = %s AND "
                              "cancel_requested_at IS NOT NULL AND status <> ALL(%s)",
                              (owner, [RunStatus.CANCELLED.value, RunStatus.SUCCEEDED.value]))
            return {row["id"] for row in await cur.fetchall()}

        return await self._read(select)

    # -- concurrency slots -------------------------------------------------------------------

    async def acquire_slots(self, key: str, limit: int, holders: Sequence[tuple[str, str]], *,
                            owner: str, ttl: float) -> list[str]:
        now = self.clock()

        async def acquire(cur: Cursor) -> list[str]:
            # One granter per key at a time, fleet-wide: the count below stays true until
            # this transaction commits.
            await cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                              (f"orchestrator.slot.{self._schema or ''}.{key}",))
            await cur.execute("DELETE FROM slots WHERE key = %s AND expires_at <= %s",
                              (key, now))
            await cur.execute("SELECT holder FROM slots WHERE key = %s", (key,))
            grants = slot_grants([row["holder"] for row in await cur.fetchall()], holders,
                                 limit)
            moved = [(owner, now + ttl, key, holder) for holder, _, kept in grants if kept]
            added = [(key, holder, run_id, owner, now, now + ttl)
                     for holder, run_id, kept in grants if not kept]
            if moved:
                await cur.executemany(_MOVE_SLOT, moved)
            if added:
                await cur.executemany(_INSERT_SLOT, added)
            return [holder for holder, _, _ in grants]

        return await self._tx(acquire) if holders else []

    async def release_slot(self, key: str, holder: str, *, owner: str) -> None:
        async def release(cur: Cursor) -> None:
            await cur.execute("DELETE FROM slots WHERE key = %s AND holder = %s AND owner = %s",
                              (key, holder, owner))
            if cur.rowcount:
                await self._notify(cur, SLOTS)

        await self._tx(release)

    # -- schedules ---------------------------------------------------------------------------

    async def sync_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        now = self.clock()

        async def upsert(cur: Cursor) -> ScheduleEntry:
            await cur.execute(f"{_UPSERT_SCHEDULE} RETURNING {SCHEDULE_COLUMNS}",
                              schedule_values(entry, now))
            row = await cur.fetchone()
            assert row is not None
            return schedule_record(row)

        return await self._tx(upsert)

    async def list_schedules(self) -> list[ScheduleEntry]:
        async def select(cur: Cursor) -> list[ScheduleEntry]:
            await cur.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id")
            return [schedule_record(row) for row in await cur.fetchall()]

        return await self._read(select)

    async def pause_schedule(self, schedule_id: str, paused: bool) -> ScheduleEntry:
        now = self.clock()

        async def pause(cur: Cursor) -> ScheduleEntry:
            await cur.execute(f"{format_style(PAUSE_SCHEDULE)} RETURNING {SCHEDULE_COLUMNS}",
                              pause_values(schedule_id, paused, now))
            row = await cur.fetchone()
            if row is None:
                raise no_such_schedule(schedule_id)
            return schedule_record(row)

        return await self._tx(pause)

    async def advance_schedule(self, schedule_id: str, expected: float | None,
                               last_fire: float) -> bool:
        async def advance(cur: Cursor) -> bool:
            await cur.execute("UPDATE schedules SET last_fire = %s WHERE id = %s AND "
                              "last_fire IS NOT DISTINCT FROM %s::double precision",
                              (last_fire, schedule_id, expected))
            return cur.rowcount == 1

        return await self._tx(advance)

    # -- the model registry ------------------------------------------------------------------

    async def record_model(self, entry: ModelEntry) -> ModelEntry:
        stored = dataclasses.replace(entry, recorded_at=self.clock())

        async def upsert(cur: Cursor) -> None:
            await cur.execute(_UPSERT_MODEL, model_row(stored))

        await self._tx(upsert)
        return stored

    async def list_models(self, *, limit: int = 100) -> list[ModelEntry]:
        async def select(cur: Cursor) -> list[ModelEntry]:
            await cur.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY recorded_at DESC "
                              "LIMIT %s", (limit,))
            return [model_record(row) for row in await cur.fetchall()]

        return await self._read(select)

    # -- moving a history between databases -------------------------------------------------

    async def export_history(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        self._check_open()
        assert self._pool is not None
        assert self._turns is not None
        async with self._turns, self._pool.connection() as conn:
            await conn.set_autocommit(False)
            try:
                # One snapshot for every table; rows streamed, never all held at once.
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                for table, columns in HISTORY.items():
                    order = {"events": "seq", "steps": "position",
                             "metric_points": METRIC_ORDER}.get(table, "1")
                    async with conn.cursor(name=f"export_{table}") as cur:
                        await cur.execute(f"SELECT {', '.join(columns)} FROM {table} "
                                          f"ORDER BY {order}")
                        async for row in cur:
                            emit(table, dict(row))
            finally:
                await conn.rollback()
                await conn.set_autocommit(True)

    async def import_history(self, rows: Iterable[HistoryRow], *, source: str) -> None:
        async def insert(cur: Cursor) -> None:
            for line, table, row in rows:
                statement, columns = _IMPORTS[table]
                try:  # row by row: a refusal names its line (and aborts the transaction)
                    await cur.execute(statement, [row[c] for c in columns])
                except psycopg.errors.UniqueViolation:
                    msg = f"{source}:{line}: {row_name(table, row)} is already in this database"
                    raise StateStoreInvalid(f"{msg}; nothing was imported") from None
                except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                    msg = f"{source}:{line}: a {table} row cannot be stored ({_one_line(exc)})"
                    raise StateStoreInvalid(f"{msg}; nothing was imported") from None

        await self._tx(insert)

    # -- fenced writes -----------------------------------------------------------------------

    async def commit(self, lease: Lease, *, run: RunUpdate | None = None,
                     steps: Sequence[StepRecord] = (), events: Sequence[NewEvent] = (),
                     metrics: Sequence[MetricPoint] = ()) -> None:
        now = self.clock()
        if run is not None and run.pipeline_text is not None:
            text = run.pipeline_text  # stored first: a text is named by its hash, for good
            await self._tx(lambda cur: self._store_text(cur, text, run.step_ids))
        if run is None:
            parts = [f"WITH fence AS ({_FENCE_READ})"]
            params: list[Any] = [lease.run_id, lease.owner, lease.generation]
        else:
            text_key = None if run.pipeline_text is None else text_hash(run.pipeline_text)
            parts = [f"WITH fence AS ({_FENCE_UPDATE})"]
            params = list(update_values(lease, run, now, text_key=text_key))
        if steps:
            parts.append(f"steps_written AS ({_STEPS_FROM_FENCE})")
            rows = [step_row(lease.run_id, step)[1:] for step in steps]
            params += [list(column) for column in zip(*rows, strict=True)]
        if events:
            parts.append(f"events_written AS ({_EVENTS_FROM_FENCE})")
            values = [row[2:] for row in event_values(lease.run_id, now, events)]
            params += [now, *(list(column) for column in zip(*values, strict=True))]
        if metrics:
            parts.append(f"metrics_written AS ({_METRICS_FROM_FENCE})")
            points = [metric_row(lease.run_id, point, now)[1:] for point in metrics]
            params += [list(column) for column in zip(*points, strict=True)]
        held = "SELECT count(*) AS held FROM fence"
        if run is not None and run.release and run.status is RunStatus.QUEUED:
            # Put back in the queue: another worker's now (NOTIFY goes out at commit).
            parts.append("announced AS (SELECT pg_notify(%s, %s) FROM fence)")
            params += [self._channel, WORK]
            held = "SELECT count(*) AS held FROM fence, announced"
        statement = ", ".join(parts) + f" {held}"

        async def write(cur: Cursor) -> None:
            await cur.execute(statement, params)
            found = await cur.fetchone()
            if found is None or found["held"] != 1:
                raise lease_lost(lease)

        await self._tx(write, transaction=False)
