"""The embedded state store: one SQLite file in WAL mode.

Why statements usually run on the event loop: measured on the 2-core machines this project
targets, handing a statement to a worker thread costs ~150 µs, while a whole WAL commit at
`synchronous=NORMAL` costs ~25 µs. So a transaction first runs inline on a connection whose busy
timeout is zero; only when another process holds the write lock (SQLITE_BUSY), or when
durability is `machine` (every commit waits for an fsync), does it go to a worker thread on a
second connection that waits for the lock. See `bench/engine_overhead.py`.

Durability: `process` (synchronous=NORMAL) survives a killed process, `machine` (FULL) also an
OS crash or power cut, `none` (OFF) survives nothing and exists for benchmarks.

(Over 400 lines: the whole contract's SQL for one dialect, every method a transaction on the
same two connections; the decisions are in `policy`, the records in `records`.)
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from orchestrator.errors import (
    RunStranded,
    StateStoreInvalid,
    StoreUnavailable,
)
from orchestrator.sqlite_wal import switch_to_wal
from orchestrator.store.base import StateStore
from orchestrator.store.policy import (
    Stranded,
    batch_exists,
    check_lease_free,
    creation_events,
    lease_lost,
    no_such_batch,
    no_such_run,
    no_such_schedule,
    run_exists,
    slot_grants,
    take_lease,
)
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
from orchestrator.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    NEEDS_EXECUTOR,
    SCHEMA_VERSION,
)
from orchestrator.store.statements import (
    INSERT_BATCH,
    INSERT_RUN,
    INSERT_SLOT,
    INSERT_TEXT,
    MOVE_SLOT,
    PAUSE_SCHEDULE,
    STRAND_RUN,
    TAKE_LEASE,
    UPDATE_RUN,
    UPSERT_METRIC,
    UPSERT_MODEL,
    UPSERT_SCHEDULE,
    UPSERT_STEP,
    batch_values,
    event_values,
    pause_values,
    run_filter,
    run_values,
    schedule_values,
    update_values,
)
from orchestrator.store.transfer import HISTORY, IMPORTS, HistoryRow, row_name

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")

_SYNCHRONOUS = {"process": "NORMAL", "machine": "FULL", "none": "OFF"}
CLAIMABLE = (
    f"{NEEDS_EXECUTOR} AND (lease_owner IS NULL OR lease_expires_at <= ?) AND "
    "(finished_at IS NULL OR finished_at <= cancel_requested_at OR finished_at <= ?)"
)
"""What `claim_runs` takes (parameters: now, now - CANCEL_RETRY_AFTER): `policy.claimable` in
SQL, repeating NEEDS_EXECUTOR's text so the partial index serves it (the contract suite checks
the two agree)."""
def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/state.db` is relative to the current directory; `sqlite:////abs` is not."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        msg = f"state_url {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute.db"
        raise StateStoreInvalid(msg)
    return Path(url[len(prefix):]).expanduser()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SQLiteStore(StateStore):
    """`StateStore` on one SQLite file; see the module docstring for how statements are run."""

    def __init__(self, url: str, *, durability: str = "process", busy_timeout: float = 10.0,
                 clock: Clock | None = None, read_only: bool = False) -> None:
        super().__init__(url, read_only=read_only, **({"clock": clock} if clock else {}))
        if durability not in _SYNCHRONOUS:
            msg = f"durability {durability!r}: expected one of {', '.join(_SYNCHRONOUS)}"
            raise StateStoreInvalid(msg)
        self.path = sqlite_path(url)
        self._durability = durability
        self._busy_timeout = busy_timeout
        self._inline: sqlite3.Connection | None = None
        self._threaded: sqlite3.Connection | None = None
        self._thread_limiter = anyio.CapacityLimiter(1)

    # -- opening, checking and migrating the file -------------------------------------------

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row  # columns read by name, never by position
        conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self._durability]}")
        return conn

    def _open_sync(self) -> None:
        where = self.path
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the state directory {where.parent}: {exc.strerror or exc}"
            raise StateStoreInvalid(msg) from None
        if where.exists() and not where.is_file():
            msg = f"state database {where} is not a file"
            raise StateStoreInvalid(msg)
        try:
            conn = self._connect(self._busy_timeout)
            self._prepare(conn)
            self._threaded = conn
            self._inline = self._connect(0)
            if self.read_only:  # after the schema is in place: from now on, reads only
                for opened in (self._threaded, self._inline):
                    opened.execute("PRAGMA query_only = ON")
        except sqlite3.OperationalError as exc:
            raise (self._unavailable() if _is_busy(exc) else self._invalid(exc)) from None
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
        elif self.read_only and "readonly" in text:
            why = "was opened to be read only (the web view without --allow-actions)"
        elif "readonly" in text or "unable to open" in text or "disk I/O" in text:
            why = f"cannot be written ({text})"
        else:
            why = f"cannot be used: {text}"
        return StateStoreInvalid(f"state database {self.path} {why}")

    def _check_ours(self, conn: sqlite3.Connection) -> int:
        """The file's schema version; raises if the file is foreign or from a newer version."""
        # One statement, so one snapshot: read apart, another process's migration could
        # commit in between and make a half-read new database look like someone else's.
        app_id, version, tables = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version), "
            "(SELECT count(*) FROM sqlite_master)").fetchone()
        if app_id != APPLICATION_ID and (app_id != 0 or tables or version):
            msg = (f"state database {self.path} belongs to another application (not an "
                   "orchestrator state database); it was left untouched")
            raise StateStoreInvalid(msg)
        if version > SCHEMA_VERSION:
            msg = (f"state database {self.path} was written by a newer orchestrator (schema "
                   f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade orchestrator")
            raise StateStoreInvalid(msg)
        return int(version)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Checked once before anything is written (a foreign file is never switched to WAL),
        # and again under the write lock: several processes opening a new database at once
        # all see version 0 at first, and only the first to take the lock migrates it.
        self._check_ours(conn)
        if switch_to_wal(conn, timeout=self._busy_timeout) != "wal":
            msg = f"state database {self.path}: cannot switch it to WAL mode"
            raise StateStoreInvalid(msg)
        conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable
        try:
            version = self._check_ours(conn)
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            self.schema_change = (version, SCHEMA_VERSION)
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _open(self) -> None:
        await anyio.to_thread.run_sync(self._open_sync)

    async def _close(self) -> None:
        for conn in (self._inline, self._threaded):
            if conn is not None:
                conn.close()
        self._inline = self._threaded = None

    # -- running transactions ---------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `fn` in a transaction: inline when the lock is free, else on a worker thread."""
        self._check_open()
        assert self._inline is not None and self._threaded is not None
        if self._durability != "machine" or not write:
            try:
                return self._transaction(self._inline, fn, write=write)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._invalid(exc) from None
            except sqlite3.DatabaseError as exc:  # e.g. corruption found mid-run
                raise self._invalid(exc) from None
        threaded = self._threaded
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._transaction(threaded, fn, write=write),
                limiter=self._thread_limiter,
            )
        except sqlite3.OperationalError as exc:
            raise (self._unavailable() if _is_busy(exc) else self._invalid(exc)) from None
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

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, run: NewRun, *, owner: str | None = None,
                         ttl: float = 0.0) -> RunRecord:
        now = self.clock()

        def insert(conn: sqlite3.Connection) -> RunRecord:
            _insert_run(conn, run, now, owner, ttl,
                        text_key=_store_text(conn, run.pipeline_text, run.step_ids))
            return _get_run(conn, run.id)

        return await self._run(insert, write=True)

    async def create_batch(self, batch: NewBatch, cells: Sequence[NewRun], *,
                           owner: str | None = None, ttl: float = 0.0
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        now = self.clock()

        def insert(conn: sqlite3.Connection) -> tuple[BatchRecord, list[RunRecord]]:
            stored = {batch.pipeline_text: _store_text(conn, batch.pipeline_text,
                                                       batch.step_ids)}
            if conn.execute(INSERT_BATCH, batch_values(
                    batch, len(cells), now, text_key=stored[batch.pipeline_text])).rowcount != 1:
                raise batch_exists(batch.id)
            for index, cell in enumerate(cells):
                text = cell.pipeline_text
                if text not in stored:  # cells share their batch's text (one dict lookup)
                    stored[text] = _store_text(conn, text, cell.step_ids)
                _insert_run(conn, dataclasses.replace(cell, batch_id=batch.id, cell=index), now,
                            owner, ttl, text_key=stored[text])
            return _get_batch(conn, batch.id), _select_runs(conn, "batch_id = ?", (batch.id,),
                                                            "cell", None)

        return await self._run(insert, write=True)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        return await self._run(lambda conn: _get_batch(conn, batch_id), write=False)

    async def list_batches(self, *, limit: int = 50) -> list[BatchRecord]:
        def select(conn: sqlite3.Connection) -> list[BatchRecord]:
            rows = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at "
                                "DESC, id DESC LIMIT ?", (limit,)).fetchall()
            texts = _texts(conn, (row["pipeline_hash"] for row in rows))
            return [batch_record(row, texts) for row in rows]

        return await self._run(select, write=False)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._run(lambda conn: _get_run(conn, run_id), write=False)

    async def list_runs(self, *, limit: int | None = 50, batch_id: str | None = None,
                        schedule_id: str | None = None,
                        statuses: Collection[RunStatus] | None = None,
                        pipeline: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[RunRecord]:
        where, params, order = run_filter(batch_id=batch_id, schedule_id=schedule_id,
                                          statuses=statuses, pipeline=pipeline, since=since,
                                          until=until)

        def select(conn: sqlite3.Connection) -> list[RunRecord]:
            return _select_runs(conn, where, tuple(params), order, limit)

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
            run = _get_run(conn, run_id)
            check_lease_free(run, owner, now=now, dead_owners=dead_owners)
            return _take_lease(conn, run, owner, now=now, ttl=ttl,
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
            candidates = _select_runs(conn, where, params, "created_at, id", limit)
            leases = []
            for run in candidates:
                taken = _take_lease(conn, run, owner, now=now, ttl=ttl,
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
                _insert_events(conn, run_id, now, [NewEvent("cancel_requested")])
            return [_get_run(conn, run_id) for run_id in marked]

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
                    statement = _INSERT_NUMBERED
                    values.insert(0, conn.execute(_NUMBER_EVENTS, (1,)).fetchone()[0])
                try:
                    conn.execute(statement, values)
                except sqlite3.IntegrityError as exc:
                    msg = (f"{source}:{line}: {_refused(table, row, exc)}; nothing was "
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
                             else _store_text(conn, run.pipeline_text, run.step_ids))
                cursor = conn.execute(UPDATE_RUN, update_values(lease, run, now,
                                                                text_key=text_key))
                held = cursor.rowcount
            if held != 1:
                raise lease_lost(lease)
            if steps:
                conn.executemany(UPSERT_STEP, [step_row(lease.run_id, s) for s in steps])
            _insert_events(conn, lease.run_id, now, events)
            if metrics:
                conn.executemany(UPSERT_METRIC, [metric_row(lease.run_id, point, now)
                                                 for point in metrics])

        await self._run(write, write=True)


def _refused(table: str, row: Mapping[str, Any], exc: sqlite3.IntegrityError) -> str:
    if "UNIQUE" not in str(exc):
        return f"a {table} row cannot be stored ({exc})"
    return f"{row_name(table, row)} is already in this database"



# -- rows <-> records ------------------------------------------------------------------------

def _get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise no_such_run(run_id)
    return run_record(row, _texts(conn, [row["pipeline_hash"]]))


def _select_runs(conn: sqlite3.Connection, where: str, params: tuple[Any, ...], order: str,
                 limit: int | None) -> list[RunRecord]:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY {order} "
                        "LIMIT ?", (*params, -1 if limit is None else limit)).fetchall()
    texts = _texts(conn, (row["pipeline_hash"] for row in rows))
    return [run_record(row, texts) for row in rows]


def _texts(conn: sqlite3.Connection, hashes: Iterable[str | None]) -> dict[str, StoredText]:
    """The texts stored under `hashes` (None: a row from before texts were shared)."""
    found, missing = SHARED_TEXTS.lookup(hashes)
    fetched: dict[str, StoredText] = {}
    for start in range(0, len(missing), 500):
        chunk = missing[start:start + 500]
        fetched.update((key, StoredText.of(text, steps)) for key, text, steps in conn.execute(
            "SELECT hash, text, steps FROM pipeline_texts WHERE hash IN "
            f"({','.join('?' * len(chunk))})", chunk).fetchall())
    SHARED_TEXTS.remember(fetched)
    return found | fetched


def _store_text(conn: sqlite3.Connection, text: str, steps: Sequence[str] | None) -> str:
    """Store `text` (with its step order) once (a no-op when it is there); its hash."""
    key = text_hash(text)
    conn.execute(INSERT_TEXT, (key, text, steps_json(steps)))
    SHARED_TEXTS.stored(key, text, steps)
    return key


def _insert_run(conn: sqlite3.Connection, run: NewRun, now: float, owner: str | None,
                ttl: float, *, text_key: str) -> None:
    events = creation_events(run, owner)
    if conn.execute(INSERT_RUN, run_values(run, now, owner, ttl,
                                           text_key=text_key)).rowcount != 1:
        raise run_exists(run.id)
    _insert_events(conn, run.id, now, events)


def _take_lease(conn: sqlite3.Connection, run: RunRecord, owner: str, *, now: float,
                ttl: float, max_recoveries: int, force: bool) -> Lease | RunStranded:
    """Write what `policy.take_lease` decides: the new lease, or the run parked as stranded
    (returned, not raised, so that the parking is committed)."""
    decided = take_lease(run, owner, now=now, ttl=ttl, max_recoveries=max_recoveries,
                         force=force)
    if isinstance(decided, Stranded):
        conn.execute(STRAND_RUN, (RunStatus.STRANDED.value, decided.recoveries, now, run.id))
        _insert_events(conn, run.id, now, [decided.event])
        return decided.error
    lease = decided.lease
    conn.execute(TAKE_LEASE, (owner, lease.generation, lease.expires_at, decided.recoveries,
                              run.id))
    _insert_events(conn, run.id, now, [decided.event])
    return lease


def _get_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRecord:
    row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?",
                       (batch_id,)).fetchone()
    if row is None:
        raise no_such_batch(batch_id)
    return batch_record(row, _texts(conn, [row["pipeline_hash"]]))


_NUMBER_EVENTS = "UPDATE event_seq SET last = last + ? RETURNING last"
_INSERT_NUMBERED = ("INSERT INTO events (seq, run_id, ts, kind, step_id, attempt, data) "
                    "VALUES (?,?,?,?,?,?,?)")


def _insert_events(conn: sqlite3.Connection, run_id: str, now: float,
                   events: Sequence[NewEvent]) -> None:
    """Add `events` to the run's log, numbered on from the database's last event (the
    write transaction holds the numbers: nobody else can draw them meanwhile)."""
    if events:
        last = conn.execute(_NUMBER_EVENTS, (len(events),)).fetchone()[0]
        first = last - len(events) + 1
        conn.executemany(_INSERT_NUMBERED, [(first + n, *values) for n, values in
                                            enumerate(event_values(run_id, now, events))])
