"""The SQLite schema, as numbered migrations.

`MIGRATIONS[n]` brings a database from version n-1 to n. Never edit a released migration: add
the next one. The version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file
as ours, so a foreign database is refused instead of being written into.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestrator.errors import StateStoreInvalid
from orchestrator.sqlite_wal import switch_to_wal
from orchestrator.store.statements import NEEDS_EXECUTOR

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "check_ours", "migrate"]

APPLICATION_ID = 0x4F524348  # "ORCH"

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE runs (
            id               TEXT PRIMARY KEY,
            pipeline_name    TEXT NOT NULL,
            pipeline_path    TEXT NOT NULL,
            pipeline_text    TEXT NOT NULL,
            inputs           TEXT NOT NULL,
            status           TEXT NOT NULL,
            created_at       REAL NOT NULL,
            started_at       REAL,
            finished_at      REAL,
            error            TEXT,
            lease_owner      TEXT,
            lease_generation INTEGER NOT NULL DEFAULT 0,
            lease_expires_at REAL,
            recoveries       INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_lease_owner ON runs (lease_owner)",
        """
        CREATE TABLE steps (
            run_id      TEXT NOT NULL REFERENCES runs (id),
            step_id     TEXT NOT NULL,
            status      TEXT NOT NULL,
            attempt     INTEGER NOT NULL,
            outputs     TEXT,
            checkpoint  TEXT NOT NULL,
            error       TEXT,
            started_at  REAL,
            finished_at REAL,
            retry_at    REAL,
            config_hash TEXT,
            PRIMARY KEY (run_id, step_id)
        )
        """,
        """
        CREATE TABLE events (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id  TEXT NOT NULL REFERENCES runs (id),
            ts      REAL NOT NULL,
            kind    TEXT NOT NULL,
            step_id TEXT,
            attempt INTEGER,
            data    TEXT NOT NULL
        )
        """,
        "CREATE INDEX events_by_run ON events (run_id, seq)",
    ),
    2: (
        """
        CREATE TABLE models (
            name            TEXT PRIMARY KEY,
            run_id          TEXT NOT NULL,
            step_id         TEXT NOT NULL,
            pipeline_name   TEXT NOT NULL,
            provider        TEXT,
            base_model      TEXT,
            job_id          TEXT,
            training_file   TEXT,
            validation_file TEXT,
            hyperparameters TEXT NOT NULL,
            metrics         TEXT NOT NULL,
            tags            TEXT NOT NULL,
            recorded_at     REAL NOT NULL
        )
        """,
        "CREATE INDEX models_by_recorded ON models (recorded_at)",
    ),
    3: (
        "ALTER TABLE runs ADD COLUMN batch_id TEXT",
        "ALTER TABLE runs ADD COLUMN cell INTEGER",
        "ALTER TABLE runs ADD COLUMN matrix TEXT",
        "ALTER TABLE runs ADD COLUMN waiting_for TEXT",
        "ALTER TABLE runs ADD COLUMN cancel_requested_at REAL",
        "ALTER TABLE runs ADD COLUMN schedule_id TEXT",
        "ALTER TABLE runs ADD COLUMN scheduled_for REAL",
        "CREATE INDEX runs_by_batch ON runs (batch_id, cell)",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        "CREATE INDEX runs_by_schedule ON runs (schedule_id, scheduled_for)",
        "ALTER TABLE steps ADD COLUMN waiting_for TEXT",
        """
        CREATE TABLE batches (
            id            TEXT PRIMARY KEY,
            pipeline_name TEXT NOT NULL,
            pipeline_path TEXT NOT NULL,
            pipeline_text TEXT NOT NULL,
            inputs        TEXT NOT NULL,
            max_parallel  INTEGER,
            fail_fast     INTEGER NOT NULL,
            cells         INTEGER NOT NULL,
            created_at    REAL NOT NULL,
            schedule_id   TEXT,
            scheduled_for REAL
        )
        """,
        "CREATE INDEX batches_by_created ON batches (created_at)",
        """
        CREATE TABLE slots (
            key         TEXT NOT NULL,
            holder      TEXT NOT NULL,
            run_id      TEXT NOT NULL,
            owner       TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at  REAL NOT NULL,
            PRIMARY KEY (key, holder)
        )
        """,
        "CREATE INDEX slots_by_owner ON slots (owner)",
        """
        CREATE TABLE schedules (
            id            TEXT PRIMARY KEY,
            pipeline_name TEXT NOT NULL,
            pipeline_path TEXT NOT NULL,
            cron          TEXT NOT NULL,
            timezone      TEXT NOT NULL,
            last_fire     REAL,
            updated_at    REAL NOT NULL
        )
        """,
    ),
    4: (
        # What a worker's claim looks for, every poll: a handful of rows among a history of
        # finished runs. Without it a claim scans them all (43 ms at 50,000 runs).
        f"CREATE INDEX runs_needing_executor ON runs (created_at, id) WHERE {NEEDS_EXECUTOR}",
    ),
    5: (
        # The provider a run is bound to (kind and base URL or local data folder; never a
        # key). NULL for runs stored before: they keep following the executing process's.
        "ALTER TABLE runs ADD COLUMN provider TEXT",
        "ALTER TABLE runs ADD COLUMN provider_url TEXT",
    ),
    6: (
        # A pipeline's text, stored once however many runs share it (a batch's cells, a
        # schedule's fires), by its SHA-256; 10,000 cells of an 11 KB file made 127 MB before.
        # Runs and batches stored before keep their text inline (pipeline_hash NULL).
        "CREATE TABLE pipeline_texts (hash TEXT PRIMARY KEY, text TEXT NOT NULL)",
        "ALTER TABLE runs ADD COLUMN pipeline_hash TEXT",
        "ALTER TABLE batches ADD COLUMN pipeline_hash TEXT",
    ),
    7: (
        # A fine-tune job's figures per training step, kept by the step following the job
        # (`metrics RUN`, the loss curves). One row per training step, the figures as columns:
        # a 1,000-step job keeps 1,000 short rows.
        """
        CREATE TABLE metric_points (
            run_id        TEXT NOT NULL,
            step_id       TEXT NOT NULL,
            job_id        TEXT NOT NULL,
            train_step    INTEGER NOT NULL,
            epoch         REAL,
            train_loss    REAL,
            eval_loss     REAL,
            learning_rate REAL,
            tokens        INTEGER,
            ts            REAL NOT NULL,
            PRIMARY KEY (run_id, step_id, job_id, train_step)
        ) WITHOUT ROWID
        """,
    ),
    8: (
        # A pipeline's step ids in its order, stored with its text (once, like it): `show`
        # lists a run's steps by it instead of parsing the text again (a 10,000-step
        # pipeline took seconds). NULL for texts stored before: those are parsed.
        "ALTER TABLE pipeline_texts ADD COLUMN steps TEXT",
    ),
    9: (
        # Events clustered by run: the table is its own index on (run_id, seq), where a rowid
        # table kept every event twice over (the row, and run_id and seq again in
        # events_by_run: 77 of a no-op step's 386 bytes). The numbers stay one sequence for
        # the whole database, drawn from `event_seq` a commit at a time.
        """
        CREATE TABLE events_by_run_seq (
            run_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            ts      REAL NOT NULL,
            kind    TEXT NOT NULL,
            step_id TEXT,
            attempt INTEGER,
            data    TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID
        """,
        "INSERT INTO events_by_run_seq SELECT run_id, seq, ts, kind, step_id, attempt, data "
        "FROM events",
        "DROP TABLE events",
        "ALTER TABLE events_by_run_seq RENAME TO events",
        "CREATE TABLE event_seq (last INTEGER NOT NULL)",
        "INSERT INTO event_seq SELECT coalesce(max(seq), 0) FROM events",
        # Steps likewise: the table is its own index on (run_id, step_id), where a rowid
        # table kept both again in its primary key's index (40 bytes a step). A run's steps
        # are read in the order they started.
        """
        CREATE TABLE steps_by_run (
            run_id      TEXT NOT NULL,
            step_id     TEXT NOT NULL,
            status      TEXT NOT NULL,
            attempt     INTEGER NOT NULL,
            outputs     TEXT,
            checkpoint  TEXT NOT NULL,
            error       TEXT,
            started_at  REAL,
            finished_at REAL,
            retry_at    REAL,
            config_hash TEXT,
            waiting_for TEXT,
            PRIMARY KEY (run_id, step_id)
        ) WITHOUT ROWID
        """,
        "INSERT INTO steps_by_run SELECT run_id, step_id, status, attempt, outputs, checkpoint, "
        "error, started_at, finished_at, retry_at, config_hash, waiting_for FROM steps",
        "DROP TABLE steps",
        "ALTER TABLE steps_by_run RENAME TO steps",
    ),
    10: (
        # An empty mapping (most events' data, most steps' checkpoints) is NULL, not `{}`:
        # three bytes of every such row, two events and a step per no-op step. The columns
        # accept NULL only in tables made anew (SQLite cannot drop a NOT NULL), so both are
        # copied, their `{}`s turned into NULLs on the way.
        """
        CREATE TABLE events_nullable (
            run_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            ts      REAL NOT NULL,
            kind    TEXT NOT NULL,
            step_id TEXT,
            attempt INTEGER,
            data    TEXT,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID
        """,
        "INSERT INTO events_nullable SELECT run_id, seq, ts, kind, step_id, attempt, "
        "nullif(data, '{}') FROM events ORDER BY run_id, seq",
        "DROP TABLE events",
        "ALTER TABLE events_nullable RENAME TO events",
        """
        CREATE TABLE steps_nullable (
            run_id      TEXT NOT NULL,
            step_id     TEXT NOT NULL,
            status      TEXT NOT NULL,
            attempt     INTEGER NOT NULL,
            outputs     TEXT,
            checkpoint  TEXT,
            error       TEXT,
            started_at  REAL,
            finished_at REAL,
            retry_at    REAL,
            config_hash TEXT,
            waiting_for TEXT,
            PRIMARY KEY (run_id, step_id)
        ) WITHOUT ROWID
        """,
        "INSERT INTO steps_nullable SELECT run_id, step_id, status, attempt, outputs, "
        "nullif(checkpoint, '{}'), error, started_at, finished_at, retry_at, config_hash, "
        "waiting_for FROM steps ORDER BY run_id, step_id",
        "DROP TABLE steps",
        "ALTER TABLE steps_nullable RENAME TO steps",
    ),
    11: (
        # A schedule paused from the web view: its fire times pass unfired until it resumes.
        "ALTER TABLE schedules ADD COLUMN paused_at REAL",
    ),
    12: (
        # Registry aliases (`production` -> a model): each move kept, the latest is current.
        """
        CREATE TABLE alias_moves (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            alias    TEXT NOT NULL,
            model    TEXT NOT NULL,
            moved_at REAL NOT NULL,
            moved_by TEXT NOT NULL,
            reason   TEXT NOT NULL,
            source   TEXT
        )
        """,
        "CREATE INDEX alias_moves_by_alias ON alias_moves (alias, seq)",
    ),
}

SCHEMA_VERSION = max(MIGRATIONS)


def check_ours(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; raises if the file is foreign or from a newer version."""
    # One statement, so one snapshot: read apart, another process's migration could
    # commit in between and make a half-read new database look like someone else's.
    app_id, version, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), "
        "(SELECT user_version FROM pragma_user_version), "
        "(SELECT count(*) FROM sqlite_master)").fetchone()
    if app_id != APPLICATION_ID and (app_id != 0 or tables or version):
        msg = (f"state database {path} belongs to another application (not an "
               "orchestrator state database); it was left untouched")
        raise StateStoreInvalid(msg)
    if version > SCHEMA_VERSION:
        msg = (f"state database {path} was written by a newer orchestrator (schema "
               f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade orchestrator")
        raise StateStoreInvalid(msg)
    return int(version)


def migrate(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> tuple[int, int] | None:
    """Bring the file to SCHEMA_VERSION in WAL mode; (from, to) if it migrated it.

    Checked once before anything is written (a foreign file is never switched to WAL), and
    again under the write lock: several processes opening a new database at once all see
    version 0 at first, and only the first to take the lock migrates it."""
    check_ours(conn, path)
    if switch_to_wal(conn, timeout=busy_timeout) != "wal":
        msg = f"state database {path}: cannot switch it to WAL mode"
        raise StateStoreInvalid(msg)
    conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable
    try:
        version = check_ours(conn, path)
        if version == SCHEMA_VERSION:
            conn.execute("COMMIT")
            return None
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version, SCHEMA_VERSION
