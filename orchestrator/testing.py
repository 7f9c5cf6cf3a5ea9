"""Helpers for testing pipelines and step types in-process, for this project and its users.

- `FakeClock`: wall-clock time that moves only when the test says so (hand it to a store).
- `Harness`: step types the test adds, pipelines written from text, and runs executed by an
  orchestrator built the way every command builds one (`orchestrator.runtime`).
- `wait_until`: poll a condition with a deadline, never a blind sleep.

    async with open_store(url, clock=FakeClock()) as store:
        harness = Harness(tmp_path, store)

        @harness.registry.step("my/step", params=MyParams)
        async def my_step(ctx, params): ...

        outcome = await harness.run("name: p\\nsteps:\\n  a: {uses: my/step}\\n")
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.providers.pool import Providers
from orchestrator.runtime import Runtime, no_providers, open_runtime
from orchestrator.settings import Settings
from orchestrator.steps.builtin import builtin_registry, load_pipeline

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.services import ProgressSink
    from orchestrator.steps.registry import StepRegistry
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import EventRecord, RunRecord, StepRecord

__all__ = ["FakeClock", "Harness", "wait_until", "write_text"]


class FakeClock:
    """Wall-clock time that only moves when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_text(path: Path, text: str) -> Path:
    """Write dedented `text` to `path` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


async def wait_until(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 5.0) -> None:
    """Poll `check` until it holds, within `timeout` seconds; `what` names it on failure."""
    with anyio.move_on_after(timeout):
        while not await check():  # noqa: ASYNC110  (the state lives in the store, not here)
            await anyio.sleep(0.02)
        return
    msg = f"timed out after {timeout}s waiting until {what}"
    raise AssertionError(msg)


class Harness:
    """A registry the test extends, a pipeline file per test, and an orchestrator to run it.

    The orchestrator comes from `open_runtime` on the test's open `store` (left open), with
    no provider unless `providers` is given (a new one each time an orchestrator opens),
    live progress to `progress` if given, and a seeded random source (retry jitter)."""

    def __init__(self, folder: Path, store: StateStore, *,
                 providers: Callable[[], Providers] | None = None,
                 progress: ProgressSink | None = None, **config: Any) -> None:
        self.folder = folder
        self.store = store
        self.providers = providers
        self.progress = progress
        self.registry: StepRegistry = builtin_registry().copy()
        self.config = EngineConfig(**config)

    def pipeline(self, text: str, name: str = "p.yaml") -> Pipeline:
        return load_pipeline(write_text(self.folder / name, text), registry=self.registry)

    @asynccontextmanager
    async def runtime(self) -> AsyncIterator[Runtime]:
        # Store, providers and engine config are the harness's own: no setting is read.
        providers = self.providers() if self.providers else no_providers(
            "this harness has no provider (Harness(..., providers=...))")
        async with open_runtime(Settings.model_construct(), store=self.store,
                                config=self.config, providers=providers,
                                registry=self.registry, progress=self.progress,
                                rng=random.Random(0)) as rt:
            yield rt

    @asynccontextmanager
    async def orchestrator(self) -> AsyncIterator[Orchestrator]:
        async with self.runtime() as rt:
            yield rt.orchestrator

    async def run(self, text: str, inputs: Mapping[str, Any] | None = None) -> RunOutcome:
        pipeline = self.pipeline(text)
        values = resolve_inputs(pipeline.inputs, inputs or {}, pipeline_dir=pipeline.base_dir,
                                cwd=self.folder)
        async with self.orchestrator() as orch:
            return await orch.run(pipeline, values)

    async def start(self, orch: Orchestrator, tg: TaskGroup, pipeline: Pipeline) -> RunRecord:
        """Create a run of `pipeline` and execute it in the background of `tg`."""
        record = await orch.create_run(pipeline, {})
        tg.start_soon(orch.execute, ExecutionPlan.new_run(record, pipeline))
        return record

    async def resume(self, run_id: str, **options: Any) -> RunOutcome:
        async with self.orchestrator() as orch:
            return await orch.resume(run_id, **options)

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        return await self.store.get_steps(run_id)

    async def events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        events = await self.store.get_events(run_id)
        return [e for e in events if kind is None or e.kind == kind]

