"""Running pipelines in-process against a real SQLite store, with step types defined by tests."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from orchestrator.engine.executor import RunOutcome
from orchestrator.engine.orchestrator import EngineConfig, Orchestrator, ResumePlan
from orchestrator.spec.inputs import resolve_inputs
from orchestrator.spec.loader import Pipeline
from orchestrator.steps.builtin import builtin_registry, load_pipeline
from orchestrator.steps.registry import StepRegistry
from orchestrator.store.base import EventRecord, RunRecord, StateStore, StepRecord
from tests.conftest import write


class Harness:
    """A registry the test extends, a pipeline file per test, and an orchestrator to run it."""

    def __init__(self, tmp_path: Path, store: StateStore, **config: Any) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.registry: StepRegistry = builtin_registry().copy()
        self.config = EngineConfig(**config)

    def pipeline(self, text: str, name: str = "p.yaml") -> Pipeline:
        return load_pipeline(write(self.tmp_path / name, text), registry=self.registry)

    def orchestrator(self) -> Orchestrator:
        return Orchestrator(self.store, config=self.config, rng=random.Random(0),
                            registry=self.registry)

    async def run(self, text: str, inputs: Mapping[str, Any] | None = None) -> RunOutcome:
        pipeline = self.pipeline(text)
        values = resolve_inputs(pipeline.inputs, inputs or {}, pipeline_dir=pipeline.base_dir,
                                cwd=self.tmp_path)
        async with self.orchestrator() as orch:
            return await orch.run(pipeline, values)

    async def start(self, orch: Orchestrator, tg: TaskGroup, pipeline: Pipeline) -> RunRecord:
        """Create a run of `pipeline` and execute it in the background of `tg`."""
        record = await orch.create_run(pipeline, {})
        tg.start_soon(orch.execute, ResumePlan.fresh(record, pipeline))
        return record

    async def resume(self, run_id: str, **options: Any) -> RunOutcome:
        async with self.orchestrator() as orch:
            return await orch.resume(run_id, **options)

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        return await self.store.get_steps(run_id)

    async def events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        events = await self.store.get_events(run_id)
        return [e for e in events if kind is None or e.kind == kind]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that cover one instant (an end at t comes before a start at t)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def intervals(events: list[EventRecord], start: str, end: str,
              step: str | None = None) -> list[tuple[float, float]]:
    """[start, end] of each pair of `start`/`end` events (of `step`, if given), in order."""
    found, opened = [], None
    for event in events:
        if step is not None and event.step_id != step:
            continue
        if event.kind == start and opened is None:
            opened = event.ts
        elif event.kind == end and opened is not None:
            found.append((opened, event.ts))
            opened = None
    return found


async def wait_until(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 5.0) -> None:
    """Poll `check` until it holds (a deadline, never a blind sleep); `what` names it."""
    with anyio.move_on_after(timeout):
        while not await check():  # noqa: ASYNC110  (the state lives in the store, not here)
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")
