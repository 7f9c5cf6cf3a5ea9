"""A run's `StepHost`: what its steps' contexts read (the run, its clients, its registry) and
where their writes go (the run's journal: checkpoints, log lines, metric points).

One host serves every step of a run, so a context holds the host, its step and its attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.journal import RunJournal
from orchestrator.engine.runslots import RunSlots
from orchestrator.engine.services import RunServices, StoreRegistry
from orchestrator.engine.steplog import StepLog
from orchestrator.faults import fault_point
from orchestrator.log import Logger
from orchestrator.steps.context import Clients, process_lock
from orchestrator.store.records import MetricPoint, NewEvent

__all__ = ["RunHost"]


class RunHost:
    """The engine's side of one run's step contexts (`steps.context.StepHost`)."""

    __slots__ = ("_cancel_requested", "_journal", "_log", "_pipeline", "_run_id", "_services",
                 "_slots", "clients")

    def __init__(self, services: RunServices, run_id: str, pipeline: Pipeline, *,
                 journal: RunJournal, slots: RunSlots, log: Logger, clients: Clients,
                 cancel_requested: Callable[[], bool]) -> None:
        self._services = services
        self._run_id = run_id
        self._pipeline = pipeline
        self._journal = journal
        self._slots = slots
        self._log = log
        self.clients = clients
        self._cancel_requested = cancel_requested

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def run_name(self) -> str:
        return self._pipeline.name

    @property
    def pipeline_dir(self) -> Path:
        return self._pipeline.base_dir

    @property
    def artifacts_dir(self) -> Path | None:
        root = self._services.artifacts_dir
        return None if root is None else root / self._run_id

    @property
    def models(self) -> StoreRegistry:
        return self._services.models

    def step_log(self, step_id: str, attempt: int) -> StepLog:
        return StepLog(self._log.bind(step=step_id, attempt=attempt),
                       functools.partial(self._keep_line, step_id, attempt))

    def cancel_requested(self) -> bool:
        return self._cancel_requested()

    def exclusive(self, step_id: str, name: str) -> AbstractAsyncContextManager[None]:
        if self._slots.pool is None:
            return process_lock(name)
        return self._slots.exclusive(step_id, name)

    def _keep_line(self, step_id: str, attempt: int, level: str, message: str,
                   fields: Mapping[str, Any]) -> None:
        data = {"level": level, "message": message, **({"fields": fields} if fields else {})}
        self._journal.note(NewEvent("log", step_id, attempt, data))
        self._journal.defer()

    def write_metrics(self, points: list[MetricPoint]) -> None:
        self._journal.note_metrics(points)
        self._journal.defer()

    def report(self, step_id: str, fields: Mapping[str, Any]) -> None:
        if self._services.progress is not None:
            self._services.progress(self._run_id, step_id, fields)

    async def secure_lease(self) -> float:
        ttl = self._services.lease_ttl
        await self._journal.secure_lease(ttl)
        return ttl

    async def write_checkpoint(self, step_id: str, attempt: int, whole: dict[str, Any],
                               changed: dict[str, Any]) -> None:
        # The event holds what changed, the step's row the whole: a step that checkpoints
        # often (a poll, a part) does not store its whole checkpoint again each time.
        await self._journal.save(step_id, NewEvent("checkpoint", step_id, attempt, changed),
                                 checkpoint=whole)
        fault_point("after_checkpoint", step_id)
