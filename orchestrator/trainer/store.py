"""What a real fine-tuning job has done so far, kept in the local API's database.

The server writes a job's training spec when the job is created (`queued`); the trainer
process claims queued jobs in order, one at a time, and writes as it trains: its status, the
step it reached, its events, metric points and checkpoints. The server answers every read of
the job from these rows, so a restarted server (or another one on the same data folder) sees
the job exactly where the trainer left it. Cancelling is the finetunes row's `cancelled_at`,
which the training loop reads between steps.

Imports nothing heavy (no torch): the server reads these rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.sqlite_wal import switch_to_wal

__all__ = ["ACTIVE", "FINISHED", "Progress", "TrainingStore"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS trainings (
        job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
        queued_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
        step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0,
        epochs_completed INTEGER NOT NULL DEFAULT 0,
        evals_completed INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
        error TEXT, starts INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS trainings_by_status ON trainings (status, queued_at)",
    """CREATE TABLE IF NOT EXISTS training_events (
        job_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, type TEXT NOT NULL,
        message TEXT NOT NULL, level TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0,
        checkpoint_path TEXT NOT NULL DEFAULT '', model_path TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, seq))""",
    """CREATE TABLE IF NOT EXISTS training_metrics (
        job_id TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        loss REAL, learning_rate REAL, epoch REAL, tokens INTEGER,
        PRIMARY KEY (job_id, step, kind))""",
    """CREATE TABLE IF NOT EXISTS training_checkpoints (
        job_id TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        folder TEXT NOT NULL, PRIMARY KEY (job_id, step, kind))""",
)

ACTIVE = ("queued", "running")
FINISHED = ("completed", "error", "cancelled")


@dataclass(frozen=True)
class Progress:
    """How far a job got: what its status poll says."""

    status: str
    queued_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    step: int
    total_steps: int
    epochs_completed: int
    evals_completed: int
    tokens: int
    error: str | None


def _row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class TrainingStore:
    """The training tables of one data folder's database; short transactions, safe from any
    thread of the process that made it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.jobs_dir = data_dir / "trainings"
        self._db = sqlite3.connect(data_dir / "local-api.db", isolation_level=None,
                                   check_same_thread=False, timeout=10.0)
        switch_to_wal(self._db, timeout=10.0)
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.row_factory = _row

    def close(self) -> None:
        self._db.close()

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    # -- the server's side -------------------------------------------------------------------

    def queue(self, job_id: str, spec: Mapping[str, Any], at: float) -> None:
        self._db.execute("INSERT INTO trainings (job_id, spec, status, queued_at, updated_at) "
                         "VALUES (?, ?, 'queued', ?, ?)", (job_id, json.dumps(spec), at, at))

    def progress(self, job_id: str) -> Progress | None:
        row = self._db.execute(
            "SELECT status, queued_at, started_at, finished_at, updated_at, step, total_steps, "
            "epochs_completed, evals_completed, tokens, error FROM trainings WHERE job_id = ?",
            (job_id,)).fetchone()
        return None if row is None else Progress(**row)

    def queue_position(self, job_id: str) -> int:
        """Jobs ahead of this one (0: it is next, or running)."""
        row = self._db.execute(
            "SELECT count(*) AS ahead FROM trainings WHERE status IN ('queued', 'running') AND "
            "queued_at < (SELECT queued_at FROM trainings WHERE job_id = ?)",
            (job_id,)).fetchone()
        return int(row["ahead"]) if row else 0

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._db.execute(
            "SELECT * FROM training_events WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return rows

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._db.execute(
            "SELECT * FROM training_metrics WHERE job_id = ? ORDER BY step, kind",
            (job_id,)).fetchall()
        return rows

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._db.execute(
            "SELECT * FROM training_checkpoints WHERE job_id = ? ORDER BY step, kind",
            (job_id,)).fetchall()
        return rows

    def spec(self, job_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT spec FROM trainings WHERE job_id = ?",
                               (job_id,)).fetchone()
        return None if row is None else dict(json.loads(row["spec"]))

    def cancel_queued(self, job_id: str, at: float) -> bool:
        """Cancel a job no trainer started yet; False if one had (it stops between steps)."""
        changed = self._db.execute(
            "UPDATE trainings SET status = 'cancelled', finished_at = ?, updated_at = ? "
            "WHERE job_id = ? AND status = 'queued'", (at, at, job_id)).rowcount
        if changed:
            self.event(job_id, at, "job_stopped", "Job cancelled before it started")
        return bool(changed)

    def forget(self, job_id: str) -> None:
        for table in ("training_events", "training_metrics", "training_checkpoints",
                      "trainings"):
            self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    # -- the trainer's side ------------------------------------------------------------------

    def next_job(self) -> tuple[str, dict[str, Any], int] | None:
        """The job to train now: one a dead trainer left running (it continues), else the
        oldest queued. Its id, spec and how many times it was started before."""
        row = self._db.execute(
            "SELECT job_id, spec, starts FROM trainings WHERE status IN ('running', 'queued') "
            "ORDER BY status = 'queued', queued_at LIMIT 1").fetchone()
        if row is None:
            return None
        return row["job_id"], dict(json.loads(row["spec"])), int(row["starts"])

    def cancelled_at(self, job_id: str) -> float | None:
        row = self._db.execute("SELECT cancelled_at FROM finetunes WHERE id = ?",
                               (job_id,)).fetchone()
        if row is None:  # deleted: stop as for a cancel
            return 0.0
        value = row["cancelled_at"]
        return None if value is None else float(value)

    def start(self, job_id: str, at: float, total_steps: int) -> None:
        self._db.execute(
            "UPDATE trainings SET status = 'running', started_at = coalesce(started_at, ?), "
            "updated_at = ?, total_steps = ?, starts = starts + 1 WHERE job_id = ?",
            (at, at, total_steps, job_id))

    def advance(self, job_id: str, at: float, *, step: int, epochs: int, evals: int,
                tokens: int, metrics: Iterable[tuple[int, str, float, float | None,
                                                     float | None, float, int | None]] = ()
                ) -> None:
        """The job reached `step`; its metric points (step, kind, at, loss, learning rate,
        epoch, tokens) with it, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "UPDATE trainings SET step = ?, epochs_completed = ?, evals_completed = ?, "
                "tokens = ?, updated_at = ? WHERE job_id = ?",
                (step, epochs, evals, tokens, at, job_id))
            self._db.executemany(
                "INSERT OR REPLACE INTO training_metrics (job_id, step, kind, at, loss, "
                "learning_rate, epoch, tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(job_id, *point) for point in metrics])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def rewind(self, job_id: str, step: int) -> None:
        """A job continued from its checkpoint at `step`: what it logged after that step is
        logged again as it trains again."""
        self._db.execute("DELETE FROM training_metrics WHERE job_id = ? AND step > ?",
                         (job_id, step))

    def event(self, job_id: str, at: float, type_: str, message: str, *,
              level: str = "info", step: int = 0, checkpoint_path: str = "",
              model_path: str = "") -> None:
        self._db.execute(
            "INSERT INTO training_events (job_id, seq, at, type, message, level, step, "
            "checkpoint_path, model_path) VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM "
            "training_events WHERE job_id = ?), ?, ?, ?, ?, ?, ?, ?)",
            (job_id, job_id, at, type_, message, level, step, checkpoint_path, model_path))

    def checkpoint(self, job_id: str, at: float, step: int, kind: str, folder: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO training_checkpoints (job_id, step, kind, at, "
                         "folder) VALUES (?, ?, ?, ?, ?)", (job_id, step, kind, at, folder))

    def finish(self, job_id: str, at: float, status: str, error: str | None = None) -> None:
        self._db.execute("UPDATE trainings SET status = ?, finished_at = ?, updated_at = ?, "
                         "error = ? WHERE job_id = ?", (status, at, at, error, job_id))
