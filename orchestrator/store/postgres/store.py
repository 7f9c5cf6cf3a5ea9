"""The state store on PostgreSQL: one database shared by a fleet of workers on many machines.

The same contract as SQLite, where SQLite's one writer at a time is replaced by row locks:

- Every write that fences on a lease, or appends to a run's event log, first locks the run's
  row (`FOR NO KEY UPDATE`, or the UPDATE itself), so a stalled executor cannot write past its
  successor, and a run's events are numbered in the order they are committed (`logs --follow`
  reads them by number and never skips one that committed late).
- Workers claim with `FOR UPDATE SKIP LOCKED`: none waits on another or takes the same run.
- A concurrency key's slots are granted under a transaction-scoped advisory lock of the key,
  so N workers never exceed its limit.
- Runs queued and slots given back are announced with NOTIFY (sent at commit); `watch` LISTENs,
  so an idle fleet starts a queued run at once. Polling stays as the fallback.

Multi-row locks are taken in id order (renewals, cancel requests); a deadlock or serialization
failure the server still reports is retried. `durability`: `machine` waits for the WAL flush
(`synchronous_commit = on`); `process` does not (`off`): a killed orchestrator loses nothing,
only a crash of the database server itself can lose the last moments' commits.

The URL is libpq's (`postgresql://user@host:5432/db`), plus `?schema=NAME` to keep the tables
in a schema of their own (several deployments, or tests, in one database).

This module holds the statements; `connection` the pool and its transactions, `schema` the
migrations, `notify` LISTEN/NOTIFY, `sql` the statements' text, `rows` what they share,
`dbclock` the time leases are decided by (the server's, never a worker's).
(Over 400 lines: the whole contract's SQL for one dialect, one method per operation of
`StateStore`; the decisions are in `policy`, the records in `records`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg.errors

from orchestrator.errors import RunStranded, StateStoreInvalid
from orchestrator.redact import REDACTOR
from orchestrator.store import statements
from orchestrator.store.base import CANCEL, SLOTS, WORK, StateStore
from orchestrator.store.policy import (
    batch_exists,
    check_lease_free,
    claimable,
    lease_lost,
    no_such_schedule,
    slot_grants,
)
from orchestrator.store.postgres.connection import Cursor, PgConnections, one_line
from orchestrator.store.postgres.dbclock import DatabaseClock
from orchestrator.store.postgres.notify import Announcements
from orchestrator.store.postgres.rows import (
    insert_events,
    insert_run,
    read_batch,
    read_run,
    read_runs,
    store_text,
    stored_texts,
    take_lease_row,
)
from orchestrator.store.postgres.sql import (
    ALIAS_HISTORY,
    ALIAS_HISTORY_OF,
    CLAIMABLE,
    CURRENT_ALIASES,
    EVENTS_FROM_FENCE,
    FENCE_READ,
    FENCE_UPDATE,
    IMPORT_ROWS,
    INSERT_BATCH,
    INSERT_SLOT,
    LOCK_ALIAS,
    METRICS_FROM_FENCE,
    MODEL_NAMED,
    MOVE_ALIAS,
    MOVE_SLOT,
    STEPS_FROM_FENCE,
    UPSERT_MODEL,
    UPSERT_SCHEDULE,
)
from orchestrator.store.records import (
    CANCEL_RETRY_AFTER,
    AliasMove,
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
    SCHEDULE_COLUMNS,
    STEP_COLUMNS,
    alias_record,
    batch_record,
    event_record,
    metric_record,
    metric_row,
    model_record,
    model_row,
    schedule_record,
    step_record,
    step_row,
)
from orchestrator.store.statements import (
    PAUSE_SCHEDULE,
    batch_values,
    event_values,
    format_style,
    move_alias_values,
    pause_values,
    schedule_values,
    update_values,
)
from orchestrator.store.transfer import HISTORY, HistoryRow, row_name

__all__ = ["PostgresStore"]

T = TypeVar("T")


class PostgresStore(StateStore):
    """`StateStore` on a PostgreSQL database; see the module docstring."""

    announces = True

    def __init__(self, url: str, *, durability: str = "process", busy_timeout: float = 10.0,
                 clock: Clock | None = None, read_only: bool = False) -> None:
        super().__init__(url, read_only=read_only, clock=clock or DatabaseClock())
        self._db = PgConnections(url, durability=durability, busy_timeout=busy_timeout,
                                 read_only=read_only, clock=self.clock)
        password = urlsplit(url).password
        if password:
            REDACTOR.add([password])
        self.shown = self._db.shown
        self._news = Announcements(self._db.schema, self._db.connect)

    async def _open(self) -> None:
        self.schema_change = await self._db.open()

    async def _close(self) -> None:
        await self._db.close()

    async def _tx(self, fn: Callable[[Cursor], Awaitable[T]], *, transaction: bool = True,
                  urgent: bool = False) -> T:
        """Run `fn` in a transaction (see `connection.PgConnections.tx`)."""
        self._check_open()
        return await self._db.tx(fn, transaction=transaction, urgent=urgent)

    async def _read(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run `fn`, which only reads, each statement on its own."""
        self._check_open()
        return await self._db.read(fn)

    async def watch(self, topic: str, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process announces `topic`, until cancelled (see
        `notify`)."""
        self._check_open()
        await self._news.watch(topic, wake)

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, run: NewRun, *, owner: str | None = None,
                         ttl: float = 0.0) -> RunRecord:
        now = self.clock()

        async def insert(cur: Cursor) -> RunRecord:
            await insert_run(cur, run, now, owner, ttl,
                             text_key=await store_text(cur, run.pipeline_text, run.step_ids))
            if run.status is RunStatus.QUEUED and owner is None:
                await self._news.notify(cur, WORK)
            return await read_run(cur, run.id)

        return await self._tx(insert)

    async def create_batch(self, batch: NewBatch, cells: Sequence[NewRun], *,
                           owner: str | None = None, ttl: float = 0.0
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        now = self.clock()

        async def insert(cur: Cursor) -> tuple[BatchRecord, list[RunRecord]]:
            stored = {batch.pipeline_text: await store_text(cur, batch.pipeline_text,
                                                            batch.step_ids)}
            await cur.execute(INSERT_BATCH, batch_values(
                batch, len(cells), now, text_key=stored[batch.pipeline_text]))
            if cur.rowcount != 1:
                raise batch_exists(batch.id)
            for index, cell in enumerate(cells):
                text = cell.pipeline_text
                if text not in stored:  # cells share their batch's text (one dict lookup)
                    stored[text] = await store_text(cur, text, cell.step_ids)
                await insert_run(cur, dataclasses.replace(cell, batch_id=batch.id, cell=index),
                                 now, owner, ttl, text_key=stored[text])
            if owner is None and any(c.status is RunStatus.QUEUED for c in cells):
                await self._news.notify(cur, WORK)
            return (await read_batch(cur, batch.id),
                    await read_runs(cur, "batch_id = %s", (batch.id,), "cell", None))

        return await self._tx(insert)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        return await self._read(lambda cur: read_batch(cur, batch_id))

    async def list_batches(self, *, limit: int = 50) -> list[BatchRecord]:
        async def select(cur: Cursor) -> list[BatchRecord]:
            await cur.execute(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, "
                              "id DESC LIMIT %s", (limit,))
            rows = await cur.fetchall()
            texts = await stored_texts(cur, (row["pipeline_hash"] for row in rows))
            return [batch_record(row, texts) for row in rows]

        return await self._read(select)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._read(lambda cur: read_run(cur, run_id))

    async def list_runs(self, *, limit: int | None = 50, batch_id: str | None = None,
                        schedule_id: str | None = None,
                        statuses: Collection[RunStatus] | None = None,
                        pipeline: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[RunRecord]:
        where, params, order = statements.run_filter(
            batch_id=batch_id, schedule_id=schedule_id, statuses=statuses, pipeline=pipeline,
            since=since, until=until)
        return await self._read(lambda cur: read_runs(cur, format_style(where), params,
                                                         order, limit))

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
            run = await read_run(cur, run_id, lock="FOR NO KEY UPDATE")
            check_lease_free(run, owner, now=now, dead_owners=dead_owners)
            return await take_lease_row(cur, run, owner, now=now, ttl=ttl,
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
            candidates = await read_runs(cur, CLAIMABLE, params, "created_at, id", limit,
                                         lock="FOR NO KEY UPDATE SKIP LOCKED")
            leases = []
            for run in candidates:
                # Read at the start of the statement; a row another worker changed and
                # committed meanwhile is re-read when locked, so check it against the rule.
                if not claimable(run, now=now, dead_owners=dead):
                    continue
                taken = await take_lease_row(cur, run, owner, now=now, ttl=ttl,
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
                await self._news.notify(cur, WORK)

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
                await insert_events(cur, run_id, now, [NewEvent("cancel_requested")])
            if marked:
                await self._news.notify(cur, CANCEL)  # to the process executing it, if any
                await self._news.notify(cur, WORK)  # else to a worker, to carry it out
            found = {r.id: r for r in await read_runs(cur, "id = ANY(%s)", (marked,), "id",
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
                              (f"orchestrator.slot.{self._db.schema or ''}.{key}",))
            await cur.execute("DELETE FROM slots WHERE key = %s AND expires_at <= %s",
                              (key, now))
            await cur.execute("SELECT holder FROM slots WHERE key = %s", (key,))
            grants = slot_grants([row["holder"] for row in await cur.fetchall()], holders,
                                 limit)
            moved = [(owner, now + ttl, key, holder) for holder, _, kept in grants if kept]
            added = [(key, holder, run_id, owner, now, now + ttl)
                     for holder, run_id, kept in grants if not kept]
            if moved:
                await cur.executemany(MOVE_SLOT, moved)
            if added:
                await cur.executemany(INSERT_SLOT, added)
            return [holder for holder, _, _ in grants]

        return await self._tx(acquire) if holders else []

    async def release_slot(self, key: str, holder: str, *, owner: str) -> None:
        async def release(cur: Cursor) -> None:
            await cur.execute("DELETE FROM slots WHERE key = %s AND holder = %s AND owner = %s",
                              (key, holder, owner))
            if cur.rowcount:
                await self._news.notify(cur, SLOTS)

        await self._tx(release)

    # -- schedules ---------------------------------------------------------------------------

    async def sync_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        now = self.clock()

        async def upsert(cur: Cursor) -> ScheduleEntry:
            await cur.execute(f"{UPSERT_SCHEDULE} RETURNING {SCHEDULE_COLUMNS}",
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
            await cur.execute(UPSERT_MODEL, model_row(stored))

        await self._tx(upsert)
        return stored

    async def list_models(self, *, limit: int = 100) -> list[ModelEntry]:
        async def select(cur: Cursor) -> list[ModelEntry]:
            await cur.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY recorded_at DESC "
                              "LIMIT %s", (limit,))
            return [model_record(row) for row in await cur.fetchall()]

        return await self._read(select)

    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        at = self.clock()

        async def insert(cur: Cursor) -> AliasMove | None:
            await cur.execute(LOCK_ALIAS, (move.alias,))
            await cur.execute(MOVE_ALIAS + " RETURNING seq", move_alias_values(move, at))
            row = await cur.fetchone()
            return None if row is None else dataclasses.replace(move, moved_at=at,
                                                                seq=int(row["seq"]))

        return await self._tx(insert)

    async def aliases(self) -> list[AliasMove]:
        return await self._alias_moves(CURRENT_ALIASES, ())

    async def alias_history(self, *, alias: str | None = None,
                            limit: int = 100) -> list[AliasMove]:
        return await self._alias_moves(*((ALIAS_HISTORY, (limit,)) if alias is None else
                                         (ALIAS_HISTORY_OF, (alias, limit))))

    async def _alias_moves(self, statement: str, values: tuple[Any, ...]) -> list[AliasMove]:
        async def select(cur: Cursor) -> list[AliasMove]:
            await cur.execute(statement, values)
            return [alias_record(row) for row in await cur.fetchall()]

        return await self._read(select)

    async def get_model(self, name: str) -> ModelEntry | None:
        async def select(cur: Cursor) -> ModelEntry | None:
            row = await (await cur.execute(MODEL_NAMED, (name,))).fetchone()
            return None if row is None else model_record(row)

        return await self._read(select)

    # -- moving a history between databases -------------------------------------------------

    async def export_history(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        self._check_open()
        async with self._db.connection() as conn:
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
                statement, columns = IMPORT_ROWS[table]
                try:  # row by row: a refusal names its line (and aborts the transaction)
                    await cur.execute(statement, [row[c] for c in columns])
                except psycopg.errors.UniqueViolation:
                    msg = f"{source}:{line}: {row_name(table, row)} is already in this database"
                    raise StateStoreInvalid(f"{msg}; nothing was imported") from None
                except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                    msg = f"{source}:{line}: a {table} row cannot be stored ({one_line(exc)})"
                    raise StateStoreInvalid(f"{msg}; nothing was imported") from None

        await self._tx(insert)

    # -- fenced writes -----------------------------------------------------------------------

    async def commit(self, lease: Lease, *, run: RunUpdate | None = None,
                     steps: Sequence[StepRecord] = (), events: Sequence[NewEvent] = (),
                     metrics: Sequence[MetricPoint] = ()) -> None:
        now = self.clock()
        if run is not None and run.pipeline_text is not None:
            text = run.pipeline_text  # stored first: a text is named by its hash, for good
            await self._tx(lambda cur: store_text(cur, text, run.step_ids))
        if run is None:
            parts = [f"WITH fence AS ({FENCE_READ})"]
            params: list[Any] = [lease.run_id, lease.owner, lease.generation]
        else:
            text_key = None if run.pipeline_text is None else text_hash(run.pipeline_text)
            parts = [f"WITH fence AS ({FENCE_UPDATE})"]
            params = list(update_values(lease, run, now, text_key=text_key))
        if steps:
            parts.append(f"steps_written AS ({STEPS_FROM_FENCE})")
            rows = [step_row(lease.run_id, step)[1:] for step in steps]
            params += [list(column) for column in zip(*rows, strict=True)]
        if events:
            parts.append(f"events_written AS ({EVENTS_FROM_FENCE})")
            values = [row[2:] for row in event_values(lease.run_id, now, events)]
            params += [now, *(list(column) for column in zip(*values, strict=True))]
        if metrics:
            parts.append(f"metrics_written AS ({METRICS_FROM_FENCE})")
            points = [metric_row(lease.run_id, point, now)[1:] for point in metrics]
            params += [list(column) for column in zip(*points, strict=True)]
        held = "SELECT count(*) AS held FROM fence"
        if run is not None and run.release and run.status is RunStatus.QUEUED:
            # Put back in the queue: another worker's now (NOTIFY goes out at commit).
            parts.append("announced AS (SELECT pg_notify(%s, %s) FROM fence)")
            params += [self._news.channel, WORK]
            held = "SELECT count(*) AS held FROM fence, announced"
        statement = ", ".join(parts) + f" {held}"

        async def write(cur: Cursor) -> None:
            await cur.execute(statement, params)
            found = await cur.fetchone()
            if found is None or found["held"] != 1:
                raise lease_lost(lease)

        await self._tx(write, transaction=False)
