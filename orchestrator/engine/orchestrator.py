"""The orchestrator of one process: creates runs and executes them under leases.

A process has one owner id (`host:pid:random`) and one heartbeat task that renews every lease
(and concurrency slot) it holds with a single statement, however many runs it executes. If a
renewal finds a run's lease gone (another process took it over after this one stalled), that
run's executor is stopped at once; its writes would be refused anyway (fencing), this just
stops the work. A second loop asks the store, once a `cancel_poll_interval` (or, on a store
that announces cancel requests, when one is announced), whether anyone asked to cancel one of
the runs this process executes (`orchestrator cancel` from another terminal), and cancels it
here. What a resume would do is planned by `planner`.

(Over 400 lines: creating, queueing, executing and cancelling runs all go through the one
table of runs this process executes, which the heartbeat renews and the cancel watch reads.)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.definition.limits import DEFAULT_LIMITS, PipelineLimits
from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.executor import RunExecutor, RunOutcome
from orchestrator.engine.journal import DeferredFlusher
from orchestrator.engine.plan import (
    ExecutionPlan,
    ResumeRequest,
    bound_provider,
    read_secrets,
)
from orchestrator.engine.planner import ResumePlanner
from orchestrator.engine.services import ProgressSink, RunServices
from orchestrator.engine.slots import SlotPool
from orchestrator.errors import RunExists
from orchestrator.ids import new_batch_id, new_run_id
from orchestrator.log import get_logger
from orchestrator.owners import new_owner_id, owner_is_dead
from orchestrator.providers.refs import ProviderRef
from orchestrator.redact import REDACTOR
from orchestrator.steps.context import NO_CLIENTS, Clients
from orchestrator.steps.registry import StepRegistry
from orchestrator.store.base import CANCEL, StateStore
from orchestrator.store.records import (
    BatchRecord,
    Lease,
    NewBatch,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepRecord,
)

if TYPE_CHECKING:
    from orchestrator.providers.pool import Providers

__all__ = ["EngineConfig", "Orchestrator"]


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """The settings the engine itself uses (a subset of `Settings`)."""

    max_parallel_steps: int = 8
    lease_ttl: float = 30.0
    max_recoveries: int = 3
    slot_poll_interval: float = 1.0
    """How often waiters ask the store for slots other processes gave back."""
    cancel_poll_interval: float = 1.0
    """How often the store is asked for cancel requests of the runs this process executes."""
    pipeline_limits: PipelineLimits = DEFAULT_LIMITS
    """The bounds of a pipeline file re-read for `resume --reload`."""
    artifacts_dir: Path | None = None
    """Where runs keep their files, a folder per run (None: they keep none)."""


class Orchestrator:
    """Creates and executes runs for this process. Use as `async with Orchestrator(...)`.

    The store must already be open; the orchestrator owns the heartbeat task group.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        config: EngineConfig | None = None,
        rng: random.Random | None = None,
        providers: Providers | None = None,
        registry: StepRegistry | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or EngineConfig()
        self.owner = new_owner_id()
        self.providers = providers
        self._executing: dict[str, tuple[Lease, RunExecutor]] = {}
        self._renewed_until = 0.0
        """Until when the last heartbeat renewed every lease this process held then."""
        self._busy = anyio.Event()
        self._cancel_on_start: set[str] = set()
        self._batches: dict[str, BatchRecord] = {}
        self.slots = SlotPool(store, self.owner, ttl=self.config.lease_ttl,
                              poll_interval=self.config.slot_poll_interval)
        self._tg: TaskGroup | None = None
        self._flusher = DeferredFlusher()
        """Writes every executing run's deferred writes (one task, not one per run)."""
        self._services = RunServices(
            store, self._flusher, rng or random.Random(), store.clock,
            self.config.max_parallel_steps, slots=self.slots, progress=progress,
            artifacts_dir=self.config.artifacts_dir, lease_ttl=self.config.lease_ttl)
        self._log = get_logger()
        self._clients: dict[ProviderRef, Clients] = {}
        """Each provider's clients, as its runs' steps see them: one for all its runs."""
        self._planner = ResumePlanner(store, registry, self.config.pipeline_limits,
                                      provider_of=self.provider_of)

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            msg = "this Orchestrator is already open"
            raise RuntimeError(msg)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self._heartbeat)
        await self._tg.start(self.slots.grant_forever)
        await self._tg.start(self._watch_cancel_requests)
        await self._tg.start(self._flusher.serve)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        # The group only holds background loops, being cancelled. Closing it as if the
        # body ended cleanly keeps the body's own exception (a RunBusy, a ConfigError) from
        # being wrapped in an ExceptionGroup; returning None lets that exception carry on.
        await self._tg.__aexit__(None, None, None)

    # -- heartbeat ---------------------------------------------------------------------------

    async def _heartbeat(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                         ) -> None:
        task_status.started()
        interval = self.config.lease_ttl / 3
        while True:
            await anyio.sleep(interval)
            if not self._executing:
                continue
            try:
                held = await self.store.renew_leases(self.owner, ttl=self.config.lease_ttl)
            except Exception as exc:  # noqa: BLE001  (keep beating; expiry is checked below)
                self._log.warning("lease heartbeat failed", error=f"{type(exc).__name__}: {exc}")
                now = self.store.clock()
                held = {rid for rid, (lease, _) in self._executing.items()
                        if max(lease.expires_at, self._renewed_until) > now}
            else:
                # One expiry for every lease renewed (not a new Lease per run: 2,500 runs
                # made that most of an idle worker's CPU, measured).
                self._renewed_until = self.store.clock() + self.config.lease_ttl
            for run_id, (_, executor) in list(self._executing.items()):
                if run_id not in held:
                    self._log.error("lost the lease on a run; stopping it", run_id=run_id)
                    executor.lose_lease()

    async def _watch_cancel_requests(self, *, task_status: TaskStatus[None] =
                                     anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # A store that announces cancel requests (PostgreSQL) is asked at once when one comes
        # and otherwise ten times less often (measured: 4 workers over 10,000 waiting runs
        # spent 6.8-8.0 % of a core asking every second, 5.0-5.1 % every ten); others, every
        # interval.
        interval = self.config.cancel_poll_interval * (10 if self.store.announces else 1)
        requested = anyio.Event()

        def announced() -> None:
            requested.set()

        async with anyio.create_task_group() as tg:
            if self.store.announces:
                tg.start_soon(self.store.watch, CANCEL, announced, name="watch for cancels")
            while True:
                if not self._executing:
                    await self._busy.wait()
                with anyio.move_on_after(interval):
                    await requested.wait()
                requested = anyio.Event()
                await self._carry_out_cancel_requests()

    async def _carry_out_cancel_requests(self) -> None:
        """Cancel the runs of this process whose cancellation was requested."""
        try:
            requested = await self.store.cancel_requests(self.owner)
        except Exception as exc:  # noqa: BLE001  (asked again next time)
            self._log.warning("could not read cancel requests",
                              error=f"{type(exc).__name__}: {exc}")
            return
        for run_id in requested:
            if self.cancel(run_id):
                self._log.warning("cancel requested; cancelling the run", run_id=run_id)

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, pipeline: Pipeline, inputs: Mapping[str, Any], *,
                         hold: bool = False, status: RunStatus = RunStatus.PENDING,
                         run_id: str | None = None, schedule_id: str | None = None,
                         scheduled_for: float | None = None,
                         provider: ProviderRef | None = None) -> RunRecord:
        """Store a new run of `pipeline` with its (already resolved) input values.

        With `hold`, this process holds the new run's lease (`record.lease`) from the start,
        to pass to `execute`. `status` QUEUED leaves it to a worker. A given `run_id` (a
        schedule's) raises RunExists if taken; otherwise a fresh id is drawn. The run is
        bound to `provider`, by default this process's (see `providers.pool`).
        """
        ref = self._new_runs_provider(provider)
        if hold and pipeline.needs_provider:  # this process executes it: it must be able to
            self.check_provider(ref)
        for _ in range(5):
            try:
                return await self.store.create_run(NewRun(
                    id=run_id or new_run_id(), pipeline_name=pipeline.name,
                    pipeline_path=str(pipeline.path.resolve()), pipeline_text=pipeline.text,
                    inputs=dict(inputs), status=status, schedule_id=schedule_id,
                    scheduled_for=scheduled_for, provider=ref.name if ref else None,
                    provider_url=ref.url if ref else None, step_ids=tuple(pipeline.every_step),
                ), owner=self.owner if hold else None, ttl=self.config.lease_ttl)
            except RunExists:
                if run_id is not None:
                    raise
        msg = "could not draw an unused run id in 5 tries"
        raise RuntimeError(msg)

    async def create_batch(self, pipeline: Pipeline, inputs: Mapping[str, Any], *,
                           hold: bool = False, status: RunStatus = RunStatus.PENDING,
                           batch_id: str | None = None, schedule_id: str | None = None,
                           scheduled_for: float | None = None,
                           provider: ProviderRef | None = None
                           ) -> tuple[BatchRecord, list[RunRecord]]:
        """Store `pipeline`'s matrix as a batch with one run per cell (ids `<batch>.<n>`),
        each bound to `provider` (by default this process's)."""
        matrix = pipeline.matrix
        ref = self._new_runs_provider(provider)
        if hold and pipeline.needs_provider:
            self.check_provider(ref)
        step_ids = tuple(pipeline.every_step)
        for _ in range(5):
            chosen = batch_id or new_batch_id()
            cells = [NewRun(id=f"{chosen}.{i}", pipeline_name=pipeline.name,
                            pipeline_path=str(pipeline.path.resolve()),
                            pipeline_text=pipeline.text, inputs=dict(inputs), status=status,
                            matrix=cell, schedule_id=schedule_id, scheduled_for=scheduled_for,
                            provider=ref.name if ref else None,
                            provider_url=ref.url if ref else None, step_ids=step_ids)
                     for i, cell in enumerate(pipeline.cells())]
            try:
                batch, runs = await self.store.create_batch(NewBatch(
                    id=chosen, pipeline_name=pipeline.name,
                    pipeline_path=str(pipeline.path.resolve()), pipeline_text=pipeline.text,
                    inputs=dict(inputs), max_parallel=matrix.max_parallel if matrix else None,
                    fail_fast=matrix.fail_fast if matrix else False, schedule_id=schedule_id,
                    scheduled_for=scheduled_for, step_ids=step_ids,
                ), cells, owner=self.owner if hold else None, ttl=self.config.lease_ttl)
            except RunExists:
                if batch_id is not None:
                    raise
                continue
            self._batches[batch.id] = batch
            return batch, runs
        msg = "could not draw an unused batch id in 5 tries"
        raise RuntimeError(msg)

    def _new_runs_provider(self, given: ProviderRef | None) -> ProviderRef | None:
        return given or (self.providers.default if self.providers is not None else None)

    def provider_of(self, run: RunRecord) -> ProviderRef | None:
        """The provider `run` executes against: its own, else (an old run) this process's."""
        return bound_provider(run) or self._new_runs_provider(None)

    def check_provider(self, ref: ProviderRef | None) -> None:
        """Raise SettingsInvalid if this process lacks what `ref` needs (its key): called
        before anything about a run is written or announced."""
        if ref is not None and self.providers is not None:
            self.providers.check(ref)

    async def _run_slots(self, run: RunRecord, pipeline: Pipeline) -> list[tuple[str, int]]:
        """Slots the whole run holds besides its pipeline's own `concurrency:`: its batch's
        `max_parallel`, and its schedule's when overlapping fires queue."""
        slots = []
        if run.batch_id is not None:
            batch = self._batches.get(run.batch_id)
            if batch is None:
                batch = self._batches[run.batch_id] = await self.store.get_batch(run.batch_id)
            if batch.max_parallel is not None:
                slots.append((f"batch:{batch.id}", batch.max_parallel))
        schedule = pipeline.schedule
        if run.schedule_id is not None and schedule is not None and schedule.overlap == "queue":
            slots.append((f"schedule:{run.schedule_id}", 1))
        return slots

    async def plan_resume(self, run_id: str, *, from_step: str | None = None,
                          reload: bool = False, provider: ProviderRef | None = None,
                          move: bool = False) -> ExecutionPlan:
        """Which steps a resume keeps and which it runs again (see `planner`)."""
        return await self._planner.plan(run_id, from_step=from_step, reload=reload,
                                        provider=provider, move=move)

    async def plan_request(self, run_id: str, request: ResumeRequest) -> ExecutionPlan:
        """`plan_resume` of what `request` asks (its `force` is the caller's, at execute)."""
        return await self._planner.plan(run_id, from_step=request.from_step,
                                        reload=request.reload, provider=request.provider,
                                        move=request.move)

    async def queue_resume(self, plan: ExecutionPlan, *, force: bool = False,
                           from_step: str | None = None,
                           by: str = "orchestrator resume --detach") -> None:
        """Hand a planned resume to a worker: what the plan changes is committed now (the
        steps it re-runs cleared, a reloaded pipeline text, a new provider), and the run goes
        back to the queue, where a worker's plain resume of it does the rest. Taken under a
        lease of this process's, fenced like any executor's write: a run another live process
        executes is refused (RunBusy)."""
        run = plan.run
        dead = [run.lease_owner] if run.lease_owner and owner_is_dead(run.lease_owner) else []
        lease = await self.store.acquire_lease(run.id, self.owner, ttl=self.config.lease_ttl,
                                               max_recoveries=self.config.max_recoveries,
                                               dead_owners=dead, force=force)
        moved = plan.provider if plan.moved_from is not None else None
        reset = sorted(plan.reset)
        await self.store.commit(
            lease,
            run=RunUpdate(RunStatus.QUEUED, release=True,
                          pipeline_text=plan.reload_text,
                          step_ids=tuple(plan.pipeline.every_step) if plan.reload_text
                          else None,
                          clear_cancel=run.status is RunStatus.CANCELLED,
                          provider=(moved.name, moved.url) if moved is not None else None),
            steps=[StepRecord(sid) for sid in reset],
            events=[NewEvent("resume_queued", data={
                "from": from_step, "reset": reset, "reloaded": plan.reload_text is not None,
                "by": by, **({"moved_from": str(plan.moved_from),
                              "moved_to": str(moved)} if moved is not None else {})})])

    async def execute(self, plan: ExecutionPlan, *, force: bool = False,
                      lease: Lease | None = None, requeue: bool = False) -> RunOutcome:
        """Execute a run (new or resumed) per `plan`, holding its lease throughout.

        `lease` is one this process already holds (from `create_run(hold=True)`); otherwise
        the lease is acquired here. With `requeue` (a worker's runs), a run interrupted by a
        signal goes back to the queue instead of ending `interrupted`.
        """
        run = plan.run
        # Cancelling needs no secrets (nothing is rendered), so it works from any terminal.
        secret_values = {} if run.cancelling else read_secrets(plan.pipeline.secret_names)
        REDACTOR.add(secret_values.values())
        # The provider's client before the lease: a missing key leaves the run untouched. A
        # pipeline none of whose step types talks to a provider opens none (nor loads one).
        ref = plan.provider or self.provider_of(run)
        clients = NO_CLIENTS
        if ref is not None and self.providers is not None and plan.pipeline.needs_provider:
            if ref not in self._clients:
                self._clients[ref] = Clients(await self.providers.client(ref),
                                             provider=str(ref))
            clients = self._clients[ref]
        if lease is None:
            dead = [run.lease_owner] if run.lease_owner and owner_is_dead(run.lease_owner) \
                else []
            lease = await self.store.acquire_lease(
                run.id, self.owner, ttl=self.config.lease_ttl,
                max_recoveries=self.config.max_recoveries, dead_owners=dead, force=force,
            )
        executor = RunExecutor(
            self._services, lease=lease, run=run, pipeline=plan.pipeline,
            records=plan.records, secrets=secret_values, clients=clients,
            run_slots=await self._run_slots(run, plan.pipeline),
            interrupted_status=RunStatus.QUEUED if requeue else RunStatus.INTERRUPTED,
            moved=(plan.moved_from, ref) if plan.moved_from and ref else None,
        )
        self._executing[run.id] = (lease, executor)
        self._busy.set()
        if run.id in self._cancel_on_start:
            self._cancel_on_start.discard(run.id)
            executor.cancel()
        try:
            return await executor.execute(reset=plan.reset, reload_text=plan.reload_text)
        finally:
            self._executing.pop(run.id, None)
            if not self._executing:
                self._busy = anyio.Event()
            if not executor.released:
                # If this fails the lease simply expires; the run's outcome matters more.
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await self.store.release_lease(lease)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run this process is executing; False if it executes no such run."""
        executing = self._executing.get(run_id)
        if executing is None:
            return False
        executing[1].cancel()
        return True

    def cancel_soon(self, run_id: str) -> None:
        """Cancel a run of this process now, or as soon as its execution starts here."""
        if not self.cancel(run_id):
            self._cancel_on_start.add(run_id)

    def executed_elsewhere(self, run: RunRecord) -> bool:
        """Another live process holds the run's lease (one known to have exited does not)."""
        owner = run.lease_owner
        return (owner is not None and owner != self.owner and run.lease_live(self.store.clock())
                and not owner_is_dead(owner))

    async def give_up(self, lease: Lease, error: str) -> None:
        """End a run this process holds but cannot execute (its pipeline no longer loads, a
        secret is missing): `failed`, with why, lease released."""
        error = REDACTOR.text(error)
        await self.store.commit(lease, run=RunUpdate(RunStatus.FAILED, error, release=True),
                                events=[NewEvent("run_finished", data={"status": "failed",
                                                                       "error": error})])

    async def run(self, pipeline: Pipeline, inputs: Mapping[str, Any] | None = None
                  ) -> RunOutcome:
        """Create a run of `pipeline` and execute it to the end. `inputs` are resolved as the
        command line resolves them: defaults filled in, values coerced, paths made absolute
        (given ones against the current folder, defaults against the pipeline's)."""
        values = resolve_inputs(pipeline.inputs, dict(inputs or {}),
                                pipeline_dir=pipeline.base_dir, cwd=Path.cwd())
        record = await self.create_run(pipeline, values, hold=True)
        return await self.execute(ExecutionPlan.new_run(record, pipeline),
                                  lease=record.lease)

    async def resume(self, run_id: str, *, from_step: str | None = None, reload: bool = False,
                     force: bool = False) -> RunOutcome:
        """Continue a run: keep succeeded steps, re-enter the rest (see ExecutionPlan)."""
        plan = await self.plan_resume(run_id, from_step=from_step, reload=reload)
        if plan.nothing_to_do:
            return RunOutcome(run_id, RunStatus.SUCCEEDED)
        return await self.execute(plan, force=force)
