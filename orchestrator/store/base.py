"""The state store's contract: what a run executor, the CLI and (later) a fleet of workers need.

Every write an executor makes goes through `commit`, fenced on its lease: the store applies it
only while `(lease_owner, lease_generation)` of the run still match the caller's lease, in the
same transaction, so an executor that stalled and lost its lease can never overwrite its
successor's work. Leases are renewed per owner (`renew_leases`), not per run, so a process
running thousands of runs heartbeats with one statement.

Implementations: `sqlite` (embedded default). A PostgreSQL one follows the same contract and is
checked by the same test suite (`tests/store/test_contract.py`).
"""

from __future__ import annotations

import enum
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = [
    "CANCEL_RETRY_AFTER",
    "BatchRecord",
    "Clock",
    "ErrorInfo",
    "EventRecord",
    "Lease",
    "ModelEntry",
    "NewBatch",
    "NewEvent",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "ScheduleEntry",
    "StateStore",
    "StepRecord",
    "StepStatus",
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


def text_hash(text: str) -> str:
    """The key a pipeline text is stored under: once, however many runs and batches share it
    (the cells of a batch, the fires of a schedule), and read back shared, not copied."""
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

    @property
    def cancelling(self) -> bool:
        """Someone asked to cancel the run and it has not ended cancelled yet."""
        return self.cancel_requested_at is not None and self.status not in (
            RunStatus.CANCELLED, RunStatus.SUCCEEDED)

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


@dataclass(frozen=True)
class Lease:
    """The right to execute (and write) one run, until `expires_at` unless renewed."""

    run_id: str
    owner: str
    generation: int
    expires_at: float


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class StateStore(ABC):
    """Runs, steps, the append-only event log and leases. Use as `async with store:`."""

    def __init__(self, url: str, *, clock: Clock = time.time) -> None:
        self.url = url
        self.clock = clock
        self._state = _State.UNOPENED

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            msg = f"a state store can be opened once; this one is {self._state.value}"
            raise RuntimeError(msg)
        await self._open()
        self._state = _State.OPENED
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._state = _State.CLOSED
        await self._close()

    def _check_open(self) -> None:
        if self._state is not _State.OPENED:
            msg = f"the state store is {self._state.value}; use it inside `async with store:`"
            raise RuntimeError(msg)

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    # -- runs --------------------------------------------------------------------------------

    @abstractmethod
    async def create_run(self, run: NewRun, *, owner: str | None = None,
                         ttl: float = 0.0) -> RunRecord:
        """Store a new pending run; raises RunExists if the id is taken.

        With `owner`, the run is created with its lease already held by `owner` for `ttl`
        seconds (generation 1; see `RunRecord.lease`), so no one else can claim it first.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord:
        """The run; raises RunNotFound."""

    @abstractmethod
    async def create_batch(self, batch: NewBatch, cells: Sequence[NewRun], *,
                           owner: str | None = None, ttl: float = 0.0
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        """Store a batch and its cells' runs at once (all or nothing); raises RunExists.

        Each cell's `batch_id` and `cell` are set here. With `owner`, every cell is created
        with its lease held by `owner` (as in `create_run`).
        """

    @abstractmethod
    async def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch; raises RunNotFound."""

    @abstractmethod
    async def list_batches(self, *, limit: int = 50) -> list[BatchRecord]:
        """The most recently created batches, newest first."""

    @abstractmethod
    async def list_runs(self, *, limit: int | None = 50, batch_id: str | None = None,
                        schedule_id: str | None = None,
                        statuses: Collection[RunStatus] | None = None) -> list[RunRecord]:
        """Runs, newest first (a batch's in cell order), filtered by whatever is given."""

    @abstractmethod
    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Every stored step of the run by id (steps never started have no row)."""

    @abstractmethod
    async def get_events(self, run_id: str, *, after: int = 0,
                         limit: int | None = None) -> list[EventRecord]:
        """The run's events with `seq > after`, oldest first."""

    # -- leases ------------------------------------------------------------------------------

    @abstractmethod
    async def acquire_lease(
        self,
        run_id: str,
        owner: str,
        *,
        ttl: float,
        max_recoveries: int,
        dead_owners: Collection[str] = (),
        force: bool = False,
    ) -> Lease:
        """Take the run's lease, bumping its generation (which fences off any older holder).

        Raises RunBusy while another owner's lease is live; a lease past its expiry, or held
        by an owner in `dead_owners` (known to have exited), is taken over. Taking over a run
        whose status is still `running` counts as a recovery from a crash; past
        `max_recoveries` the run is set `stranded` and RunStranded raised, unless `force`,
        which also resets the count.
        """

    @abstractmethod
    async def claim_runs(self, owner: str, *, limit: int, ttl: float, max_recoveries: int,
                         dead_owners: Collection[str] = ()) -> list[Lease]:
        """Take up to `limit` runs that need an executor and have none, oldest first.

        Those are queued runs, runs whose executor crashed (status `running`, lease expired,
        or held by an owner in `dead_owners`, known to have exited) and runs with a pending
        cancel request that no one executes (one whose cancellation already failed once it
        ended: again `CANCEL_RETRY_AFTER` after that). Leases are taken as in `acquire_lease`
        (a run recovered too often is parked as stranded, not returned).
        """

    @abstractmethod
    async def lease_owners(self) -> set[str]:
        """The owners holding live leases right now (to find those whose process exited)."""

    @abstractmethod
    async def renew_leases(self, owner: str, *, ttl: float) -> set[str]:
        """Extend every lease and concurrency slot `owner` holds; returns the ids of the runs
        it still holds."""

    # -- cancellation ------------------------------------------------------------------------

    @abstractmethod
    async def request_cancel(self, run_ids: Collection[str]) -> list[RunRecord]:
        """Ask for the runs to be cancelled (not succeeded or cancelled ones); returns them.

        The request is only a mark: the process executing a run notices it (see
        `cancel_requests`); for a run no one executes, the next executor carries it out.
        """

    @abstractmethod
    async def cancel_requests(self, owner: str) -> set[str]:
        """Ids of the runs `owner` holds whose cancellation was requested."""

    # -- concurrency slots -------------------------------------------------------------------

    @abstractmethod
    async def acquire_slots(self, key: str, limit: int, holders: Sequence[tuple[str, str]], *,
                            owner: str, ttl: float) -> list[str]:
        """Grant slots of `key` to as many `(holder, run_id)` as `limit` allows, in order.

        Slots are leases: a slot not renewed (`renew_leases`) within `ttl` is free again, so a
        crashed process cannot keep one. A holder that already has a live slot of `key` keeps
        it (taking it over from another owner: a run resumed elsewhere). Returns the holders
        granted, in the order asked.
        """

    @abstractmethod
    async def release_slot(self, key: str, holder: str, *, owner: str) -> None:
        """Give back a slot `owner` holds (fenced: a slot another process took over stays)."""

    # -- schedules ---------------------------------------------------------------------------

    @abstractmethod
    async def sync_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Add or update a schedule's source (cron, zone, file); keeps its `last_fire`."""

    @abstractmethod
    async def list_schedules(self) -> list[ScheduleEntry]:
        """Every schedule the scheduler has seen, by id."""

    @abstractmethod
    async def advance_schedule(self, schedule_id: str, expected: float | None,
                               last_fire: float) -> bool:
        """Move `last_fire` from `expected` to `last_fire`; False if another scheduler
        moved it first (compare-and-set, so two schedulers never both act on one tick)."""

    @abstractmethod
    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up (fenced: a lease already taken over is left alone)."""

    # -- the model registry ------------------------------------------------------------------

    @abstractmethod
    async def record_model(self, entry: ModelEntry) -> ModelEntry:
        """Add or replace the registry's entry for `entry.name` (recorded_at is set here)."""

    @abstractmethod
    async def list_models(self, *, limit: int = 100) -> list[ModelEntry]:
        """The most recently recorded models, newest first."""

    # -- fenced writes -----------------------------------------------------------------------

    @abstractmethod
    async def commit(
        self,
        lease: Lease,
        *,
        run: RunUpdate | None = None,
        steps: Sequence[StepRecord] = (),
        events: Sequence[NewEvent] = (),
    ) -> None:
        """Apply a run update, whole step rows and new events in one transaction.

        Raises LeaseLost, writing nothing, if `lease` no longer holds the run.
        """
