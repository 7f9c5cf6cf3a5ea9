"""Helpers for testing pipelines and step types in-process, for this project and its users.

- `FakeClock`: wall-clock time that moves only when the test says so (hand it to a store).
- `Harness`: step types the test adds, pipelines written from text, and runs executed by an
  orchestrator built the way every command builds one (`orchestrator.runtime`).
- `StepEnvironment`: one step type run alone, with given parameters and a fake or real
  provider's client, no pipeline, store or engine (as Temporal's `ActivityEnvironment` runs
  one activity); `local_together` is a real provider for it, the local API in-process.
- `wait_until`: poll a condition with a deadline, never a blind sleep.

    async with open_store(url, clock=FakeClock()) as store:
        harness = Harness(tmp_path, store)

        @harness.registry.step("my/step", params=MyParams)
        async def my_step(ctx, params): ...

        outcome = await harness.run("name: p\\nsteps:\\n  a: {uses: my/step}\\n")

    async with local_together(tmp_path) as client:
        env = StepEnvironment(tmp_path, clients=Clients(client))
        outputs = await env.run("together/upload-file", {"path": "train.jsonl"})
        assert env.checkpoint["file_id"] == outputs["file_id"]
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.engine.attempts import parameter_problems, step_outputs
from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.engine.steplog import StepLog
from orchestrator.errors import PermanentError
from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport
from orchestrator.localapi.transport import BASE_URL
from orchestrator.log import get_logger
from orchestrator.providers.pool import Providers
from orchestrator.providers.together.client import TogetherClient
from orchestrator.runtime import Runtime, no_providers, open_runtime
from orchestrator.settings import Settings
from orchestrator.steps.builtin import builtin_registry, load_pipeline
from orchestrator.steps.context import NO_CLIENTS, Clients, StepContext, process_lock

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.services import ProgressSink
    from orchestrator.providers.together.client import TogetherClient
    from orchestrator.steps.registry import StepRegistry
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import (
        AliasMove,
        EventRecord,
        MetricPoint,
        ModelEntry,
        RunRecord,
        StepRecord,
    )

__all__ = ["LEASE_ALONE", "FakeClock", "Harness", "StepEnvironment", "local_together",
           "wait_until", "write_text"]

LEASE_ALONE = 30.0
"""What `secure_lease` answers for a step run alone: no other executor exists."""


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


class StepEnvironment:
    """One step type, run alone: its parameters checked as a pipeline's would be, a context of
    its own, and everything it does through it kept here for the test to read.

    `clients` is what the step's provider offers (`Clients(client)`: a fake, or a real one
    such as `local_together`'s); `run_id` and `step_id` make its idempotency key, so a test
    can stand for an attempt a crash cut short by passing that attempt's `checkpoint`.
    """

    def __init__(self, folder: Path, *, clients: Clients = NO_CLIENTS,
                 registry: StepRegistry | None = None, run_id: str = "r-test",
                 run_name: str = "test", artifacts_dir: Path | None = None) -> None:
        self.folder = folder
        self.clients = clients
        self.registry = registry or builtin_registry()
        self.run_id = run_id
        self.run_name = run_name
        self.artifacts_dir = artifacts_dir
        self.checkpoint: dict[str, Any] = {}
        """The step's whole checkpoint, as last saved (what a re-entered attempt gets)."""
        self.checkpoints: list[dict[str, Any]] = []
        """What each `ctx.checkpoint(...)` changed, in order."""
        self.logs: list[tuple[str, str, dict[str, Any]]] = []
        """(level, message, fields) of each line the step logged at info and above."""
        self.metrics: list[MetricPoint] = []
        self.reports: list[dict[str, Any]] = []
        self.models = _KeptModels()
        self._cancelled = False

    @property
    def pipeline_dir(self) -> Path:
        return self.folder

    def cancel(self) -> None:
        """Ask for the run's cancellation: `ctx.cancel_requested()` says so from now on."""
        self._cancelled = True

    def cancel_requested(self) -> bool:
        return self._cancelled

    async def run(self, uses: str, params: Mapping[str, Any] | None = None, *,
                  step_id: str = "step", attempt: int = 1,
                  checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run step type `uses` once with `params` (literal values: no `${{ }}`); its
        outputs, as the engine would store them. A bad parameter is a PermanentError, as in
        a run; `checkpoint` is the one an earlier attempt saved (default: the last kept)."""
        step_type = self.registry.resolve(uses, self.folder)
        try:
            checked = step_type.params.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise PermanentError(parameter_problems(step_id, exc)) from None
        if checkpoint is not None:
            self.checkpoint = dict(checkpoint)
        ctx = StepContext(self, step_id, attempt, self.checkpoint)
        return step_outputs(await step_type.run(ctx, checked))

    async def cancel_remote(self, uses: str, *, step_id: str = "step", attempt: int = 1,
                            checkpoint: Mapping[str, Any] | None = None) -> None:
        """Run the step type's cancel hook (what a cancelled run does to the remote work the
        step started), with the step's last checkpoint."""
        hook = self.registry.resolve(uses, self.folder).cancel
        if hook is None:
            msg = f"step type {uses} has no cancel hook"
            raise AssertionError(msg)
        if checkpoint is not None:
            self.checkpoint = dict(checkpoint)
        await hook(StepContext(self, step_id, attempt, self.checkpoint))

    # -- the StepHost the step's context talks to ----------------------------------------

    def step_log(self, step_id: str, attempt: int) -> StepLog:
        def keep(level: str, message: str, fields: Mapping[str, Any]) -> None:
            self.logs.append((level, message, dict(fields)))

        return StepLog(get_logger().bind(step=step_id, attempt=attempt), keep)

    async def write_checkpoint(self, step_id: str, attempt: int, whole: dict[str, Any],
                               changed: dict[str, Any]) -> None:
        self.checkpoint = dict(whole)
        self.checkpoints.append(dict(changed))

    def write_metrics(self, points: list[MetricPoint]) -> None:
        self.metrics.extend(points)

    async def secure_lease(self) -> float:
        return LEASE_ALONE

    def report(self, step_id: str, fields: Mapping[str, Any]) -> None:
        self.reports.append(dict(fields))

    def exclusive(self, step_id: str, name: str) -> AbstractAsyncContextManager[None]:
        return process_lock(name)


class _KeptModels(list["ModelEntry"]):
    """The models a `registry/*` step recorded, in order (the store's registry, in memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.moves: list[AliasMove] = []
        """The alias moves a `registry/promote` step made, in order."""

    async def record(self, entry: ModelEntry) -> ModelEntry:
        self.append(entry)
        return entry

    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        current = next((m.model for m in reversed(self.moves) if m.alias == move.alias), None)
        if current == move.model:
            return None
        self.moves.append(move)
        return move


@asynccontextmanager
async def local_together(folder: Path, **config: Any) -> AsyncIterator[TogetherClient]:
    """A Together client whose server is the local API, in this process (its files, jobs and
    models under `folder`/local-api; `config` changes its `LocalAPIConfig`: job_duration...)."""
    settings = LocalAPIConfig(data_dir=folder / "local-api", **config)
    api = LocalAPI(settings)
    try:
        async with TogetherClient(api_key=settings.api_key, base_url=BASE_URL,
                                  transport=LocalTransport(api)) as client:
            yield client
    finally:
        api.close()
