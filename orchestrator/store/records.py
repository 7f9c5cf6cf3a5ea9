"""What the state store keeps: runs, steps, events, batches, schedules, models and leases.

Plain frozen records, shared by the store's contract (`base`), its implementations and every
reader (the engine, the CLI, the web view); none of them knows how it is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALIAS_PATTERN",
    "CANCEL_RETRY_AFTER",
    "AliasMove",
    "BatchRecord",
    "Clock",
    "ErrorInfo",
    "EventRecord",
    "Lease",
    "MetricPoint",
    "ModelEntry",
    "NewBatch",
    "NewEvent",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "ScheduleEntry",
    "StepRecord",
    "StepStatus",
    "parse_statuses",
    "text_hash",
]

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch; injected so tests can move time."""

CANCEL_RETRY_AFTER = 60.0
"""Seconds before workers try again to cancel a run whose cancellation could not be finished
(its provider unreachable, or refusing this worker's key): often enough to finish it soon after
the provider is back, rarely enough not to hammer it."""


class RunStatus(enum.StrEnum):
    PENDING = "pending"          # created, never started; the process that created it runs it
    QUEUED = "queued"            # created, never started; waiting for a worker to claim it
    RUNNING = "running"          # an executor holds (or held, if it crashed) the lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"            # a step failed for good; resumable
    INTERRUPTED = "interrupted"  # stopped by a signal; resumable
    CANCELLED = "cancelled"
    STRANDED = "stranded"        # crashed executors too often; parked until resumed by hand

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED,
                        RunStatus.CANCELLED, RunStatus.STRANDED)


class StepStatus(enum.StrEnum):
    PENDING = "pending"          # not started in this run (or reset by resume --from/--reload)
    RUNNING = "running"          # an attempt is in progress
    RETRYING = "retrying"        # an attempt failed transiently; the next starts at retry_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"      # stopped because another step failed
    INTERRUPTED = "interrupted"  # stopped by a signal or lost lease; re-entered on resume


@dataclass(frozen=True)
class ErrorInfo:
    """Why a step or run failed: the exception's type name and message (tracebacks go to events)."""

    type: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorInfo:
        return cls(str(data["type"]), str(data["message"]))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def parse_statuses(names: Iterable[str]) -> list[RunStatus]:
    """Run statuses by name (a filter's `status=failed,cancelled`); ValueError naming the
    first unknown one and the known ones."""
    found = []
    for name in names:
        try:
            found.append(RunStatus(name.strip()))
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            msg = f"{name.strip()[:40]!r}: not a run status (one of {known})"
            raise ValueError(msg) from None
    return found


def text_hash(text: str) -> str:
    """The key a pipeline text is stored under: once, however many runs and batches share it
    (the cells of a batch, the fires of a schedule), and read back shared, not copied."""
    import hashlib  # noqa: PLC0415  (start-up: a read-only command hashes nothing)

    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class NewRun:
    """A run to store. `status` is PENDING (the creating process executes it) or QUEUED (a
    worker will); `batch_id`/`cell`/`matrix` place it in a batch, `schedule_id` and
    `scheduled_for` say which schedule fired it, and when."""

    id: str
    pipeline_name: str
    pipeline_path: str
    pipeline_text: str
    inputs: Mapping[str, Any]
    status: RunStatus = RunStatus.PENDING
    batch_id: str | None = None
    cell: int | None = None
    matrix: Mapping[str, Any] | None = None
    schedule_id: str | None = None
    scheduled_for: float | None = None
    provider: str | None = None
    """The provider the run is bound to (`local`, `together`); None: none recorded."""
    provider_url: str | None = None
    """Where that provider is: a base URL, or the local API's data folder."""
    step_ids: tuple[str, ...] | None = None
    """The pipeline's steps and hooks in its order, stored with its text (`show` lists by it)."""


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline_name: str
    pipeline_path: str
    pipeline_text: str
    inputs: Mapping[str, Any]
    status: RunStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    lease_owner: str | None
    lease_generation: int
    lease_expires_at: float | None
    recoveries: int
    batch_id: str | None = None
    cell: int | None = None
    matrix: Mapping[str, Any] | None = None
    waiting_for: str | None = None
    """The concurrency key the run waits for before its first step, while it waits."""
    cancel_requested_at: float | None = None
    schedule_id: str | None = None
    scheduled_for: float | None = None
    provider: str | None = None
    provider_url: str | None = None
    step_ids: tuple[str, ...] | None = None
    """Its pipeline's steps and hooks in order, as stored with the text (None: stored before
    orders were kept; parse `pipeline_text`)."""

    @property
    def cancelling(self) -> bool:
        """Someone asked to cancel the run and it has not ended cancelled yet."""
        return self.cancel_requested_at is not None and self.status not in (
            RunStatus.CANCELLED, RunStatus.SUCCEEDED)

    @property
    def settled(self) -> bool:
        """It ended and no one executes it, nor will unless asked (a resume, a worker's
        claim of a cancel request): what `wait`, `logs --follow` and a live page wait for."""
        return self.status.finished and self.lease_owner is None

    def lease_live(self, now: float) -> bool:
        """A process holds the run's lease and it has not expired."""
        return self.lease_owner is not None and (self.lease_expires_at or 0.0) > now

    @property
    def lease(self) -> Lease | None:
        """The lease as stored (None when no one holds it)."""
        if self.lease_owner is None or self.lease_expires_at is None:
            return None
        return Lease(self.id, self.lease_owner, self.lease_generation, self.lease_expires_at)


@dataclass(frozen=True)
class StepRecord:
    """A step's whole persisted state; the executor writes full rows, never partial ones."""

    step_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    outputs: Mapping[str, Any] | None = None
    checkpoint: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    config_hash: str | None = None
    waiting_for: str | None = None
    """The concurrency key the step waits for before it starts, while it waits."""


@dataclass(frozen=True)
class NewEvent:
    kind: str
    step_id: str | None = None
    attempt: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    seq: int
    run_id: str
    ts: float
    kind: str
    step_id: str | None
    attempt: int | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class MetricPoint:
    """A fine-tune job's figures at one of its training steps, as the job reported them.

    Kept once per (run, step, job, training step): a later report of the same training step
    fills in what an earlier one lacked (Together reports an eval loss apart from the train
    loss of the same step), never duplicates it. What `metrics RUN` prints and the loss
    curves draw.
    """

    step_id: str
    job_id: str
    train_step: int
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens: int | None = None
    ts: float | None = None
    """When it was seen (the store sets it if None)."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.step_id, self.job_id, self.train_step)

    def merged(self, later: MetricPoint) -> MetricPoint:
        """This point with what `later` (the same key) adds."""
        def pick(a: Any, b: Any) -> Any:
            return a if b is None else b
        return MetricPoint(self.step_id, self.job_id, self.train_step,
                           pick(self.epoch, later.epoch), pick(self.train_loss, later.train_loss),
                           pick(self.eval_loss, later.eval_loss),
                           pick(self.learning_rate, later.learning_rate),
                           pick(self.tokens, later.tokens), pick(self.ts, later.ts))

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step_id, "job_id": self.job_id, "train_step": self.train_step,
                "epoch": self.epoch, "train_loss": self.train_loss, "eval_loss": self.eval_loss,
                "learning_rate": self.learning_rate, "tokens": self.tokens, "ts": self.ts}


@dataclass(frozen=True)
class RunUpdate:
    """A change of run status; `pipeline_text` replaces the stored text (resume --reload).

    `release` gives the lease up in the same transaction (an executor's last write).
    `waiting_for` is written with every update (None: not waiting). `clear_cancel` withdraws
    an earlier cancel request (resuming a cancelled run on purpose). `provider` (name, url)
    binds the run to another provider (resume --move-provider).
    """

    status: RunStatus
    error: str | None = None
    pipeline_text: str | None = None
    step_ids: tuple[str, ...] | None = None
    """With `pipeline_text`: its steps in order."""
    release: bool = False
    waiting_for: str | None = None
    clear_cancel: bool = False
    provider: tuple[str, str] | None = None


@dataclass(frozen=True)
class NewBatch:
    """A matrix expanded into runs; its cells are stored with it, in one transaction."""

    id: str
    pipeline_name: str
    pipeline_path: str
    pipeline_text: str
    inputs: Mapping[str, Any]
    max_parallel: int | None = None
    fail_fast: bool = False
    schedule_id: str | None = None
    scheduled_for: float | None = None
    step_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BatchRecord:
    """A stored batch; its status is its cells' (see `batch_status`)."""

    id: str
    pipeline_name: str
    pipeline_path: str
    pipeline_text: str
    inputs: Mapping[str, Any]
    max_parallel: int | None
    fail_fast: bool
    cells: int
    created_at: float
    schedule_id: str | None = None
    scheduled_for: float | None = None


@dataclass(frozen=True)
class ScheduleEntry:
    """A schedule as the scheduler knows it: where it comes from and the last time it fired.

    `last_fire` is the newest fire time the scheduler has dealt with (fired, skipped or let go
    by catch-up); the next tick looks only after it.
    """

    id: str
    pipeline_name: str
    pipeline_path: str
    cron: str
    timezone: str
    last_fire: float | None = None
    updated_at: float = 0.0
    paused_at: float | None = None
    """When someone paused it (the web view's Pause); None: it fires. A paused schedule's
    fire times pass unfired, and it starts again from the moment it is resumed."""


@dataclass(frozen=True)
class ModelEntry:
    """A model in the registry, with where it came from (its lineage)."""

    name: str
    run_id: str
    step_id: str
    pipeline_name: str
    provider: str | None = None
    base_model: str | None = None
    job_id: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    recorded_at: float = 0.0


ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A registry alias's name: `production`, `staging`, `eu.v2`..."""


@dataclass(frozen=True)
class AliasMove:
    """A registry alias (`production`, `staging`) pointed at a model: who moved it, when and
    why. The alias's current model is its latest move; the moves are its history."""

    alias: str
    model: str
    moved_by: str
    reason: str = ""
    source: str | None = None
    """What chose the model: a batch (`promote BATCH`) or a run (a `registry/promote` step)."""
    moved_at: float = 0.0
    seq: int = 0


@dataclass(frozen=True)
class Lease:
    """The right to execute (and write) one run, until `expires_at` unless renewed."""

    run_id: str
    owner: str
    generation: int
    expires_at: float
