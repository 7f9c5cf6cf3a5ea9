"""What every run an orchestrator executes shares: one object, handed to each run's executor.

Apart from the executor's own state so a waiting run holds one reference to them, not eight.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.engine.journal import DeferredFlusher
from orchestrator.engine.slots import SlotPool
from orchestrator.redact import REDACTOR
from orchestrator.store.base import StateStore
from orchestrator.store.records import AliasMove, Clock, ModelEntry

__all__ = ["ProgressSink", "RunServices", "StoreRegistry"]

ProgressSink = Callable[[str, str, Mapping[str, Any]], None]
"""Receives (run_id, step_id, fields) when a step reports progress."""


class StoreRegistry:
    """The model registry steps write to: the state store's."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def record(self, entry: ModelEntry) -> ModelEntry:
        if REDACTOR.active:  # a secret passed as a tag or metric is not kept either
            entry = dataclasses.replace(
                entry, hyperparameters=REDACTOR.value(entry.hyperparameters),
                metrics=REDACTOR.value(entry.metrics), tags=REDACTOR.value(entry.tags))
        return await self._store.record_model(entry)

    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        if REDACTOR.active:
            move = dataclasses.replace(move, reason=str(REDACTOR.value(move.reason)))
        return await self._store.move_alias(move)


@dataclasses.dataclass(frozen=True, slots=True)
class RunServices:
    """The orchestrator's parts its runs use: where they write, whom they tell, their limits."""

    store: StateStore
    flusher: DeferredFlusher
    """Writes what runs deferred (a started attempt, log lines, metric points), for all."""
    rng: random.Random
    """Retry jitter."""
    clock: Clock
    max_parallel_steps: int
    slots: SlotPool | None = None
    """Concurrency slots shared across processes (None: within the run only)."""
    progress: ProgressSink | None = None
    artifacts_dir: Path | None = None
    """Where a run's files go, in a folder named by its id."""
    lease_ttl: float = 30.0
    """How long a renewed lease lasts (the setting lease_ttl)."""
    models: StoreRegistry = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", StoreRegistry(self.store))
