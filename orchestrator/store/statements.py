"""The writes both dialects run word for word, with the values each takes.

Written once with SQLite's `?` parameters; PostgreSQL runs the same text through
`format_style` (psycopg's `%s`). What differs between the dialects (locking, claiming,
lists of ids, the schema's compare-and-set) stays in each backend; what they share cannot
drift apart here: how a run is created, leased, parked, updated by a fenced commit, and how
its steps, events, slots, schedules and models are written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from orchestrator.store.records import (
    AliasMove,
    Lease,
    NewBatch,
    NewEvent,
    NewRun,
    RunStatus,
    RunUpdate,
    ScheduleEntry,
)
from orchestrator.store.rows import (
    ALIAS_COLUMNS,
    BATCH_COLUMNS,
    METRIC_COLUMNS,
    MODEL_COLUMNS,
    SCHEDULE_COLUMNS,
    STEP_COLUMNS,
    dumps,
    dumps_mapping,
)

__all__ = [
    "ALIAS_HISTORY",
    "ALIAS_HISTORY_OF",
    "CURRENT_ALIASES",
    "INSERT_BATCH",
    "INSERT_EVENT",
    "INSERT_RUN",
    "INSERT_SLOT",
    "INSERT_TEXT",
    "METRIC_CONFLICT",
    "MODEL_NAMED",
    "MOVE_ALIAS",
    "MOVE_SLOT",
    "NEEDS_EXECUTOR",
    "PAUSE_SCHEDULE",
    "STEP_CONFLICT",
    "STRAND_RUN",
    "TAKE_LEASE",
    "UPDATE_RUN",
    "UPSERT_METRIC",
    "UPSERT_MODEL",
    "UPSERT_SCHEDULE",
    "UPSERT_STEP",
    "batch_values",
    "event_values",
    "format_style",
    "pause_values",
    "run_filter",
    "run_values",
    "schedule_values",
    "update_values",
]

NEEDS_EXECUTOR = ("(status IN ('queued', 'running') OR (cancel_requested_at IS NOT NULL AND "
                  "status NOT IN ('cancelled', 'succeeded')))")
"""Runs a worker may have to execute: queued, maybe crashed, or with a cancellation to carry
out. Part of migration 4 of both dialects (never edit it); a query uses the partial index only
if its WHERE repeats this text exactly, with literals (SQLite cannot match bound parameters)."""


def _marks(columns: str) -> str:
    return ",".join("?" * len(columns.split(",")))


def _updates(columns: str, key: str) -> str:
    names = [name.strip() for name in columns.split(",")]
    return ", ".join(f"{name} = excluded.{name}" for name in names if name != key)


INSERT_TEXT = ("INSERT INTO pipeline_texts (hash, text, steps) VALUES (?, ?, ?) ON CONFLICT "
               "(hash) DO UPDATE SET steps = excluded.steps WHERE pipeline_texts.steps IS NULL "
               "AND excluded.steps IS NOT NULL")
"""A text is stored once; its step order is added to one stored before orders were kept."""

INSERT_RUN = (
    "INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, inputs, status, "
    "created_at, lease_owner, lease_generation, lease_expires_at, batch_id, cell, matrix, "
    "schedule_id, scheduled_for, provider, provider_url, pipeline_hash) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING"
)
"""Nothing written (rowcount 0) when the id is taken: the caller raises RunExists."""

INSERT_BATCH = (f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({_marks(BATCH_COLUMNS)}) "
                "ON CONFLICT (id) DO NOTHING")

INSERT_EVENT = ("INSERT INTO events (run_id, ts, kind, step_id, attempt, data) "
                "VALUES (?,?,?,?,?,?)")

STEP_CONFLICT = (
    f"ON CONFLICT (run_id, step_id) DO UPDATE SET {_updates(STEP_COLUMNS, 'step_id')}")
"""A stored step's row is replaced whole, in place (it keeps its first position)."""

UPSERT_STEP = (
    f"INSERT INTO steps (run_id, {STEP_COLUMNS}) VALUES (?,{_marks(STEP_COLUMNS)}) "
    f"{STEP_CONFLICT}"
)
"""A step's whole row (values: `rows.step_row`); an update keeps the row's first position."""

TAKE_LEASE = ("UPDATE runs SET lease_owner = ?, lease_generation = ?, lease_expires_at = ?, "
              "recoveries = ? WHERE id = ?")

STRAND_RUN = ("UPDATE runs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, "
              "recoveries = ?, finished_at = ? WHERE id = ?")
"""Parked as stranded (values: RunStatus.STRANDED, recoveries, now, id)."""

UPDATE_RUN = (
    "UPDATE runs SET status = ?, error = ?, waiting_for = ?, "
    "pipeline_hash = coalesce(?, pipeline_hash), "
    "started_at = CASE WHEN ? THEN coalesce(started_at, ?) ELSE started_at END, "
    "finished_at = CASE WHEN ? THEN ? ELSE NULL END, "
    "cancel_requested_at = CASE WHEN ? THEN NULL ELSE cancel_requested_at END, "
    "lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END, "
    "lease_expires_at = CASE WHEN ? THEN NULL ELSE lease_expires_at END, "
    "provider = coalesce(?, provider), provider_url = coalesce(?, provider_url) "
    "WHERE id = ? AND lease_owner = ? AND lease_generation = ?"
)
"""A fenced commit's run update: written only while the lease still holds (rowcount 1)."""

INSERT_SLOT = ("INSERT INTO slots (key, holder, run_id, owner, acquired_at, expires_at) "
               "VALUES (?,?,?,?,?,?)")

MOVE_SLOT = "UPDATE slots SET owner = ?, expires_at = ? WHERE key = ? AND holder = ?"

UPSERT_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({_marks(SCHEDULE_COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET pipeline_name = excluded.pipeline_name, "
    "pipeline_path = excluded.pipeline_path, cron = excluded.cron, "
    "timezone = excluded.timezone, updated_at = excluded.updated_at"
)
"""A schedule's source; its `last_fire` and `paused_at` are kept (only `advance_schedule` and
`pause_schedule` change them)."""

UPSERT_MODEL = (f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({_marks(MODEL_COLUMNS)}) "
                f"ON CONFLICT (name) DO UPDATE SET {_updates(MODEL_COLUMNS, 'name')}")
"""The registry's entry for a name, replaced whole (values: `rows.model_row`)."""


MOVE_ALIAS = (
    "INSERT INTO alias_moves (alias, model, moved_at, moved_by, reason, source) "
    "SELECT ?, ?, ?, ?, ?, ? WHERE coalesce((SELECT model FROM alias_moves WHERE alias = ? "
    "ORDER BY seq DESC LIMIT 1), '') <> ?"
)
"""An alias moved to a model unless it points there already (values: `move_alias_values`):
moving it again to the same model adds nothing to its history."""

CURRENT_ALIASES = (f"SELECT {ALIAS_COLUMNS} FROM alias_moves WHERE seq IN "
                   "(SELECT max(seq) FROM alias_moves GROUP BY alias) ORDER BY alias")
"""Each alias with the move that set its current model."""

ALIAS_HISTORY = f"SELECT {ALIAS_COLUMNS} FROM alias_moves ORDER BY seq DESC LIMIT ?"
ALIAS_HISTORY_OF = (f"SELECT {ALIAS_COLUMNS} FROM alias_moves WHERE alias = ? ORDER BY seq DESC "
                    "LIMIT ?")
"""One alias's moves, newest first (its index serves it)."""
MODEL_NAMED = f"SELECT {MODEL_COLUMNS} FROM models WHERE name = ?"


def move_alias_values(move: AliasMove, at: float) -> tuple[Any, ...]:
    return (move.alias, move.model, at, move.moved_by, move.reason, move.source, move.alias,
            move.model)


_METRIC_VALUES = ("epoch", "train_loss", "eval_loss", "learning_rate", "tokens")

METRIC_CONFLICT = (
    "ON CONFLICT (run_id, step_id, job_id, train_step) DO UPDATE SET "
    + ", ".join(f"{c} = coalesce(excluded.{c}, metric_points.{c})" for c in _METRIC_VALUES))
"""A training step seen again fills in what it lacked; what was kept stays."""

UPSERT_METRIC = (f"INSERT INTO metric_points ({METRIC_COLUMNS}) VALUES "
                 f"({_marks(METRIC_COLUMNS)}) {METRIC_CONFLICT}")
"""A job's figures at one training step (values: `rows.metric_row`)."""


def format_style(statement: str) -> str:
    """`statement` with psycopg's `%s` parameters for SQLite's `?` (none of the statements
    holds a literal `?` or `%`)."""
    assert "%" not in statement
    return statement.replace("?", "%s")


def run_filter(*, batch_id: str | None = None, schedule_id: str | None = None,
               statuses: Collection[RunStatus] | None = None, pipeline: str | None = None,
               since: float | None = None, until: float | None = None
               ) -> tuple[str, list[Any], str]:
    """`list_runs`' WHERE clause, its values and its order (a batch's runs in cell order,
    others newest first)."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (("batch_id = ?", batch_id), ("schedule_id = ?", schedule_id),
                          ("pipeline_name = ?", pipeline), ("created_at >= ?", since),
                          ("created_at < ?", until)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if statuses is not None:
        clauses.append(f"status IN ({','.join('?' * len(statuses))})" if statuses else "1 = 0")
        params += [s.value for s in statuses]
    order = "cell" if batch_id is not None else "created_at DESC, id DESC"
    return " AND ".join(clauses) or "1 = 1", params, order


def run_values(run: NewRun, now: float, owner: str | None, ttl: float, *,
               text_key: str) -> tuple[Any, ...]:
    """INSERT_RUN's values: a new run, leased to `owner` for `ttl` if given (generation 1)."""
    return (run.id, run.pipeline_name, run.pipeline_path, "", dumps(dict(run.inputs)),
            run.status.value, now, owner, 0 if owner is None else 1,
            None if owner is None else now + ttl, run.batch_id, run.cell,
            None if run.matrix is None else dumps(dict(run.matrix)), run.schedule_id,
            run.scheduled_for, run.provider, run.provider_url, text_key)


def batch_values(batch: NewBatch, cells: int, now: float, *, text_key: str) -> tuple[Any, ...]:
    return (batch.id, batch.pipeline_name, batch.pipeline_path, "", dumps(dict(batch.inputs)),
            batch.max_parallel, batch.fail_fast, cells, now, batch.schedule_id,
            batch.scheduled_for, text_key)


def event_values(run_id: str, now: float, events: Sequence[NewEvent]) -> list[tuple[Any, ...]]:
    return [(run_id, now, e.kind, e.step_id, e.attempt, dumps_mapping(e.data)) for e in events]


def update_values(lease: Lease, run: RunUpdate, now: float, *,
                  text_key: str | None) -> tuple[Any, ...]:
    """UPDATE_RUN's values (`text_key`: the hash of a new pipeline text, stored first)."""
    return (run.status.value, run.error, run.waiting_for, text_key,
            run.status is RunStatus.RUNNING, now, run.status.finished, now,
            run.clear_cancel, run.release, run.release, *(run.provider or (None, None)),
            lease.run_id, lease.owner, lease.generation)


PAUSE_SCHEDULE = (
    "UPDATE schedules SET paused_at = CASE WHEN ? THEN coalesce(paused_at, ?) END, "
    "last_fire = CASE WHEN ? THEN last_fire ELSE ? END WHERE id = ?"
)
"""Pause a schedule (kept paused since it first was), or resume it from now: the fire times
that passed while it was paused are let go (values: `pause_values`)."""


def pause_values(schedule_id: str, paused: bool, now: float) -> tuple[Any, ...]:
    return (paused, now, paused, now, schedule_id)


def schedule_values(entry: ScheduleEntry, now: float) -> tuple[Any, ...]:
    return (entry.id, entry.pipeline_name, entry.pipeline_path, entry.cron, entry.timezone,
            entry.last_fire, now, entry.paused_at)

