"""SQLite specifics: refusing files that are not ours, untouched, and waiting out other writers."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from orchestrator.errors import StateStoreInvalid
from orchestrator.store.opening import open_store
from orchestrator.store.records import NewRun
from orchestrator.store.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION


async def open_fails(path: Path, match: str) -> None:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(StateStoreInvalid, match=match):
        async with open_store(f"sqlite:///{path}"):
            pass
    if before is not None:
        assert path.read_bytes() == before, "the refused file was modified"


async def test_corrupt_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database at all" * 100)
    await open_fails(path, "is not a SQLite database, or is corrupt; it was left untouched")


async def test_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    await open_fails(path, "belongs to another application")


async def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    await open_fails(path, rf"written by a newer orchestrator \(schema {SCHEMA_VERSION + 1};")


async def test_unwritable_location_is_refused(tmp_path: Path) -> None:
    """A state path under a regular file cannot be created (this also holds for root)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    await open_fails(blocker / "state.db", "cannot create the state directory")


async def test_bad_url_is_refused() -> None:
    with pytest.raises(StateStoreInvalid, match="unknown kind of store"):
        open_store("mysql://x")
    with pytest.raises(StateStoreInvalid, match=r"expected sqlite:///relative/path\.db"):
        open_store("sqlite://")


async def test_reopening_keeps_data_and_schema(tmp_path: Path) -> None:
    """A second open of an existing state file migrates nothing and sees the same runs."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with open_store(url) as store:
        await store.create_run(NewRun("r-1", "p", "/p.yaml", "t", {}))
    async with open_store(url) as store:
        assert (await store.get_run("r-1")).pipeline_name == "p"


async def test_writes_wait_for_another_writer(tmp_path: Path) -> None:
    """While another connection holds the write lock, a commit waits (in a thread) for it."""
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    async with open_store(url, busy_timeout=10) as store:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Event()

        def hold_then_release() -> None:
            release.wait(10)
            other.execute("COMMIT")

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, hold_then_release)
            with anyio.fail_after(10):
                async with anyio.create_task_group() as writers:
                    writers.start_soon(store.create_run, NewRun("r-1", "p", "/p", "t", {}))
                    # The loop stays free while the write waits: this task runs meanwhile.
                    await anyio.lowlevel.checkpoint()
                    release.set()
        other.close()
        assert (await store.get_run("r-1")).id == "r-1"


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A state file at schema `version`, as that version made it (the caller adds its rows,
    commits and closes)."""
    from orchestrator.store.sqlite.schema import MIGRATIONS

    conn = sqlite3.connect(path)
    for number in range(1, version + 1):
        for statement in MIGRATIONS[number]:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={version}")
    return conn


async def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A state file from schema 1 gets the model registry table, keeping its runs."""
    path = tmp_path / "state.db"
    conn = database_at(path, 1)
    conn.execute("INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, inputs, "
                 "status, created_at) VALUES ('r-1', 'p', '/p', 't', '{}', 'succeeded', 1)")
    conn.commit()
    conn.close()
    async with open_store(f"sqlite:///{path}") as store:
        old = await store.get_run("r-1")
        assert (old.pipeline_name, old.pipeline_text) == ("p", "t")  # its text stays inline
        assert await store.list_models() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


async def test_a_version_8_databases_events_and_steps_move_to_their_clustered_tables(
        tmp_path: Path) -> None:
    """Migration 9 keeps every event (its number too) and step; new events are numbered on
    from the last, whatever run they belong to."""
    from orchestrator.store.records import Lease, NewEvent, RunStatus, RunUpdate
    path = tmp_path / "state.db"
    conn = database_at(path, 8)
    conn.execute("INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, inputs, "
                 "status, created_at, lease_owner, lease_generation, lease_expires_at) VALUES "
                 "('r-1', 'p', '/p', 't', '{}', 'running', 1, 'me', 1, 1e12)")
    conn.executemany("INSERT INTO events (run_id, ts, kind, data) VALUES ('r-1', ?, ?, '{}')",
                     [(1.0, "run_created"), (2.0, "run_started")])
    conn.execute("INSERT INTO steps (run_id, step_id, status, attempt, outputs, checkpoint, "
                 "started_at) VALUES ('r-1', 'a', 'succeeded', 1, '{\"x\":1}', '{}', 5)")
    conn.commit()
    conn.close()
    async with open_store(f"sqlite:///{path}") as store:
        assert [(e.seq, e.kind) for e in await store.get_events("r-1")] == [
            (1, "run_created"), (2, "run_started")]
        assert (await store.get_steps("r-1"))["a"].outputs == {"x": 1}
        await store.commit(Lease("r-1", "me", 1, 1e12), run=RunUpdate(RunStatus.RUNNING),
                           events=[NewEvent("note"), NewEvent("note")])
        assert [e.seq for e in await store.get_events("r-1")] == [1, 2, 3, 4]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events_by_run'"
                        ).fetchone() == (0,)
    conn.close()


async def test_a_version_9_databases_empty_mappings_become_null(tmp_path: Path) -> None:
    """Migration 10 stores `{}` data and checkpoints as NULL, keeps what is not empty, and
    reads both back as before; what is written after stores NULL for empty too."""
    from orchestrator.store.records import Lease, NewEvent, RunStatus, RunUpdate
    path = tmp_path / "state.db"
    conn = database_at(path, 9)
    conn.execute("INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, inputs, "
                 "status, created_at, lease_owner, lease_generation, lease_expires_at) VALUES "
                 "('r-1', 'p', '/p', 't', '{}', 'running', 1, 'me', 1, 1e12)")
    conn.executemany("INSERT INTO events (run_id, seq, ts, kind, data) VALUES ('r-1', ?, ?, ?, ?)",
                     [(1, 1.0, "run_created", '{"path":"/p"}'), (2, 2.0, "run_started", "{}")])
    conn.execute("UPDATE event_seq SET last = 2")
    conn.executemany("INSERT INTO steps (run_id, step_id, status, attempt, checkpoint) VALUES "
                     "('r-1', ?, 'running', 1, ?)", [("a", "{}"), ("b", '{"job":"j-1"}')])
    conn.commit()
    conn.close()
    async with open_store(f"sqlite:///{path}") as store:
        assert [e.data for e in await store.get_events("r-1")] == [{"path": "/p"}, {}]
        steps = await store.get_steps("r-1")
        assert (steps["a"].checkpoint, steps["b"].checkpoint) == ({}, {"job": "j-1"})
        await store.commit(Lease("r-1", "me", 1, 1e12), run=RunUpdate(RunStatus.RUNNING),
                           events=[NewEvent("note")])
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT data FROM events ORDER BY seq").fetchall() == [
        ('{"path":"/p"}',), (None,), (None,)]
    assert conn.execute("SELECT checkpoint FROM steps ORDER BY step_id").fetchall() == [
        (None,), ('{"job":"j-1"}',)]
    conn.close()


async def test_a_batchs_pipeline_text_is_stored_once(tmp_path: Path) -> None:
    """2,000 cells of a 10 KB pipeline store its text once (20 MB inline before), and every
    record read back shares one string; a resumed run's new text is stored beside it."""
    from orchestrator.store.records import NewBatch, RunStatus, RunUpdate

    path = tmp_path / "state.db"
    text = "name: wide\n" + "# padding\n" * 1000
    async with open_store(f"sqlite:///{path}") as store:
        batch, runs = await store.create_batch(
            NewBatch("b-1", "wide", "/wide.yaml", text, {}),
            [NewRun(f"b-1.{i}", "wide", "/wide.yaml", text, {}) for i in range(2000)])
        again = await store.list_runs(batch_id="b-1", limit=None)
        assert batch.pipeline_text == text and (await store.get_batch("b-1")).pipeline_text == text
        assert {r.pipeline_text for r in runs + again} == {text}
        assert len({id(r.pipeline_text) for r in again}) == 1
        lease = await store.acquire_lease("b-1.0", "me", ttl=30, max_recoveries=3)
        await store.commit(lease, run=RunUpdate(RunStatus.RUNNING, pipeline_text=text + "#\n"))
        assert (await store.get_run("b-1.0")).pipeline_text == text + "#\n"
        assert (await store.get_run("b-1.1")).pipeline_text == text
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM pipeline_texts").fetchone() == (2,)
    assert conn.execute("SELECT max(length(pipeline_text)) FROM runs").fetchone() == (0,)
    conn.close()
    assert path.stat().st_size < 2 * 2**20


async def test_claims_read_only_runs_that_need_an_executor(tmp_path: Path) -> None:
    """A worker claims every second: its query must use the partial index, not scan the
    history of finished runs (43 ms at 50,000 runs without it)."""
    from orchestrator.store.sqlite.store import CLAIMABLE

    path = tmp_path / "state.db"
    async with open_store(f"sqlite:///{path}"):
        pass
    conn = sqlite3.connect(path)
    plan = conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM runs WHERE {CLAIMABLE} ORDER BY created_at, id "
        "LIMIT 5", (1.0, 0.0)).fetchall()
    conn.close()
    assert [row[3] for row in plan] == ["SCAN runs USING INDEX runs_needing_executor"]


async def test_a_lock_held_past_busy_timeout_is_unavailable_not_invalid(tmp_path: Path) -> None:
    """Another process holding the write lock longer than busy_timeout is a temporary
    trouble: StoreUnavailable (exit 75, try again), with nothing written, when writing and
    when opening; the store works once the lock is gone."""
    from orchestrator.errors import StoreUnavailable

    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    new = NewRun("r-1", "p", "/p.yaml", "name: p\n", {})
    async with open_store(url, busy_timeout=0.2) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match=r"locked by another process for longer "
                               r"than busy_timeout \(0.2s\); nothing was written") as caught:
                await store.create_run(new)
            assert caught.value.exit_code == 75
            with pytest.raises(StoreUnavailable, match="locked by another process"):
                async with open_store(url, busy_timeout=0.2):
                    pass
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await store.create_run(new)
        assert [run.id for run in await store.list_runs()] == ["r-1"]


@pytest.mark.parametrize(("code", "busy"), [(5, True), (6, True), (261, True), (517, True),
                                            (262, True), (11, False), (None, False)])
def test_a_lock_is_known_by_its_primary_code(code: int | None, busy: bool) -> None:
    """SQLite reports a lock with extended codes too (SQLITE_BUSY_RECOVERY, 261, when several
    processes open a new WAL file together): each is a lock to wait for, not a broken file
    (a flake of test_processes_opening_a_new_database_at_once_all_succeed)."""
    from orchestrator.store.sqlite.connection import is_busy

    error = sqlite3.OperationalError("database is locked")
    if code is not None:
        error.sqlite_errorcode = code
    assert is_busy(error) is busy
