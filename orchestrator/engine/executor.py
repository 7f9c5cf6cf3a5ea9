"""Executes one run's step graph, while this process holds the run's lease.

Layers, one concern each: `execute` (the run's own concurrency slots, then start steps as their
dependencies succeed, stop on a failure) -> `_run_step` (a place among the run's parallel
steps) -> `_run_chain` (going on down a chain; what a step's failure or cancellation means for
the run) -> `attempts.StepAttempts.run` (the step's slots, attempts, backoff, re-entry after a
crash). The steps' contexts read the run and write through its `runhost.RunHost`.

Its writes go through the run's journal (`journal`: queued, masked, fenced), its concurrency
slots through `runslots`. A cancelled run ends with `_carry_out_cancel`: the step types'
cancel hooks undo what the run started remotely (its fine-tune jobs), then it is `cancelled`.

Every state change is committed before anything that depends on it happens: a step's outputs
before its dependents start, a checkpoint before `ctx.checkpoint()` returns, a failed attempt
(with its retry time) before the backoff sleep. A crash at any point therefore loses at most the
attempt in progress, which a resume re-enters with its last checkpoint.

(Over 400 lines: the graph and the lifecycle share the run's stop state and cancel scope, which
a step's failure, a lost lease, a signal and a cancel each set from a different task; apart,
each half would hand the other all of it.)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress

import anyio
from anyio.abc import TaskGroup

from orchestrator.definition.expressions import ExpressionError
from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.attempts import StepAttempts, StepFailed
from orchestrator.engine.journal import RunJournal
from orchestrator.engine.resolve import Resolution
from orchestrator.engine.runhost import RunHost
from orchestrator.engine.runslots import RunSlots
from orchestrator.engine.services import RunServices
from orchestrator.errors import LeaseLost, leaf_errors
from orchestrator.log import get_logger
from orchestrator.process import hold
from orchestrator.providers.refs import ProviderRef
from orchestrator.redact import REDACTOR
from orchestrator.steps.context import NO_CLIENTS, Clients, StepContext
from orchestrator.store.records import (
    ErrorInfo,
    Lease,
    NewEvent,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepRecord,
    StepStatus,
)

__all__ = ["RunExecutor", "RunOutcome"]


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """How an execution of a run ended."""

    run_id: str
    status: RunStatus
    error: str | None = None
    failed_step: str | None = None
    resume_from: str | None = None
    """For a failure a plain resume cannot fix (the remote job a step follows has ended), or
    a cancellation that cancelled the run's remote work (its fine-tune job), the step to
    resume from: `resume RUN --from <it>`."""
    failed_hooks: tuple[str, ...] = ()
    """The run's hooks (`on_failure.notify`...) that failed; they do not change its status."""


class _Stop(enum.Enum):
    NONE = "none"
    STEP_FAILED = "step_failed"
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"


class _SingleErrors:
    """Re-raises a task group's lone error as itself, so callers see e.g. StateStoreInvalid.

    A class, not a generator: one shared instance costs a waiting run nothing, where a
    generator's frame stayed alive with it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, BaseExceptionGroup):
            leaves = [e for e in leaf_errors(exc)
                      if not isinstance(e, anyio.get_cancelled_exc_class())]
            if len(leaves) == 1:
                raise leaves[0] from None


_single_errors = _SingleErrors()


class _Phase:
    """A stretch of a run's work (its steps, then its hooks), inside the run's cancel scope (a
    lost lease or a cancel stops it; the process's DeferredFlusher writes what waits
    meanwhile): a signal leaves the run interrupted and is re-raised; a lost lease raises
    LeaseLost, nothing more written.

    A class, not an asynccontextmanager: that one's generator and wrapper stayed alive with
    every waiting run (0.5 KiB)."""

    __slots__ = ("_executor",)

    def __init__(self, executor: RunExecutor) -> None:
        self._executor = executor

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        executor = self._executor
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            with anyio.CancelScope(shield=True), suppress(LeaseLost):
                await executor.end_interrupted()
            return  # and the cancellation goes on
        if exc is None and executor.lease_lost:
            msg = (f"run {executor.run_id}: another process took the run's lease over; this "
                   "process stopped without writing")
            raise LeaseLost(msg)


CANCELLED_WORK = ""
"""The key of `_resume_from` for a cancellation: the first step whose remote work it
cancelled (no step id is empty)."""

_fresh_record = hold(functools.lru_cache(maxsize=4096)(StepRecord), name="fresh step records",
                     why="runs waiting on a step share its record before it ran")
"""A step's record before it ran, one for every run (records are immutable): a waiting run
need not hold one per step it has not reached."""


class RunExecutor:
    """One execution of one run, from a held lease to a committed status: the run's lifecycle
    (start, conclude, hooks, cancel, interruption) and its step graph. A step's attempts are
    `attempts.StepAttempts`'; what its context reads and writes, `runhost.RunHost`'s."""

    def __init__(
        self,
        services: RunServices,
        *,
        lease: Lease,
        run: RunRecord,
        pipeline: Pipeline,
        records: Mapping[str, StepRecord],
        secrets: Mapping[str, str],
        clients: Clients = NO_CLIENTS,
        run_slots: Sequence[tuple[str, int]] = (),
        interrupted_status: RunStatus = RunStatus.INTERRUPTED,
        moved: tuple[ProviderRef, ProviderRef] | None = None,
    ) -> None:
        self._services = services
        self._lease = lease
        self._run = run
        self._pipeline = pipeline
        self._journal = RunJournal(services.store, lease,
                                   {sid: records.get(sid) or _fresh_record(sid)
                                    for sid in pipeline.every_step},
                                   flusher=services.flusher, on_lease_lost=self.lose_lease)
        self._records = self._journal.records
        self._successors = pipeline.successors
        self._resolution = Resolution.of_run(run, pipeline, self._records, secrets)
        self._run_slots = list(run_slots)
        self._interrupted_status = interrupted_status
        self._move = moved
        """(from, to) when the run moves to another provider than the one it started on."""
        # Bound explicitly (not through contextvars, which copy the whole context on every
        # bind): every line, and every line a step logs through ctx.log, names run, step
        # and attempt.
        self._log = get_logger().bind(run_id=run.id, step=None, attempt=None)
        self._slots = RunSlots(services.slots, run.id, pipeline, resolution=self._resolution,
                               journal=self._journal, log=self._log)
        self._host = RunHost(services, run.id, pipeline, journal=self._journal,
                             slots=self._slots, log=self._log, clients=clients,
                             cancel_requested=self.cancel_requested)
        self._resume_from: dict[str, str] = {}
        """For each failed step whose remote job ended, where a resume has to start."""
        self._attempts = StepAttempts(
            pipeline=pipeline, journal=self._journal, slots=self._slots,
            resolution=self._resolution, host=self._host, log=self._log, rng=services.rng,
            clock=services.clock, resume_from=self._resume_from)
        self._started: set[str] = set()
        self._stop = _Stop.NONE
        self._failure: tuple[str, ErrorInfo] | None = None
        self._failed_hooks: list[str] = []
        self._scope = anyio.CancelScope()
        self.released = False
        """True once the executor gave its lease up with its last write."""

    # -- the run's end -----------------------------------------------------------------------

    async def _finish(self, status: RunStatus, error: str | None = None) -> RunOutcome:
        error = error and REDACTOR.text(error)  # as stored, as printed: secrets masked
        self._slots.note_all_released()
        self._journal.note(NewEvent("run_finished", data={"status": status.value,
                                                         "error": error}))
        await self._journal.flush(run=RunUpdate(status, error, release=True))
        self.released = True
        log = self._log.error if status is RunStatus.FAILED else self._log.info
        log("run finished", status=status.value, **({"error": error} if error else {}))
        failed_step = self._failure[0] if self._failure else None
        restart = (self._resume_from.get(failed_step or "") if status is RunStatus.FAILED
                   else self._resume_from.get(CANCELLED_WORK))
        return RunOutcome(self._run.id, status, error, failed_step, restart,
                          tuple(self._failed_hooks))

    # -- cancellation ------------------------------------------------------------------------

    async def _carry_out_cancel(self) -> RunOutcome:
        """Undo what the run's steps started remotely (their types' cancel hooks), then end
        the run `cancelled`. If some remote work could not be cancelled, the run stays
        cancel-requested (`interrupted`) for the next executor to finish the job."""
        problems = []
        for step_id, step in self._pipeline.steps.items():
            record = self._records[step_id]
            hook = step.type.cancel
            if hook is None or (record.attempt == 0 and not record.checkpoint):
                continue
            ctx = StepContext(self._host, step_id, max(1, record.attempt), record.checkpoint)
            try:
                with anyio.fail_after(60):
                    await hook(ctx)
            except Exception as exc:  # noqa: BLE001  (reported; the run stays cancel-requested)
                error = ErrorInfo(type(exc).__name__, REDACTOR.text(str(exc)))
                problems.append(f"step {step_id}: {error}")
                self._journal.note(NewEvent("remote_cancel_failed", step_id,
                                            data={"error": error.to_json()}))
            else:
                self._journal.note(NewEvent("remote_cancelled", step_id))
                self._resume_from.setdefault(CANCELLED_WORK, step_id)
        if problems:
            return await self._finish(
                RunStatus.INTERRUPTED, "cancellation incomplete: could not cancel the remote "
                "work of " + "; ".join(problems) + f" (try again: orchestrator cancel "
                f"{self._run.id})")
        return await self._finish(RunStatus.CANCELLED, "cancelled")

    # -- the graph ---------------------------------------------------------------------------

    def _is_ready(self, step_id: str) -> bool:
        if step_id in self._started or self._records[step_id].status is StepStatus.SUCCEEDED:
            return False
        return all(self._records[need].status is StepStatus.SUCCEEDED
                   for need in self._pipeline.steps[step_id].needs)

    @functools.cached_property
    def _limiter(self) -> anyio.CapacityLimiter:
        """The run's concurrency slots (`max_parallel_steps`), made when a second branch
        starts: a chain never needs one."""
        return anyio.CapacityLimiter(self._services.max_parallel_steps)

    def _launch(self, step_id: str, tg: TaskGroup) -> None:
        self._started.add(step_id)
        tg.start_soon(self._run_step, step_id, tg, name=f"step {step_id}")

    async def execute(self, *, reset: Collection[str] = (),
                      reload_text: str | None = None) -> RunOutcome:
        """Run every step not yet succeeded (plus those in `reset`) and commit the run's status.

        Cancellation from outside (a signal) leaves the run `interrupted` and re-raises. A lost
        lease stops everything without writing and raises LeaseLost. A run whose cancellation
        was requested is not executed: its cancellation is carried out instead.
        """
        try:
            if self._run.cancelling:
                return await self._carry_out_cancel()
            try:
                run_slots = [*self._run_slots, *self._slots.pipeline_slot()]
            except ExpressionError as exc:
                return await self._finish(RunStatus.FAILED, f"concurrency.key: {exc}")
            await self._start(reset, reload_text)
            async with _Phase(self):
                with self._scope, _single_errors:
                    for key, limit in run_slots:
                        await self._slots.take_run_slot(key, limit)
                    ready = [s for s in self._pipeline.steps if self._is_ready(s)]
                    if len(ready) == 1:  # a chain: it runs in this task until it forks
                        self._started.add(ready[0])
                        await self._run_chain(ready[0], None)
                    elif ready:
                        async with anyio.create_task_group() as tg:
                            for step_id in ready:
                                self._launch(step_id, tg)
            return await self._conclude()
        finally:
            with anyio.CancelScope(shield=True):
                await self._slots.release_all()

    async def _start(self, reset: Collection[str], reload_text: str | None) -> None:
        """Commit that the run started (its `reset` steps made new, a reloaded text, a move
        to another provider). Apart from `execute`, so what it writes is not kept alive
        with a waiting run."""
        for step_id in reset:
            self._records[step_id] = _fresh_record(step_id)
        events = [NewEvent("run_started", data={
            "owner": self._lease.owner, "generation": self._lease.generation,
            "reset": sorted(reset), "reloaded": reload_text is not None})]
        moved_to = None
        if self._move is not None:
            before, moved_to = self._move
            events.insert(0, NewEvent("provider_moved", data={
                "from": before.name, "from_url": before.url,
                "to": moved_to.name, "to_url": moved_to.url}))
            self._log.warning("run moved to another provider", previous=str(before),
                              provider=str(moved_to))
        await self._services.store.commit(
            self._lease,
            run=RunUpdate(RunStatus.RUNNING, pipeline_text=reload_text,
                          step_ids=tuple(self._pipeline.every_step) if reload_text else None,
                          clear_cancel=self._run.status is RunStatus.CANCELLED,
                          provider=(moved_to.name, moved_to.url) if moved_to else None),
            steps=[self._records[s] for s in sorted(reset)],
            events=events,
        )
        self._log.info("run started", pipeline=self._pipeline.name, owner=self._lease.owner)

    async def _conclude(self) -> RunOutcome:
        """The run's steps stopped: carry out its cancel, or run its hooks and commit how it
        ended."""
        if self._stop is _Stop.CANCELLED:
            return await self._carry_out_cancel()
        if self._failure is not None:
            step_id, error = self._failure
            message = f"step {step_id} failed: {error}"
            await self._run_hooks("on_failure", RunStatus.FAILED, message, step_id)
            return await self._finish(RunStatus.FAILED, message)
        if all(self._records[s].status is StepStatus.SUCCEEDED for s in self._pipeline.steps):
            await self._run_hooks("on_success", RunStatus.SUCCEEDED, None, None)
            return await self._finish(RunStatus.SUCCEEDED)
        return await self._finish(RunStatus.INTERRUPTED, "stopped before every step ran")

    async def _run_hooks(self, section: str, status: RunStatus, error: str | None,
                         failed_step: str | None) -> None:
        """The hooks of the run's outcome, in order, each as a step (retries, timeout,
        checkpoints, kept outputs); one that succeeded before (a resumed run) is not run
        again. A hook that fails is noted (`failed_hooks`), never the run's outcome.

        A signal here leaves the run interrupted, as during its steps; a lost lease stops
        without writing."""
        hooks = self._pipeline.hooks.get(section)
        if not hooks:
            return
        self._resolution.outcome(status.value, error and REDACTOR.text(error), failed_step)
        self._stop, self._scope = _Stop.NONE, anyio.CancelScope()
        async with _Phase(self):
            with self._scope, _single_errors:
                for hid, hook in hooks.items():
                    if self._records[hid].status is StepStatus.SUCCEEDED:
                        continue
                    try:
                        await self._attempts.run(hook)
                    except StepFailed:
                        self._failed_hooks.append(hid)
                        self._log.warning("hook failed; the run keeps its outcome", step=hid,
                                          status=status.value)
                    except LeaseLost:
                        self.lose_lease()
                    except anyio.get_cancelled_exc_class():
                        with anyio.CancelScope(shield=True):
                            await self._stopped(hid)
                        raise

    @property
    def run_id(self) -> str:
        return self._run.id

    @property
    def lease_lost(self) -> bool:
        return self._stop is _Stop.LEASE_LOST

    async def end_interrupted(self) -> None:
        """Commit that a signal stopped the run (`interrupted`, or back to the queue)."""
        await self._finish(self._interrupted_status, "interrupted")

    def lose_lease(self) -> None:
        """Called when the heartbeat finds the lease gone: stop at once, write nothing more."""
        self._stop = _Stop.LEASE_LOST
        self._scope.cancel()

    def cancel_requested(self) -> bool:
        return self._stop is _Stop.CANCELLED

    def cancel(self) -> None:
        """Cancel the run: in-flight steps stop (cancelling their remote work) and the run ends
        `cancelled`. Unlike an interruption, a cancelled run is not meant to be resumed."""
        if self._stop is _Stop.NONE:
            self._stop = _Stop.CANCELLED
            self._scope.cancel()

    async def _run_step(self, step_id: str, tg: TaskGroup) -> None:
        """Run `step_id` and the chain it starts, in a task of `tg`, under a concurrency slot."""
        async with self._limiter:
            await self._run_chain(step_id, tg)

    async def _run_chain(self, current: str | None, tg: TaskGroup | None) -> None:
        """Run `current`, then go straight on with one successor it made ready.

        Continuing in the same task, with the same concurrency slot, spares a task per step
        in a chain (the usual shape of a pipeline) and finishes chains depth-first. Other
        successors made ready get tasks of their own. A run whose steps form one chain
        (`tg` None) needs no task group, slot or task at all until it forks: a task group
        and a step's task are 5 of the 28 KiB a waiting run held.
        """
        while current is not None:
            try:
                await self._attempts.run(self._pipeline.steps[current])
            except StepFailed:
                if self._stop is _Stop.NONE:
                    self._stop = _Stop.STEP_FAILED
                    error = self._records[current].error or ErrorInfo("Error", "failed")
                    self._failure = (current, error)
                if tg is not None:  # its siblings stop
                    tg.cancel_scope.cancel()
                return
            except LeaseLost:
                self.lose_lease()
                return
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._stopped(current)
                raise
            ready = [s for s in self._successors[current] if self._is_ready(s)]
            self._started.update(ready)
            if len(ready) > 1:
                if tg is None:  # the chain forks: from here its branches run side by side
                    async with anyio.create_task_group() as forked, self._limiter:
                        for successor in ready[1:]:
                            self._launch(successor, forked)
                        await self._run_chain(ready[0], forked)
                    return
                for successor in ready[1:]:
                    self._launch(successor, tg)
            current = ready[0] if ready else None

    async def _stopped(self, step_id: str) -> None:
        """Record why an in-flight step stopped: a sibling failed, or the run was interrupted."""
        record = self._records[step_id]
        if self._stop is _Stop.LEASE_LOST:
            return
        if record.status not in (StepStatus.RUNNING, StepStatus.RETRYING):
            if record.waiting_for is not None:  # stopped while waiting for a slot
                with suppress(LeaseLost):
                    await self._journal.save(step_id, NewEvent("slot_wait_ended", step_id),
                                             waiting_for=None)
            return
        if self._stop in (_Stop.STEP_FAILED, _Stop.CANCELLED):
            status, kind = StepStatus.CANCELLED, "step_cancelled"
        elif record.status is StepStatus.RETRYING:
            status, kind = StepStatus.RETRYING, "step_interrupted"  # keeps its retry time
        else:
            status, kind = StepStatus.INTERRUPTED, "step_interrupted"
        with suppress(LeaseLost):  # its end is now: its duration stops growing
            await self._journal.save(step_id, NewEvent(kind, step_id, record.attempt),
                                     status=status, finished_at=self._services.clock())
        self._log.warning("step stopped", step=step_id, attempt=record.attempt,
                          status=status.value)
