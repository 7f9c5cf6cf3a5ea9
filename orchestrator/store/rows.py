"""Rows <-> records, shared by every SQL dialect: the columns, their encoding, shared texts.

Both backends keep the same columns with the same encodings (JSON text, epoch seconds), so a
row read by name (`sqlite3.Row` or psycopg's `dict_row`) becomes a record through one function,
and a history copied from one backend to the other is byte for byte the same.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.process import hold
from orchestrator.store.records import (
    AliasMove,
    BatchRecord,
    ErrorInfo,
    EventRecord,
    MetricPoint,
    ModelEntry,
    RunRecord,
    RunStatus,
    ScheduleEntry,
    StepRecord,
    StepStatus,
)

__all__ = [
    "ALIAS_COLUMNS",
    "BATCH_COLUMNS",
    "EVENTS_END",
    "EVENT_COLUMNS",
    "MAX_JSON_VALUE",
    "METRIC_COLUMNS",
    "METRIC_ORDER",
    "MODEL_COLUMNS",
    "RUN_COLUMNS",
    "SCHEDULE_COLUMNS",
    "SHARED_TEXTS",
    "STEP_COLUMNS",
    "Row",
    "SharedTexts",
    "StoredText",
    "alias_record",
    "batch_record",
    "dumps",
    "dumps_mapping",
    "event_record",
    "loads_mapping",
    "metric_record",
    "metric_row",
    "model_record",
    "model_row",
    "run_record",
    "schedule_record",
    "step_record",
    "step_row",
    "steps_json",
]

RUN_COLUMNS = (
    "id, pipeline_name, pipeline_path, pipeline_text, inputs, status, created_at, started_at, "
    "finished_at, error, lease_owner, lease_generation, lease_expires_at, recoveries, "
    "batch_id, cell, matrix, waiting_for, cancel_requested_at, schedule_id, scheduled_for, "
    "provider, provider_url, pipeline_hash"
)
BATCH_COLUMNS = (
    "id, pipeline_name, pipeline_path, pipeline_text, inputs, max_parallel, fail_fast, cells, "
    "created_at, schedule_id, scheduled_for, pipeline_hash"
)
SCHEDULE_COLUMNS = ("id, pipeline_name, pipeline_path, cron, timezone, last_fire, updated_at, "
                    "paused_at")
MODEL_COLUMNS = (
    "name, run_id, step_id, pipeline_name, provider, base_model, job_id, training_file, "
    "validation_file, hyperparameters, metrics, tags, recorded_at"
)
STEP_COLUMNS = (
    "step_id, status, attempt, outputs, checkpoint, error, started_at, finished_at, retry_at, "
    "config_hash, waiting_for"
)
EVENT_COLUMNS = "seq, run_id, ts, kind, step_id, attempt, data"
ALIAS_COLUMNS = "seq, alias, model, moved_at, moved_by, reason, source"
MAX_JSON_VALUE = 16 * 2**20
"""The longest JSON text of one stored value a step hands the store, its outputs or its
checkpoint (a step with more to keep writes a file and keeps its path): with the pipeline
text's bound, what bounds every row the store holds."""
EVENTS_END = 2**63 - 1
"""Past the number of any event (the largest integer both databases hold): a bound to read
events up to."""
METRIC_COLUMNS = ("run_id, step_id, job_id, train_step, epoch, train_loss, eval_loss, "
                  "learning_rate, tokens, ts")
METRIC_ORDER = "run_id, step_id, job_id, train_step"
"""The order metric points are read in: a series per step and job, by training step."""


class Row(Protocol):
    """A row whose columns are read by name: `sqlite3.Row`, or a dict from psycopg."""

    def __getitem__(self, key: str, /) -> Any: ...


def dumps(value: Any) -> str:
    """The one JSON encoding of stored values (compact, keys sorted)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def dumps_mapping(value: Mapping[str, Any]) -> str | None:
    """A mapping column's stored form: NULL when empty, as most events' data and most steps'
    checkpoints are (`{}` cost three bytes of every such row: 2 % of a no-op step)."""
    return dumps(dict(value)) if value else None


def loads_mapping(text: str | None) -> Any:
    """A mapping column read back: NULL, and `{}` as rows stored before wrote it, are empty;
    anything else than a JSON object (only a hand-edited database holds one) is read as
    `{"value": ...}`, so that every reader gets the mapping it expects."""
    if text is None:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class StoredText:
    """A pipeline text as stored, once per hash: the text, and its steps in order (None for
    a text stored before orders were kept)."""

    text: str
    steps: tuple[str, ...] | None

    @classmethod
    def of(cls, text: str, steps: str | None) -> StoredText:
        return cls(text, None if steps is None else tuple(json.loads(steps)))


def steps_json(step_ids: Sequence[str] | None) -> str | None:
    """The stored form of a pipeline's step order."""
    return None if step_ids is None else json.dumps(list(step_ids), separators=(",", ":"))


def _shared(text: str | None) -> str | None:
    """`sys.intern` for a column that may be NULL. A column that repeats across runs (a
    pipeline's name and path, a lease's owner, a provider) is interned when read: a worker
    holding 10,000 runs of one pipeline holds each once."""
    return None if text is None else sys.intern(text)


def run_record(row: Row, texts: Mapping[str, StoredText]) -> RunRecord:
    key, matrix = row["pipeline_hash"], row["matrix"]
    stored = None if key is None else texts[key]
    return RunRecord(
        id=row["id"], pipeline_name=sys.intern(row["pipeline_name"]),
        pipeline_path=sys.intern(row["pipeline_path"]),
        pipeline_text=row["pipeline_text"] if stored is None else stored.text,
        inputs=json.loads(row["inputs"]), status=RunStatus(row["status"]),
        created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], error=row["error"],
        lease_owner=_shared(row["lease_owner"]),
        lease_generation=row["lease_generation"], lease_expires_at=row["lease_expires_at"],
        recoveries=row["recoveries"], batch_id=row["batch_id"], cell=row["cell"],
        matrix=None if matrix is None else json.loads(matrix),
        waiting_for=row["waiting_for"], cancel_requested_at=row["cancel_requested_at"],
        schedule_id=row["schedule_id"], scheduled_for=row["scheduled_for"],
        provider=_shared(row["provider"]), provider_url=_shared(row["provider_url"]),
        step_ids=None if stored is None else stored.steps,
    )


def batch_record(row: Row, texts: Mapping[str, StoredText]) -> BatchRecord:
    key = row["pipeline_hash"]
    return BatchRecord(
        id=row["id"], pipeline_name=row["pipeline_name"], pipeline_path=row["pipeline_path"],
        pipeline_text=row["pipeline_text"] if key is None else texts[key].text,
        inputs=json.loads(row["inputs"]), max_parallel=row["max_parallel"],
        fail_fast=bool(row["fail_fast"]), cells=row["cells"], created_at=row["created_at"],
        schedule_id=row["schedule_id"], scheduled_for=row["scheduled_for"],
    )


def schedule_record(row: Row) -> ScheduleEntry:
    return ScheduleEntry(
        id=row["id"], pipeline_name=row["pipeline_name"], pipeline_path=row["pipeline_path"],
        cron=row["cron"], timezone=row["timezone"], last_fire=row["last_fire"],
        updated_at=row["updated_at"], paused_at=row["paused_at"])


def model_record(row: Row) -> ModelEntry:
    return ModelEntry(
        name=row["name"], run_id=row["run_id"], step_id=row["step_id"],
        pipeline_name=row["pipeline_name"], provider=row["provider"],
        base_model=row["base_model"], job_id=row["job_id"],
        training_file=row["training_file"], validation_file=row["validation_file"],
        hyperparameters=json.loads(row["hyperparameters"]),
        metrics=json.loads(row["metrics"]), tags=json.loads(row["tags"]),
        recorded_at=row["recorded_at"])


def alias_record(row: Row) -> AliasMove:
    return AliasMove(alias=row["alias"], model=row["model"], moved_by=row["moved_by"],
                     reason=row["reason"], source=row["source"], moved_at=row["moved_at"],
                     seq=row["seq"])


def model_row(entry: ModelEntry) -> tuple[Any, ...]:
    """`entry` as the values of MODEL_COLUMNS, in order."""
    return (entry.name, entry.run_id, entry.step_id, entry.pipeline_name, entry.provider,
            entry.base_model, entry.job_id, entry.training_file, entry.validation_file,
            dumps(dict(entry.hyperparameters)), dumps(dict(entry.metrics)),
            dumps(dict(entry.tags)), entry.recorded_at)


def step_record(row: Row) -> StepRecord:
    outputs, error = row["outputs"], row["error"]
    return StepRecord(
        step_id=row["step_id"], status=StepStatus(row["status"]), attempt=row["attempt"],
        outputs=None if outputs is None else json.loads(outputs),
        checkpoint=loads_mapping(row["checkpoint"]),
        error=None if error is None else ErrorInfo.from_json(json.loads(error)),
        started_at=row["started_at"], finished_at=row["finished_at"],
        retry_at=row["retry_at"], config_hash=row["config_hash"],
        waiting_for=row["waiting_for"],
    )


def step_row(run_id: str, step: StepRecord) -> tuple[Any, ...]:
    """The run id and `step` as the values of STEP_COLUMNS, in order."""
    return (
        run_id, step.step_id, step.status.value, step.attempt,
        None if step.outputs is None else dumps(step.outputs), dumps_mapping(step.checkpoint),
        None if step.error is None else dumps(step.error.to_json()),
        step.started_at, step.finished_at, step.retry_at, step.config_hash, step.waiting_for,
    )


def event_record(row: Row) -> EventRecord:
    return EventRecord(row["seq"], row["run_id"], row["ts"], row["kind"], row["step_id"],
                       row["attempt"], loads_mapping(row["data"]))


def metric_record(row: Row) -> MetricPoint:
    return MetricPoint(row["step_id"], row["job_id"], row["train_step"], row["epoch"],
                       row["train_loss"], row["eval_loss"], row["learning_rate"],
                       row["tokens"], row["ts"])


def metric_row(run_id: str, point: MetricPoint, now: float) -> tuple[Any, ...]:
    """The run id and `point` as the values of METRIC_COLUMNS, in order."""
    return (run_id, point.step_id, point.job_id, point.train_step, point.epoch,
            point.train_loss, point.eval_loss, point.learning_rate, point.tokens,
            now if point.ts is None else point.ts)


class SharedTexts:
    """Pipeline texts by hash, most recently used last, shared by every store in the process.

    A hash names one text for good, in any store, so the records of every run sharing a text
    share one string instead of a copy each. Thread-safe: SQLite statements run on the event
    loop or in a worker thread.
    """

    def __init__(self, kept: int = 64) -> None:
        self._recent: OrderedDict[str, StoredText] = OrderedDict()
        self._kept = kept
        self._lock = threading.Lock()

    def lookup(self, hashes: Iterable[str | None]) -> tuple[dict[str, StoredText], list[str]]:
        """The texts of `hashes` kept here, and the hashes to fetch from the store (then
        `remember` them). None stands for a row from before texts were shared."""
        wanted = {h for h in hashes if h is not None}
        with self._lock:
            found = {h: self._recent[h] for h in wanted if h in self._recent}
        return found, sorted(wanted - found.keys())

    def stored(self, key: str, text: str, steps: Sequence[str] | None) -> None:
        """A text was stored with its step order: a kept copy without one gains it (the
        order is the text's own, however often it is stored)."""
        if steps is not None:
            with self._lock:
                if key in self._recent:
                    self._recent[key] = StoredText(self._recent[key].text, tuple(steps))

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()

    def remember(self, found: Mapping[str, StoredText]) -> None:
        with self._lock:
            for key, text in found.items():
                self._recent[key] = text
                self._recent.move_to_end(key)
            while len(self._recent) > self._kept:
                self._recent.popitem(last=False)


SHARED_TEXTS = hold(SharedTexts(), name="stored pipeline texts",
                    why="the runs of one text share one string, read once")
