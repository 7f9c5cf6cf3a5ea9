"""The embedded state store: one SQLite file in WAL mode, its statements (this module), its
connections (`connection`: inline or on a thread, and why), its schema and migrations
(`schema`), reading rows into records (`rows`).

(Over 400 lines: the whole contract's SQL for one dialect, one method per operation of
`StateStore`; the decisions are in `policy`, the records in `records`.)
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

from orchestrator.errors import RunStranded, StateStoreInvalid
from orchestrator.store.base import StateStore
from orchestrator.store.policy import (
    batch_exists,
    check_lease_free,
    lease_lost,
    no_such_schedule,
    slot_grants,
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
from orchestrator.store.sqlite.connection import Busy, SQLiteConnections, sqlite_path
from orchestrator.store.sqlite.rows import (
    INSERT_NUMBERED,
    NUMBER_EVENTS,
    insert_events,
    insert_run,
    read_batch,
    read_run,
    read_runs,
    refused,
    store_text,
    stored_texts,
    take_lease_row,
)
from orchestrator.store.statements import (
    ALIAS_HISTORY,
    ALIAS_HISTORY_OF,
    CURRENT_ALIASES,
    INSERT_BATCH,
    INSERT_SLOT,
    MODEL_NAMED,
    MOVE_ALIAS,
    MOVE_SLOT,
    NEEDS_EXECUTOR,
    PAUSE_SCHEDULE,
    UPDATE_RUN,
    UPSERT_METRIC,
    UPSERT_MODEL,
    UPSERT_SCHEDULE,
    UPSERT_STEP,
    batch_values,
    move_alias_values,
    pause_values,
    run_filter,
    schedule_values,
    update_values,
)
from orchestrator.store.transfer import HISTORY, IMPORTS, HistoryRow

__all__ = ["CLAIMABLE", "SQLiteStore"]

T = TypeVar("T")

CLAIMABLE = (
    f"{NEEDS_EXECUTOR} AND (lease_owner IS NULL OR lease_expires_at <= ?) AND "
    "(finished_at IS NULL OR finished_at <= cancel_requested_at OR finished_at <= ?)"
)
"""What `claim_runs` takes (parameters: now, now - CANCEL_RETRY_AFTER): `policy.claimable` in
SQL, repeating NEEDS_EXECUTOR's text so the partial index serves it (the contract suite checks
the two agree)."""
class SQLiteStore(StateStore):
    """`StateStore` on one SQLite file: the contract's statements, run by `connection`."""

    def __init__(self, url: str, *, durability: str = "process", busy_timeout: float = 10.0,
                 clock: Clock | None = None, read_only: bool = False) -> None:
        super().__init__(url, read_only=read_only, **({"clock": clock} if clock else {}))
        self.path = sqlite_path(url)
        self._file = SQLiteConnections(self.path, durability=durability,
                                       busy_timeout=busy_timeout, read_only=read_only)

    async def _open(self) -> None:
        try:
            self.schema_change = self._file.open(wait=False)
        except Busy:  # another process holds a lock: wait for it, off the event loop
            import anyio.to_thread  # noqa: PLC0415  (start-up: only then)

            self.schema_change = await anyio.to_thread.run_sync(self._file.open)

    async def _close(self) -> None:
        self._file.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `fn` in a transaction (see `connection`)."""
        self._check_open()
        return await self._file.run(fn, write=write)

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, run: NewRun, *, owner: str | None = None,
                         ttl: float = 0.0) -> RunRecord:
        now = self.clock()

        def insert(conn: sqlite3.Connection) -> RunRecord:
            insert_run(conn, run, now, owner, ttl,
                        text_key=store_text(conn, run.pipeline_text, run.step_ids))
            return read_run(conn, run.id)

        return await self._run(insert, write=True)

    async def create_batch(self, batch: NewBatch, cells: Sequence[NewRun], *,
                           owner: str | None = None, ttl: float = 0.0
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        now = self.clock()

        def insert(conn: sqlite3.Connection) -> tuple[BatchRecord, list[RunRecord]]:
            stored = {batch.pipeline_text: store_text(conn, batch.pipeline_text,
                                                       batch.step_ids)}
            if conn.execute(INSERT_BATCH, batch_values(
                    batch, len(cells), now, text_key=stored[batch.pipeline_text])).rowcount != 1:
                raise batch_exists(batch.id)
            for index, cell in enumerate(cells):
                text = cell.pipeline_text
                if text not in stored:  # cells share their batch's text (one dict lookup)
                    stored[text] = store_text(conn, text, cell.step_ids)
                insert_run(conn, dataclasses.replace(cell, batch_id=batch.id, cell=index), now,
                           owner, ttl, text_key=stored[text])
            return read_batch(conn, batch.id), read_runs(conn, "batch_id = ?", (batch.id,),
                                                         "cell", None)

        return await self._run(insert, write=True)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        return await self._run(lambda conn: read_batch(conn, batch_id), write=False)

    async def list_batches(self, *, limit: int = 50) -> list[BatchRecord]:
        def select(conn: sqlite3.Connection) -> list[BatchRecord]:
            rows = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at "
                                "DESC, id DESC LIMIT ?", (limit,)).fetchall()
            texts = stored_texts(conn, (row["pipeline_hash"] for row in rows))
            return [batch_record(row, texts) for row in rows]

        return await self._run(select, write=False)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._run(lambda conn: read_run(conn, run_id), write=False)

    async def list_runs(self, *, limit: int | None = 50, batch_id: str | None = None,
                        schedule_id: str | None = None,
                        statuses: Collection[RunStatus] | None = None,
                        pipeline: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[RunRecord]:
        where, params, order = run_filter(batch_id=batch_id, schedule_id=schedule_id,
                                          statuses=statuses, pipeline=pipeline, since=since,
                                          until=until)

        def select(conn: sqlite3.Connection) -> list[RunRecord]:
            return read_runs(conn, where, tuple(params), order, limit)

        return await self._run(select, write=False)

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        def select(conn: sqlite3.Connection) -> dict[str, StepRecord]:
            rows = conn.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? "
                                "ORDER BY started_at IS NULL, started_at, step_id",
                                (run_id,)).fetchall()
            return {row["step_id"]: step_record(row) for row in rows}

        return await self._run(select, write=False)

    async def get_events(self, run_id: str, *, after: int = 0, before: int | None = None,
                         limit: int | None = None, newest: bool = False) -> list[EventRecord]:
        def select(conn: sqlite3.Connection) -> list[EventRecord]:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND seq > ? AND seq < ? "
                f"ORDER BY seq {'DESC' if newest else ''} LIMIT ?",
                (run_id, after, EVENTS_END if before is None else before,
                 -1 if limit is None else limit),
            ).fetchall()
            records = [event_record(row) for row in rows]
            return records[::-1] if newest else records

        return await self._run(select, write=False)

    async def get_metrics(self, run_id: str) -> list[MetricPoint]:
        def select(conn: sqlite3.Connection) -> list[MetricPoint]:
            rows = conn.execute(f"SELECT {METRIC_COLUMNS} FROM metric_points WHERE run_id = ? "
                                f"ORDER BY {METRIC_ORDER}", (run_id,)).fetchall()
            return [metric_record(row) for row in rows]

        return await self._run(select, write=False)

    # -- leases ------------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, *, ttl: float, max_recoveries: int,
                            dead_owners: Collection[str] = (), force: bool = False) -> Lease:
        now = self.clock()

        def acquire(conn: sqlite3.Connection) -> Lease | RunStranded:
            run = read_run(conn, run_id)
            check_lease_free(run, owner, now=now, dead_owners=dead_owners)
            return take_lease_row(conn, run, owner, now=now, ttl=ttl,
                               max_recoveries=max_recoveries, force=force)

        result = await self._run(acquire, write=True)
        if isinstance(result, RunStranded):
            raise result
        return result

    async def claim_runs(self, owner: str, *, limit: int, ttl: float, max_recoveries: int,
                         dead_owners: Collection[str] = ()) -> list[Lease]:
        now = self.clock()
        dead = list(dead_owners)
        where = CLAIMABLE
        params: tuple[Any, ...] = (now, now - CANCEL_RETRY_AFTER)
        if dead:
            where = CLAIMABLE.replace(
                "lease_expires_at <= ?",
                f"lease_expires_at <= ? OR lease_owner IN ({','.join('?' * len(dead))})")
            params = (now, *dead, now - CANCEL_RETRY_AFTER)

        def claim(conn: sqlite3.Connection) -> list[Lease]:
            candidates = read_runs(conn, where, params, "created_at, id", limit)
            leases = []
            for run in candidates:
                taken = take_lease_row(conn, run, owner, now=now, ttl=ttl,
                                    max_recoveries=max_recoveries, force=False)
                if isinstance(taken, Lease):
                    leases.append(taken)
            return leases

        return await self._run(claim, write=True)

    async def lease_owners(self) -> set[str]:
        now = self.clock()

        def select(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT "
                                "NULL AND lease_expires_at > ?", (now,)).fetchall()
            return {row[0] for row in rows}

        return await self._run(select, write=False)

    async def renew_leases(self, owner: str, *, ttl: float) -> set[str]:
        expires = self.clock() + ttl

        def renew(conn: sqlite3.Connection) -> set[str]:
            conn.execute("UPDATE slots SET expires_at = ? WHERE owner = ?", (expires, owner))
            rows = conn.execute("UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? "
                                "RETURNING id", (expires, owner)).fetchall()
            return {row[0] for row in rows}

        return await self._run(renew, write=True)

    async def release_lease(self, lease: Lease) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL "
                         "WHERE id = ? AND lease_owner = ? AND lease_generation = ?",
                         (lease.run_id, lease.owner, lease.generation))

        await self._run(release, write=True)

    # -- cancellation ------------------------------------------------------------------------

    async def request_cancel(self, run_ids: Collection[str]) -> list[RunRecord]:
        now = self.clock()
        ids = list(run_ids)

        def request(conn: sqlite3.Connection) -> list[RunRecord]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"UPDATE runs SET cancel_requested_at = coalesce(cancel_requested_at, ?) "
                f"WHERE id IN ({marks}) AND status NOT IN (?, ?) RETURNING id",
                (now, *ids, RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value)).fetchall()
            marked = [row[0] for row in rows]
            for run_id in marked:
                insert_events(conn, run_id, now, [NewEvent("cancel_requested")])
            return [read_run(conn, run_id) for run_id in marked]

        return await self._run(request, write=True) if ids else []

    async def cancel_requests(self, owner: str) -> set[str]:
        def select(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT id FROM runs WHERE lease_owner = ? AND "
                                "cancel_requested_at IS NOT NULL AND status NOT IN (?, ?)",
                                (owner, RunStatus.CANCELLED.value,
                                 RunStatus.SUCCEEDED.value)).fetchall()
            return {row[0] for row in rows}

        return await self._run(select, write=False)

    # -- concurrency slots -------------------------------------------------------------------

    async def acquire_slots(self, key: str, limit: int, holders: Sequence[tuple[str, str]], *,
                            owner: str, ttl: float) -> list[str]:
        now = self.clock()

        def acquire(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM slots WHERE key = ? AND expires_at <= ?", (key, now))
            held = [row[0] for row in conn.execute("SELECT holder FROM slots WHERE key = ?",
                                                   (key,))]
            grants = slot_grants(held, holders, limit)
            conn.executemany(MOVE_SLOT, [(owner, now + ttl, key, holder)
                                         for holder, _, kept in grants if kept])
            conn.executemany(INSERT_SLOT, [(key, holder, run_id, owner, now, now + ttl)
                                           for holder, run_id, kept in grants if not kept])
            return [holder for holder, _, _ in grants]

        return await self._run(acquire, write=True) if holders else []

    async def release_slot(self, key: str, holder: str, *, owner: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM slots WHERE key = ? AND holder = ? AND owner = ?",
                         (key, holder, owner))

        await self._run(release, write=True)

    # -- schedules ---------------------------------------------------------------------------

    async def sync_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        now = self.clock()

        def upsert(conn: sqlite3.Connection) -> ScheduleEntry:
            conn.execute(UPSERT_SCHEDULE, schedule_values(entry, now))
            row = conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?",
                               (entry.id,)).fetchone()
            return schedule_record(row)

        return await self._run(upsert, write=True)

    async def list_schedules(self) -> list[ScheduleEntry]:
        def select(conn: sqlite3.Connection) -> list[ScheduleEntry]:
            rows = conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id")
            return [schedule_record(row) for row in rows]

        return await self._run(select, write=False)

    async def pause_schedule(self, schedule_id: str, paused: bool) -> ScheduleEntry:
        now = self.clock()

        def pause(conn: sqlite3.Connection) -> ScheduleEntry:
            conn.execute(PAUSE_SCHEDULE, pause_values(schedule_id, paused, now))
            row = conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?",
                               (schedule_id,)).fetchone()
            if row is None:
                raise no_such_schedule(schedule_id)
            return schedule_record(row)

        return await self._run(pause, write=True)

    async def advance_schedule(self, schedule_id: str, expected: float | None,
                               last_fire: float) -> bool:
        def advance(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("UPDATE schedules SET last_fire = ? WHERE id = ? AND "
                                  "last_fire IS ?", (last_fire, schedule_id, expected))
            return cursor.rowcount == 1

        return await self._run(advance, write=True)

    # -- the model registry ------------------------------------------------------------------

    async def record_model(self, entry: ModelEntry) -> ModelEntry:
        stored = dataclasses.replace(entry, recorded_at=self.clock())

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT_MODEL, model_row(stored))

        await self._run(upsert, write=True)
        return stored

    async def list_models(self, *, limit: int = 100) -> list[ModelEntry]:
        def select(conn: sqlite3.Connection) -> list[ModelEntry]:
            rows = conn.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY recorded_at "
                                "DESC LIMIT ?", (limit,)).fetchall()
            return [model_record(row) for row in rows]

        return await self._run(select, write=False)

    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        at = self.clock()

        def insert(conn: sqlite3.Connection) -> AliasMove | None:
            cursor = conn.execute(MOVE_ALIAS, move_alias_values(move, at))
            if cursor.rowcount != 1:
                return None
            return dataclasses.replace(move, moved_at=at, seq=int(cursor.lastrowid or 0))

        return await self._run(insert, write=True)

    async def aliases(self) -> list[AliasMove]:
        return await self._alias_moves(CURRENT_ALIASES, ())

    async def alias_history(self, *, alias: str | None = None,
                            limit: int = 100) -> list[AliasMove]:
        return await self._alias_moves(*((ALIAS_HISTORY, (limit,)) if alias is None else
                                         (ALIAS_HISTORY_OF, (alias, limit))))

    async def _alias_moves(self, statement: str, values: tuple[Any, ...]) -> list[AliasMove]:
        def select(conn: sqlite3.Connection) -> list[AliasMove]:
            return [alias_record(row) for row in conn.execute(statement, values).fetchall()]

        return await self._run(select, write=False)

    async def get_model(self, name: str) -> ModelEntry | None:
        def select(conn: sqlite3.Connection) -> ModelEntry | None:
            row = conn.execute(MODEL_NAMED, (name,)).fetchone()
            return None if row is None else model_record(row)

        return await self._run(select, write=False)

    # -- moving a history between databases -------------------------------------------------

    async def export_history(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        def export(conn: sqlite3.Connection) -> None:  # one read transaction: one snapshot
            for table, columns in HISTORY.items():
                order = {"events": "seq", "metric_points": METRIC_ORDER,
                         "steps": "run_id, step_id"}.get(table, "rowid")
                for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table} "
                                        f"ORDER BY {order}"):
                    emit(table, dict(zip(columns, tuple(row), strict=True)))

        await self._run(export, write=False)

    async def import_history(self, rows: Iterable[HistoryRow], *, source: str) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            for line, table, row in rows:
                statement, columns = IMPORTS[table]
                values = [row[c] for c in columns]
                if table == "events":  # numbered on here, as every event is
                    statement = INSERT_NUMBERED
                    values.insert(0, conn.execute(NUMBER_EVENTS, (1,)).fetchone()[0])
                try:
                    conn.execute(statement, values)
                except sqlite3.IntegrityError as exc:
                    msg = (f"{source}:{line}: {refused(table, row, exc)}; nothing was "
                           "imported")
                    raise StateStoreInvalid(msg) from None

        await self._run(insert, write=True)

    # -- fenced writes -----------------------------------------------------------------------

    async def commit(self, lease: Lease, *, run: RunUpdate | None = None,
                     steps: Sequence[StepRecord] = (), events: Sequence[NewEvent] = (),
                     metrics: Sequence[MetricPoint] = ()) -> None:
        now = self.clock()

        def write(conn: sqlite3.Connection) -> None:
            fence = (lease.run_id, lease.owner, lease.generation)
            if run is None:
                # A read is enough to fence: BEGIN IMMEDIATE holds the write lock, so the lease
                # cannot change before COMMIT. (An UPDATE would rewrite the run's row, pipeline
                # text and all, on every step: measured 20 µs or more per commit.)
                held = conn.execute("SELECT count(*) FROM runs WHERE id = ? AND lease_owner = ? "
                                    "AND lease_generation = ?", fence).fetchone()[0]
            else:
                text_key = (None if run.pipeline_text is None
                             else store_text(conn, run.pipeline_text, run.step_ids))
                cursor = conn.execute(UPDATE_RUN, update_values(lease, run, now,
                                                                text_key=text_key))
                held = cursor.rowcount
            if held != 1:
                raise lease_lost(lease)
            if steps:
                conn.executemany(UPSERT_STEP, [step_row(lease.run_id, s) for s in steps])
            insert_events(conn, lease.run_id, now, events)
            if metrics:
                conn.executemany(UPSERT_METRIC, [metric_row(lease.run_id, point, now)
                                                 for point in metrics])

        await self._run(write, write=True)


