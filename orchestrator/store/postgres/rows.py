"""PostgreSQL's reads and writes that several statements of the store share: a run or a
batch read with its pipeline text, texts stored once, a run inserted, a lease taken, events
appended (numbered by the database, in commit order: the run's row is locked first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
from orchestrator.store.postgres.connection import Cursor
from orchestrator.store.postgres.sql import (
    INSERT_EVENT,
    INSERT_RUN,
    INSERT_TEXT,
    STRAND_RUN,
    TAKE_LEASE,
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
from orchestrator.store.statements import event_values, run_values

__all__ = ["insert_events", "insert_run", "read_batch", "read_run", "read_runs", "store_text",
           "stored_texts", "take_lease_row"]


async def stored_texts(cur: Cursor, hashes: Iterable[str | None]) -> dict[str, StoredText]:
    """The texts stored under `hashes`, from the process's cache where it has them."""
    found, missing = SHARED_TEXTS.lookup(hashes)
    if not missing:
        return found
    await cur.execute("SELECT hash, text, steps FROM pipeline_texts WHERE hash = ANY(%s)",
                      (missing,))
    fetched = {row["hash"]: StoredText.of(row["text"], row["steps"])
               for row in await cur.fetchall()}
    SHARED_TEXTS.remember(fetched)
    return found | fetched


async def read_runs(cur: Cursor, where: str, params: Sequence[Any], order: str,
                    limit: int | None, *, lock: str = "") -> list[RunRecord]:
    await cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY {order} "
                      f"LIMIT %s {lock}", (*params, limit))
    rows = await cur.fetchall()
    texts = await stored_texts(cur, (row["pipeline_hash"] for row in rows))
    return [run_record(row, texts) for row in rows]


async def read_run(cur: Cursor, run_id: str, *, lock: str = "") -> RunRecord:
    found = await read_runs(cur, "id = %s", (run_id,), "id", 1, lock=lock)
    if not found:
        raise no_such_run(run_id)
    return found[0]


async def read_batch(cur: Cursor, batch_id: str) -> BatchRecord:
    await cur.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,))
    row = await cur.fetchone()
    if row is None:
        raise no_such_batch(batch_id)
    return batch_record(row, await stored_texts(cur, [row["pipeline_hash"]]))


async def store_text(cur: Cursor, text: str, steps: Sequence[str] | None) -> str:
    key = text_hash(text)
    await cur.execute(INSERT_TEXT, (key, text, steps_json(steps)))
    SHARED_TEXTS.stored(key, text, steps)
    return key


async def insert_events(cur: Cursor, run_id: str, now: float,
                        events: Sequence[NewEvent]) -> None:
    if events:
        await cur.executemany(INSERT_EVENT, event_values(run_id, now, events))


async def insert_run(cur: Cursor, run: NewRun, now: float, owner: str | None,
                     ttl: float, *, text_key: str) -> None:
    await cur.execute(INSERT_RUN, run_values(run, now, owner, ttl, text_key=text_key))
    if cur.rowcount != 1:
        raise run_exists(run.id)
    await insert_events(cur, run.id, now, creation_events(run, owner))


async def take_lease_row(cur: Cursor, run: RunRecord, owner: str, *, now: float,
                         ttl: float, max_recoveries: int, force: bool) -> Lease | RunStranded:
    """Write what `policy.take_lease` decides (the run's row is locked by the caller)."""
    decided = take_lease(run, owner, now=now, ttl=ttl, max_recoveries=max_recoveries,
                         force=force)
    if isinstance(decided, Stranded):
        await cur.execute(STRAND_RUN, (RunStatus.STRANDED.value, decided.recoveries, now,
                                       run.id))
        await insert_events(cur, run.id, now, [decided.event])
        return decided.error
    lease = decided.lease
    await cur.execute(TAKE_LEASE, (owner, lease.generation, lease.expires_at,
                                   decided.recoveries, run.id))
    await insert_events(cur, run.id, now, [decided.event])
    return lease
