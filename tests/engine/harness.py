"""Running pipelines in-process against a real SQLite store, with step types defined by tests."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anyio.abc import TaskGroup

from orchestrator.engine.executor import RunOutcome
from orchestrator.engine.orchestrator import EngineConfig, Orchestrator, ResumePlan
from orchestrator.spec.inputs import resolve_inputs
from orchestrator.spec.loader import Pipeline, load_pipeline
from orchestrator.steps.registry import StepRegistry, builtin_registry
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
        tg.start_soon(orch.execute, ResumePlan(record, pipeline, {}, frozenset(), None))
        return record

    async def resume(self, run_id: str, **options: Any) -> RunOutcome:
        async with self.orchestrator() as orch:
            return await orch.resume(run_id, **options)

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        return await self.store.get_steps(run_id)

    async def events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        events = await self.store.get_events(run_id)
        return [e for e in events if kind is None or e.kind == kind]
