"""What the local API keeps on disk: files, fine-tune jobs, imported models, training examples.

Metadata lives in one SQLite file (WAL) under the data directory and file bytes beside it, so
every process serving the same directory (an in-process API in each `orchestrator run`, or a
`local-api` server) sees the same jobs. Secrets sent with requests (W&B and Hugging Face keys)
are never written: only whether one was given.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.sqlite_wal import switch_to_wal

__all__ = ["LocalState", "normalise_prompt"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY, created_at REAL NOT NULL, filename TEXT NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0, purpose TEXT NOT NULL, file_type TEXT NOT NULL,
        checksum TEXT, state TEXT NOT NULL, processing_status TEXT, report TEXT,
        line_count INTEGER NOT NULL DEFAULT 0, upload_token TEXT)""",
    "CREATE INDEX IF NOT EXISTS files_by_checksum ON files (checksum)",
    """CREATE TABLE IF NOT EXISTS finetunes (
        id TEXT PRIMARY KEY, created_at REAL NOT NULL, model TEXT NOT NULL,
        output_name TEXT NOT NULL UNIQUE, request TEXT NOT NULL, plan TEXT NOT NULL,
        cancelled_at REAL)""",
    "CREATE INDEX IF NOT EXISTS finetunes_by_created ON finetunes (created_at)",
    """CREATE TABLE IF NOT EXISTS examples (
        model_name TEXT NOT NULL, prompt_key TEXT NOT NULL, answer TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS examples_by_model ON examples (model_name, prompt_key)",
    """CREATE TABLE IF NOT EXISTS imports (
        job_id TEXT PRIMARY KEY, model_id TEXT NOT NULL, model_name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL, request TEXT NOT NULL, plan TEXT NOT NULL)""",
    # The v2 API: models registered in a project, and the remote uploads that fill them.
    """CREATE TABLE IF NOT EXISTS project_models (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
        request TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS remote_uploads (
        id TEXT PRIMARY KEY, model_id TEXT NOT NULL, created_at REAL NOT NULL,
        request TEXT NOT NULL, plan TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS remote_uploads_by_model ON remote_uploads (model_id, created_at)",
    # Multipart file uploads (open, or completed: a complete sent again gets the file), and
    # the parts received so far.
    """CREATE TABLE IF NOT EXISTS multipart_uploads (
        upload_id TEXT PRIMARY KEY, file_id TEXT NOT NULL, num_parts INTEGER NOT NULL,
        file_size INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'open')""",
    """CREATE TABLE IF NOT EXISTS upload_parts (
        upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, etag TEXT NOT NULL,
        bytes INTEGER NOT NULL, received INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (upload_id, part_number))""",
    # Direct uploads of a v2 model's files (one row per file; its parts in upload_parts), and
    # the revision each made once completed (a complete sent again answers the same one).
    """CREATE TABLE IF NOT EXISTS model_file_uploads (
        upload_id TEXT PRIMARY KEY, model_id TEXT NOT NULL, path TEXT NOT NULL,
        hash TEXT NOT NULL, num_parts INTEGER NOT NULL, token TEXT NOT NULL,
        created_at REAL NOT NULL, revision_id TEXT)""",
)

_SPACES = re.compile(r"\s+")


def normalise_prompt(text: str) -> str:
    """The key two prompts share when they are "the same question": case and spacing aside."""
    return _SPACES.sub(" ", text).strip().casefold()


def _row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class LocalState:
    """Synchronous, short transactions; safe to call from the event loop (WAL readers never
    wait, and writers hold the lock for microseconds)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "local-api.db", isolation_level=None,
                                   check_same_thread=False, timeout=5.0)
        # A job's row never changes after creation except cancelled_at, so the decoded row is
        # kept and only cancelled_at is read again (GET /fine-tunes/{id} is the hot path).
        self._jobs: dict[str, dict[str, Any]] = {}
        switch_to_wal(self._db, timeout=5.0)
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.row_factory = _row

    def check_writable(self) -> None:
        """Raise sqlite3.Error unless the database takes a write (a read-only file would
        open, and fail only at the first upload)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self._db.execute(sql, tuple(args)).fetchone()
        return row

    def _all(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._db.execute(sql, tuple(args)).fetchall()
        return rows

    # -- files -------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def add_file(self, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        self._db.execute(f"INSERT INTO files ({columns}) VALUES ({marks})", tuple(row.values()))

    def announce_file(self, row: Mapping[str, Any], *, fresh_after: float
                      ) -> dict[str, Any] | None:
        """Store `row` (a file awaiting its bytes) unless a file with the same checksum and
        purpose is there or on its way (announced after `fresh_after`); that file if so.

        One transaction, so processes announcing the same bytes at once get one file.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = None
            if row.get("checksum"):
                existing = self._one(
                    "SELECT * FROM files WHERE checksum = ? AND purpose = ? AND (state IN "
                    "('uploaded', 'processed') OR created_at > ?) ORDER BY state = "
                    "'awaiting_upload', created_at LIMIT 1",
                    (row["checksum"], row["purpose"], fresh_after))
            if existing is None:
                self.add_file(row)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return existing

    def update_file(self, file_id: str, **changes: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in changes)
        self._db.execute(f"UPDATE files SET {sets} WHERE id = ?", (*changes.values(), file_id))

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE id = ?", (file_id,))

    def files(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM files WHERE state IN ('uploaded', 'processed') "
                         "ORDER BY created_at")

    def delete_file(self, file_id: str) -> None:
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.file_path(file_id).unlink(missing_ok=True)

    # -- fine-tunes --------------------------------------------------------------------------

    def add_finetune(self, row: Mapping[str, Any], examples: Iterable[tuple[str, str]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO finetunes (id, created_at, model, output_name, request, plan) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row["id"], row["created_at"], row["model"], row["output_name"],
                 json.dumps(row["request"]), json.dumps(row["plan"])),
            )
            self._db.executemany(
                "INSERT INTO examples (model_name, prompt_key, answer) VALUES (?, ?, ?)",
                [(row["output_name"], normalise_prompt(p), a) for p, a in examples],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def finetune(self, job_id: str) -> dict[str, Any] | None:
        known = self._jobs.get(job_id)
        if known is None:
            row = _decoded(self._one("SELECT * FROM finetunes WHERE id = ?", (job_id,)))
            if row is not None:
                self._jobs[job_id] = row
            return row
        current = self._one("SELECT cancelled_at FROM finetunes WHERE id = ?", (job_id,))
        if current is None:  # deleted, perhaps by another process
            self._jobs.pop(job_id, None)
            return None
        return {**known, "cancelled_at": current["cancelled_at"]}

    def finetune_by_output(self, output_name: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM finetunes WHERE output_name = ?",
                                  (output_name,)))

    def finetunes(self) -> list[dict[str, Any]]:
        return [_decoded(r) or r for r in self._all("SELECT * FROM finetunes ORDER BY created_at")]

    def cancel_finetune(self, job_id: str, at: float) -> None:
        self._db.execute("UPDATE finetunes SET cancelled_at = coalesce(cancelled_at, ?) "
                         "WHERE id = ?", (at, job_id))

    def delete_finetune(self, job_id: str) -> None:
        row = self.finetune(job_id)
        if row is not None:
            self._db.execute("DELETE FROM examples WHERE model_name = ?", (row["output_name"],))
            self._db.execute("DELETE FROM finetunes WHERE id = ?", (job_id,))
            self._jobs.pop(job_id, None)

    # -- what fine-tuned models learnt ----------------------------------------------------------

    def answer(self, model_name: str, prompt: str) -> str | None:
        """The answer a model learnt for this prompt, if its training data held the prompt."""
        row = self._one("SELECT answer FROM examples WHERE model_name = ? AND prompt_key = ? "
                        "LIMIT 1", (model_name, normalise_prompt(prompt)))
        return None if row is None else str(row["answer"])

    def learnt_examples(self, model_name: str, limit: int = 20_000) -> dict[str, str]:
        """Normalised prompt -> answer for a model's training examples (the first `limit`)."""
        rows = self._all("SELECT prompt_key, answer FROM examples WHERE model_name = ? LIMIT ?",
                         (model_name, limit))
        return {row["prompt_key"]: row["answer"] for row in rows}

    # -- imported models ---------------------------------------------------------------------

    def add_import(self, row: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO imports (job_id, model_id, model_name, created_at, request, plan) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row["job_id"], row["model_id"], row["model_name"], row["created_at"],
             json.dumps(row["request"]), json.dumps(row["plan"])),
        )

    def imported(self, job_id: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM imports WHERE job_id = ?", (job_id,)))

    def imported_by_name(self, model_name: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM imports WHERE model_name = ?", (model_name,)))

    def imports(self) -> list[dict[str, Any]]:
        return [_decoded(r) or r for r in self._all("SELECT * FROM imports ORDER BY created_at")]

    # -- the v2 API's registered models and their remote uploads -------------------------------

    def add_project_model(self, row: Mapping[str, Any]) -> None:
        self._db.execute("INSERT INTO project_models (id, name, created_at, request) "
                         "VALUES (?, ?, ?, ?)", (row["id"], row["name"], row["created_at"],
                                                 json.dumps(row["request"])))

    def project_model(self, model_id: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM project_models WHERE id = ?", (model_id,)))

    def project_model_by_name(self, name: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM project_models WHERE name = ?", (name,)))

    def project_models(self) -> list[dict[str, Any]]:
        return [_decoded(r) or r for r in self._all(
            "SELECT * FROM project_models ORDER BY created_at, rowid")]

    def update_project_model(self, model_id: str, *, name: str,
                             request: Mapping[str, Any]) -> None:
        self._db.execute("UPDATE project_models SET name = ?, request = ? WHERE id = ?",
                         (name, json.dumps(request), model_id))

    def delete_project_model(self, model_id: str) -> None:
        self._db.execute("DELETE FROM remote_uploads WHERE model_id = ?", (model_id,))
        self._db.execute("DELETE FROM project_models WHERE id = ?", (model_id,))

    def add_remote_upload(self, row: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO remote_uploads (id, model_id, created_at, request, plan) "
            "VALUES (?, ?, ?, ?, ?)", (row["id"], row["model_id"], row["created_at"],
                                       json.dumps(row["request"]), json.dumps(row["plan"])))

    def remote_upload(self, upload_id: str) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM remote_uploads WHERE id = ?", (upload_id,)))

    def remote_uploads(self, model_id: str | None = None) -> list[dict[str, Any]]:
        if model_id is None:
            rows = self._all("SELECT * FROM remote_uploads ORDER BY created_at, rowid")
        else:
            rows = self._all("SELECT * FROM remote_uploads WHERE model_id = ? "
                             "ORDER BY created_at, rowid", (model_id,))
        return [_decoded(r) or r for r in rows]

    # -- multipart uploads' parts ------------------------------------------------------------

    def add_multipart(self, row: Mapping[str, Any]) -> None:
        self._db.execute("INSERT INTO multipart_uploads (upload_id, file_id, num_parts, "
                         "file_size) VALUES (?, ?, ?, ?)", (row["upload_id"], row["file_id"],
                                                            row["num_parts"], row["file_size"]))

    def multipart(self, upload_id: str) -> dict[str, Any] | None:
        """An open multipart upload."""
        return self._one("SELECT * FROM multipart_uploads WHERE upload_id = ? AND state = "
                         "'open'", (upload_id,))

    def completed_multipart(self, upload_id: str) -> str | None:
        """The file a completed multipart upload made."""
        row = self._one("SELECT file_id FROM multipart_uploads WHERE upload_id = ? AND state = "
                        "'completed'", (upload_id,))
        return None if row is None else str(row["file_id"])

    def close_multipart(self, upload_id: str, *, completed: str | None) -> None:
        """Remember an upload as completed (with the record of its parts: a few rows), or
        forget it and its parts (aborted)."""
        if completed:
            self._db.execute("UPDATE multipart_uploads SET state = 'completed' WHERE "
                             "upload_id = ?", (upload_id,))
        else:
            self._db.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload_id,))
            self._db.execute("DELETE FROM multipart_uploads WHERE upload_id = ?", (upload_id,))

    def put_part(self, upload_id: str, part_number: int, etag: str, size: int) -> None:
        """Record a part (a part sent again replaces the first, as S3 does; `received` counts
        how often it came)."""
        self._db.execute(
            "INSERT INTO upload_parts (upload_id, part_number, etag, bytes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag, "
            "bytes = excluded.bytes, received = received + 1",
            (upload_id, part_number, etag, size))

    def add_model_file_uploads(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._db.executemany(
            "INSERT INTO model_file_uploads (upload_id, model_id, path, hash, num_parts, token, "
            "created_at) VALUES (:upload_id, :model_id, :path, :hash, :num_parts, :token, "
            ":created_at)", [dict(row) for row in rows])

    def model_file_upload(self, upload_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM model_file_uploads WHERE upload_id = ?", (upload_id,))

    def complete_model_file_uploads(self, upload_ids: Iterable[str],
                                    revision: Mapping[str, Any]) -> None:
        """In one transaction: the revision the files make (a row of remote_uploads, as a
        remote upload that succeeded is), their uploads marked completed by it, their parts'
        rows forgotten."""
        ids = [(i,) for i in upload_ids]
        marked = [(revision["id"], i) for (i,) in ids]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self.add_remote_upload(revision)
            self._db.executemany("UPDATE model_file_uploads SET revision_id = ? "
                                 "WHERE upload_id = ?", marked)
            self._db.executemany("DELETE FROM upload_parts WHERE upload_id = ?", ids)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def parts(self, upload_id: str) -> dict[int, dict[str, Any]]:
        rows = self._all("SELECT * FROM upload_parts WHERE upload_id = ? ORDER BY part_number",
                         (upload_id,))
        return {row["part_number"]: row for row in rows}


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        for key in ("request", "plan"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
    return row
