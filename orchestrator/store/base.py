"""The state store's contract: what a run executor, the CLI and (later) a fleet of workers need.

Every write an executor makes goes through `commit`, fenced on its lease: the store applies it
only while `(lease_owner, lease_generation)` of the run still match the caller's lease, in the
same transaction, so an executor that stalled and lost its lease can never overwrite its
successor's work. Leases are renewed per owner (`renew_leases`), not per run, so a process
running thousands of runs heartbeats with one statement.

The records it reads and writes are in `records`; the decisions every implementation makes
the same way (who may take a lease, when a run is stranded) in `policy`, so an implementation
only writes its SQL. Implementations: `sqlite` (embedded default) and `postgres` (a fleet on
one database), checked by one test suite (`tests/store/test_contract.py`).
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from orchestrator.store.records import (
    AliasMove,
    BatchRecord,
    Clock,
    EventRecord,
    Lease,
    MetricPoint,
    ModelEntry,
    NewBatch,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleEntry,
    StepRecord,
)

if TYPE_CHECKING:
    from orchestrator.store.transfer import HistoryRow

__all__ = ["CANCEL", "SLOTS", "WORK", "StateStore"]

WORK = "work"
"""The topic announced when a run needs an executor (queued, put back, cancel requested)."""
SLOTS = "slots"
"""The topic announced when a concurrency slot is given back."""
CANCEL = "cancel"
"""The topic announced when a run's cancellation is requested."""

class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class StateStore(ABC):
    """Runs, steps, the append-only event log and leases. Use as `async with store:`."""

    announces = False
    """Whether `watch` wakes its callers (else they only poll): a store that announces
    changes lets them poll rarely."""

    def __init__(self, url: str, *, clock: Clock = time.time, read_only: bool = False) -> None:
        self.url = url
        self.clock = clock
        self.read_only = read_only
        """Its connections refuse every write (StateStoreInvalid): a reader such as the web
        view, which can never change what it shows. The schema is still created or migrated
        on opening, as for any store."""
        self.schema_change: tuple[int, int] | None = None
        """Set on opening: the (from, to) schema versions of a migration it ran, else None."""
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

    async def watch(self, topic: str, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process announces `topic` (WORK, SLOTS or CANCEL),
        until cancelled.

        A store that cannot announce anything never calls it: its readers poll.
        """
        del topic, wake
        import anyio  # noqa: PLC0415  (a read-only command never watches)

        await anyio.sleep_forever()

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
                        statuses: Collection[RunStatus] | None = None,
                        pipeline: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[RunRecord]:
        """Runs, newest first (a batch's in cell order), filtered by whatever is given
        (`pipeline` by name; `since` and `until` bound the creation time, until excluded)."""

    @abstractmethod
    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Every stored step of the run by id (steps never started have no row)."""

    @abstractmethod
    async def get_events(self, run_id: str, *, after: int = 0, before: int | None = None,
                         limit: int | None = None, newest: bool = False) -> list[EventRecord]:
        """The run's events with `after < seq < before`, oldest first: the first `limit` of
        them, or with `newest` the last `limit` (a page of a long log, read from its end)."""

    @abstractmethod
    async def get_metrics(self, run_id: str) -> list[MetricPoint]:
        """The run's metric points, by step, job and training step."""

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
    async def pause_schedule(self, schedule_id: str, paused: bool) -> ScheduleEntry:
        """Pause the schedule (now) or resume it: a resumed schedule starts from now, its
        fire times while paused let go (`last_fire` moves to now). RunNotFound if unknown."""

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

    @abstractmethod
    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        """Point `move.alias` at `move.model` (moved_at and seq set here), in one write; None
        when it points there already (nothing is added to its history: a promotion done
        twice, or again after a crash, moves it once)."""

    @abstractmethod
    async def aliases(self) -> list[AliasMove]:
        """Each alias's current model: the move that set it, by alias."""

    @abstractmethod
    async def alias_history(self, *, alias: str | None = None,
                            limit: int = 100) -> list[AliasMove]:
        """The latest alias moves (of `alias` alone, if given), newest first."""

    @abstractmethod
    async def get_model(self, name: str) -> ModelEntry | None:
        """The registry's entry for `name`, if it has one."""

    # -- moving a history between databases -------------------------------------------------

    @abstractmethod
    async def export_history(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        """Pass every row of the history tables (`transfer.HISTORY`, in that order) to
        `emit(table, row)`, from one consistent snapshot."""

    @abstractmethod
    async def import_history(self, rows: Iterable[HistoryRow], *, source: str) -> None:
        """Add the rows of an exported history in one transaction: all or nothing. A run,
        batch, schedule or model already here refuses it (StateStoreInvalid naming `source`
        and what was there); events get new numbers, in their order."""

    # -- fenced writes -----------------------------------------------------------------------

    @abstractmethod
    async def commit(
        self,
        lease: Lease,
        *,
        run: RunUpdate | None = None,
        steps: Sequence[StepRecord] = (),
        events: Sequence[NewEvent] = (),
        metrics: Sequence[MetricPoint] = (),
    ) -> None:
        """Apply a run update, whole step rows, new events and metric points in one
        transaction. `metrics` holds at most one point per key (`MetricPoint.key`); a point
        already stored is filled in (see `MetricPoint`).

        Raises LeaseLost, writing nothing, if `lease` no longer holds the run.
        """
