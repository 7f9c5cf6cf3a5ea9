"""SQLite's reads and writes that several statements of the store share: a run or a batch
read with its pipeline text, texts stored once, a run inserted, a lease taken, events numbered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.errors import RunStranded
from orchestrator.store.policy import (
    Stranded,
    creation_events,
    no_such_batch,
    no_such_run,
    run_exists,
    take_lease,
)
from orchestrator.store.records import (
    BatchRecord,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    text_hash,
)
from orchestrator.store.rows import (
    BATCH_COLUMNS,
    RUN_COLUMNS,
    SHARED_TEXTS,
    StoredText,
    batch_record,
    run_record,
    steps_json,
)
from orchestrator.store.statements import (
    INSERT_RUN,
    INSERT_TEXT,
    STRAND_RUN,
    TAKE_LEASE,
    event_values,
    run_values,
)
from orchestrator.store.transfer import row_name

__all__ = [
    "INSERT_NUMBERED",
    "NUMBER_EVENTS",
    "insert_events",
    "insert_run",
    "read_batch",
    "read_run",
    "read_runs",
    "refused",
    "store_text",
    "stored_texts",
    "take_lease_row",
]


def refused(table: str, row: Mapping[str, Any], exc: sqlite3.IntegrityError) -> str:
    if "UNIQUE" not in str(exc):
        return f"a {table} row cannot be stored ({exc})"
    return f"{row_name(table, row)} is already in this database"


def read_run(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise no_such_run(run_id)
    return run_record(row, stored_texts(conn, [row["pipeline_hash"]]))


def read_runs(conn: sqlite3.Connection, where: str, params: tuple[Any, ...], order: str,
              limit: int | None) -> list[RunRecord]:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY {order} "
                        "LIMIT ?", (*params, -1 if limit is None else limit)).fetchall()
    texts = stored_texts(conn, (row["pipeline_hash"] for row in rows))
    return [run_record(row, texts) for row in rows]


def stored_texts(conn: sqlite3.Connection, hashes: Iterable[str | None]
                 ) -> dict[str, StoredText]:
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


def store_text(conn: sqlite3.Connection, text: str, steps: Sequence[str] | None) -> str:
    """Store `text` (with its step order) once (a no-op when it is there); its hash."""
    key = text_hash(text)
    conn.execute(INSERT_TEXT, (key, text, steps_json(steps)))
    SHARED_TEXTS.stored(key, text, steps)
    return key


def insert_run(conn: sqlite3.Connection, run: NewRun, now: float, owner: str | None,
                ttl: float, *, text_key: str) -> None:
    events = creation_events(run, owner)
    if conn.execute(INSERT_RUN, run_values(run, now, owner, ttl,
                                           text_key=text_key)).rowcount != 1:
        raise run_exists(run.id)
    insert_events(conn, run.id, now, events)


def take_lease_row(conn: sqlite3.Connection, run: RunRecord, owner: str, *, now: float,
                   ttl: float, max_recoveries: int, force: bool) -> Lease | RunStranded:
    """Write what `policy.take_lease` decides: the new lease, or the run parked as stranded
    (returned, not raised, so that the parking is committed)."""
    decided = take_lease(run, owner, now=now, ttl=ttl, max_recoveries=max_recoveries,
                         force=force)
    if isinstance(decided, Stranded):
        conn.execute(STRAND_RUN, (RunStatus.STRANDED.value, decided.recoveries, now, run.id))
        insert_events(conn, run.id, now, [decided.event])
        return decided.error
    lease = decided.lease
    conn.execute(TAKE_LEASE, (owner, lease.generation, lease.expires_at, decided.recoveries,
                              run.id))
    insert_events(conn, run.id, now, [decided.event])
    return lease


def read_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRecord:
    row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?",
                       (batch_id,)).fetchone()
    if row is None:
        raise no_such_batch(batch_id)
    return batch_record(row, stored_texts(conn, [row["pipeline_hash"]]))


NUMBER_EVENTS = "UPDATE event_seq SET last = last + ? RETURNING last"
INSERT_NUMBERED = ("INSERT INTO events (seq, run_id, ts, kind, step_id, attempt, data) "
                    "VALUES (?,?,?,?,?,?,?)")


def insert_events(conn: sqlite3.Connection, run_id: str, now: float,
                   events: Sequence[NewEvent]) -> None:
    """Add `events` to the run's log, numbered on from the database's last event (the
    write transaction holds the numbers: nobody else can draw them meanwhile)."""
    if events:
        last = conn.execute(NUMBER_EVENTS, (len(events),)).fetchone()[0]
        first = last - len(events) + 1
        conn.executemany(INSERT_NUMBERED, [(first + n, *values) for n, values in
                                            enumerate(event_values(run_id, now, events))])
