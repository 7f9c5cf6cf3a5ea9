"""The decisions every state store makes the same way, whatever its SQL dialect.

Who may take a run's lease, when a takeover counts as a recovery from a crashed executor, when
a run has been recovered too often and is parked as `stranded`, and which runs a worker claims.
An implementation reads the run's row, asks these functions, and writes what they say in the
same transaction; so SQLite and PostgreSQL cannot drift apart on a rule, and the contract suite
checks each backend's claim query against `claimable`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from orchestrator.errors import LeaseLost, RunBusy, RunExists, RunNotFound, RunStranded
from orchestrator.store.records import (
    CANCEL_RETRY_AFTER,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
)

__all__ = ["LeaseTaken", "Stranded", "batch_exists", "check_lease_free", "claimable",
           "creation_events", "lease_lost", "needs_executor", "no_such_batch", "no_such_run",
           "run_exists", "slot_grants", "take_lease"]


@dataclass(frozen=True)
class LeaseTaken:
    """Write the new lease (owner, generation, expiry) and the recovery count, log `event`."""

    lease: Lease
    recoveries: int
    event: NewEvent


@dataclass(frozen=True)
class Stranded:
    """Park the run as stranded (no lease, `finished_at` now), log `event`, commit, and then
    raise `error`: the parking must be committed, so it is returned rather than raised."""

    recoveries: int
    event: NewEvent
    error: RunStranded


def check_lease_free(run: RunRecord, owner: str, *, now: float,
                     dead_owners: Collection[str] = ()) -> None:
    """Raise RunBusy if another owner holds the run's lease live (one known dead does not)."""
    holder = run.lease_owner
    expires = run.lease_expires_at or 0.0
    if holder is not None and holder != owner and expires > now and holder not in dead_owners:
        msg = (f"run {run.id} is being executed by {holder} (its lease runs for another "
               f"{expires - now:.0f}s); wait for it to finish or stop that process")
        raise RunBusy(msg)


def take_lease(run: RunRecord, owner: str, *, now: float, ttl: float, max_recoveries: int,
               force: bool) -> LeaseTaken | Stranded:
    """What giving `owner` the run's lease writes (the caller checked it is free).

    A run still `running` had an executor that never finished it: taking it over is a
    recovery. Past `max_recoveries` the run is parked instead; `force` (resume --force)
    starts the count again.
    """
    crashed = run.status is RunStatus.RUNNING
    recoveries = 0 if force else run.recoveries + int(crashed)
    if recoveries > max_recoveries:
        return Stranded(recoveries, NewEvent("run_stranded", data={
            "recoveries": recoveries, "max_recoveries": max_recoveries}), RunStranded(
            f"run {run.id} was recovered from a crashed executor {recoveries - 1} "
            f"times (max_recoveries = {max_recoveries}) and is parked as stranded; see "
            f"`orchestrator logs {run.id}`, then `orchestrator resume {run.id} --force`"))
    generation = run.lease_generation + 1
    return LeaseTaken(Lease(run.id, owner, generation, now + ttl), recoveries, NewEvent(
        "lease_acquired", data={"owner": owner, "generation": generation,
                                "previous_owner": run.lease_owner,
                                "recovered_from_crash": crashed}))


def needs_executor(run: RunRecord) -> bool:
    """Queued, maybe crashed, or with a cancellation still to carry out."""
    return run.status in (RunStatus.QUEUED, RunStatus.RUNNING) or (
        run.cancel_requested_at is not None
        and run.status not in (RunStatus.CANCELLED, RunStatus.SUCCEEDED))


def claimable(run: RunRecord, *, now: float, dead_owners: Collection[str] = ()) -> bool:
    """Whether a worker claims `run` now (the rule each store's claim query implements).

    It needs an executor and has none live (no lease, an expired one, or one of a process
    known to be gone). One that ended with its cancel request pending (its provider could not
    be reached) is retried only `CANCEL_RETRY_AFTER` after it ended, so workers do not hammer
    the provider at every poll.
    """
    if not needs_executor(run):
        return False
    free = (run.lease_owner is None or (run.lease_expires_at or 0.0) <= now
            or run.lease_owner in dead_owners)
    if not free:
        return False
    finished = run.finished_at
    return (finished is None
            or (run.cancel_requested_at is not None and finished <= run.cancel_requested_at)
            or finished <= now - CANCEL_RETRY_AFTER)


def slot_grants(held: Collection[str], holders: Sequence[tuple[str, str]],
                limit: int) -> list[tuple[str, str, bool]]:
    """Which of `holders` (holder, run id) get a slot of a key whose live slots are `held`,
    in the order asked, with whether each already held one.

    A holder keeps its own slot (taking it over from another owner: a run resumed elsewhere)
    without counting twice; the others fill what is left up to `limit`, first come first.
    """
    taken = set(held)
    grants = []
    for holder, run_id in holders:
        if holder in taken:
            grants.append((holder, run_id, True))
        elif len(taken) < limit:
            taken.add(holder)
            grants.append((holder, run_id, False))
    return grants


def creation_events(run: NewRun, owner: str | None) -> list[NewEvent]:
    """What a new run's log starts with: its creation, and its lease if created leased."""
    events = [NewEvent("run_created", data={"pipeline": run.pipeline_name,
                                            "path": run.pipeline_path,
                                            "provider": run.provider,
                                            "provider_url": run.provider_url})]
    if owner is not None:
        events.append(NewEvent("lease_acquired", data={
            "owner": owner, "generation": 1, "previous_owner": None,
            "recovered_from_crash": False}))
    return events


# -- the errors every store raises in the same words -------------------------------------------

def no_such_run(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run with id {run_id!r} (list runs with `orchestrator runs`, "
                       "batches with `orchestrator batches`)")


def no_such_schedule(schedule_id: str) -> RunNotFound:
    return RunNotFound(f"no schedule {schedule_id!r} (a scheduler records each schedule it "
                       "runs: orchestrator schedules lists them)")


def no_such_batch(batch_id: str) -> RunNotFound:
    return RunNotFound(f"no batch with id {batch_id!r} (list batches with "
                       "`orchestrator batches`)")


def run_exists(run_id: str) -> RunExists:
    return RunExists(f"a run with id {run_id} already exists")


def batch_exists(batch_id: str) -> RunExists:
    return RunExists(f"a batch with id {batch_id} already exists")


def lease_lost(lease: Lease) -> LeaseLost:
    return LeaseLost(f"run {lease.run_id}: this process's lease (generation "
                     f"{lease.generation}) was taken over; its writes are refused")
