"""The Python API: what the command line does, as functions a script or notebook calls.

Each function takes what the CLI takes and resolves it the same way: the settings (files,
environment, then the keyword arguments, as flags), the pipeline file (with the same bounds),
its inputs (defaults filled in, values coerced to their declared types, paths relative to the
caller's folder; defaults' paths to the pipeline's), secrets, and the provider. The result
carries the CLI's exit code, and the run's record in the `-o json` shape.

    import orchestrator
    result = orchestrator.run_file("pipelines/lora-finetune.yaml", {"epochs": 1})
    print(result.status, result.outputs["wait"]["model_name"])

Synchronous, for scripts; the `a`-prefixed twins are coroutines for code already inside an
event loop (anyio or asyncio). Importing it loads nothing more: each function loads the
settings reader, the loader and the engine when it is first called (`import orchestrator`
in a notebook took 0.46 s before; see README, "Performance").

It writes nothing to stderr unless asked: a script's or a notebook's output is its own. Its
log lines go where the caller set structlog up to send them, or, asked with
`log_format="console"` (or `"json"`), to stderr as the command line's do; otherwise nowhere
(what steps log is kept with the run either way: `orchestrator logs RUN`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.store.records import RunStatus

if TYPE_CHECKING:
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore

__all__ = [
    "RunResult",
    "aresume_run",
    "arun_file",
    "aruns",
    "ashow_run",
    "await_run",
    "resume_run",
    "run_file",
    "runs",
    "show_run",
    "wait_run",
]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How a run (or a batch: one result per cell in `cells`) ended."""

    run_id: str
    status: str
    error: str | None
    exit_code: int
    """What the command line would return: 0 succeeded, 1 failed or cancelled."""
    outputs: dict[str, dict[str, Any]]
    """Each step's outputs by step id (steps that produced none are left out)."""
    resume_from: str | None = None
    cells: tuple[RunResult, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED.value


def _settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    """The settings a call runs with; log lines set up unless the caller set structlog up
    already: to stderr when asked (`log_format=...`), else nowhere (see the module)."""
    from orchestrator.log import configure_logging, configure_silently, is_configured
    from orchestrator.settings import Settings, load_settings

    if settings is not None:  # its values, the overrides checked as a setting is
        settings = settings if not overrides else Settings.model_validate(
            {**settings.model_dump(), **overrides})
    else:
        settings = load_settings(**overrides)
    if not is_configured():
        if "log_format" in overrides:
            configure_logging(fmt=settings.log_format, level=settings.log_level)
        else:
            configure_silently()
    return settings


async def _result(store: StateStore, outcome: RunOutcome) -> RunResult:
    steps = await store.get_steps(outcome.run_id)
    return RunResult(outcome.run_id, outcome.status.value, outcome.error,
                     0 if outcome.status is RunStatus.SUCCEEDED else 1,
                     {sid: dict(r.outputs) for sid, r in steps.items() if r.outputs},
                     outcome.resume_from)


async def arun_file(path: str | Path, inputs: Mapping[str, Any] | None = None, *,
                    settings: Settings | None = None, detach: bool = False,
                    **overrides: Any) -> RunResult:
    """Run the pipeline file `path` to its end (a matrix: every cell) in this process, or
    with `detach` queue it for a worker and return at once (status `queued`).

    `inputs` are the pipeline's inputs by name (typed values, or strings as `-i` gives
    them); `overrides` are settings (`provider="together"`, `state_url=...`) on top of
    `settings` or those the files and environment give. Bad input raises the CLI's errors
    (PipelineInvalid, InputsInvalid, ConfigError: `exit_code` 2).
    """
    from orchestrator.definition.inputs import resolve_inputs
    from orchestrator.engine.plan import ExecutionPlan, read_secrets
    from orchestrator.runtime import open_runtime
    from orchestrator.schedule.batch import execute_cells
    from orchestrator.steps.builtin import load_pipeline

    config = _settings(settings, overrides)
    pipeline = load_pipeline(path, limits=config.pipeline_limits)
    values = resolve_inputs(pipeline.inputs, dict(inputs or {}), pipeline_dir=pipeline.base_dir,
                            cwd=Path.cwd())
    if not detach:
        read_secrets(pipeline.secret_names)
    async with open_runtime(config) as rt:
        orch = rt.orchestrator
        if detach:
            from orchestrator.providers.refs import provider_ref

            return await _queue(orch, pipeline, values, provider_ref(config))
        if pipeline.matrix is not None:
            batch, cells = await orch.create_batch(pipeline, values, hold=True)
            outcomes = await execute_cells(
                orch, [ExecutionPlan.new_run(run, pipeline) for run in cells],
                fail_fast=batch.fail_fast, leases={r.id: r.lease for r in cells if r.lease})
            results = tuple([await _result(rt.store, o) for o in outcomes])
            ok = all(r.succeeded for r in results)
            return RunResult(batch.id, "succeeded" if ok else "failed", None, 0 if ok else 1,
                             {}, cells=results)
        record = await orch.create_run(pipeline, values, hold=True)
        outcome = await orch.execute(ExecutionPlan.new_run(record, pipeline), lease=record.lease)
        return await _result(rt.store, outcome)


async def _queue(orch: Orchestrator, pipeline: Any, values: Mapping[str, Any],
                 ref: Any) -> RunResult:
    if pipeline.matrix is not None:
        batch, cells = await orch.create_batch(pipeline, values, status=RunStatus.QUEUED,
                                               provider=ref)
        return RunResult(batch.id, "queued", None, 0, {}, cells=tuple(
            RunResult(c.id, "queued", None, 0, {}) for c in cells))
    run = await orch.create_run(pipeline, values, status=RunStatus.QUEUED, provider=ref)
    return RunResult(run.id, "queued", None, 0, {})


def run_file(path: str | Path, inputs: Mapping[str, Any] | None = None, *,
             settings: Settings | None = None, detach: bool = False,
             **overrides: Any) -> RunResult:
    """`orchestrator run FILE -i ...` (see `arun_file`)."""
    return anyio.run(lambda: arun_file(path, inputs, settings=settings, detach=detach,
                                       **overrides))


async def aresume_run(run_id: str, *, from_step: str | None = None, reload: bool = False,
                      settings: Settings | None = None, **overrides: Any) -> RunResult:
    """`orchestrator resume RUN [--from STEP] [--reload]`: continue the run to its end."""
    from orchestrator.runtime import open_runtime

    config = _settings(settings, overrides)
    async with open_runtime(config) as rt:
        outcome = await rt.orchestrator.resume(run_id, from_step=from_step, reload=reload)
        return await _result(rt.store, outcome)


def resume_run(run_id: str, *, from_step: str | None = None, reload: bool = False,
               settings: Settings | None = None, **overrides: Any) -> RunResult:
    return anyio.run(lambda: aresume_run(run_id, from_step=from_step, reload=reload,
                                         settings=settings, **overrides))


async def ashow_run(run_id: str, *, settings: Settings | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """`orchestrator show RUN -o json`: the run, its steps, its final losses."""
    from orchestrator.runtime import open_runtime
    from orchestrator.steps.builtin import stored_pipeline
    from orchestrator.views.order import ordered_steps
    from orchestrator.views.shapes import run_document

    async with open_runtime(_settings(settings, overrides), engine=False) as rt:
        run = await rt.store.get_run(run_id)
        steps = await rt.store.get_steps(run_id)
        points = await rt.store.get_metrics(run_id)
    return run_document(run, ordered_steps(run, steps, parse=stored_pipeline), points)


def show_run(run_id: str, *, settings: Settings | None = None,
             **overrides: Any) -> dict[str, Any]:
    return anyio.run(lambda: ashow_run(run_id, settings=settings, **overrides))


async def aruns(*, limit: int = 20, status: str | None = None, pipeline: str | None = None,
                settings: Settings | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """`orchestrator runs -o json [--status S] [--pipeline P]`."""
    from orchestrator.runtime import open_runtime
    from orchestrator.store.records import parse_statuses
    from orchestrator.views.shapes import run_json

    statuses = None if status is None else parse_statuses(status.split(","))
    async with open_runtime(_settings(settings, overrides), engine=False) as rt:
        found = await rt.store.list_runs(limit=limit, statuses=statuses, pipeline=pipeline)
    return [run_json(run) for run in found]


def runs(*, limit: int = 20, status: str | None = None, pipeline: str | None = None,
         settings: Settings | None = None, **overrides: Any) -> list[dict[str, Any]]:
    return anyio.run(lambda: aruns(limit=limit, status=status, pipeline=pipeline,
                                   settings=settings, **overrides))


async def await_run(run_id: str, *, timeout: float | None = None, poll: float = 0.5,
                    settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """`orchestrator wait RUN`: the run's record once no one executes it (TimeoutError after
    `timeout` seconds; the run goes on)."""
    from orchestrator.runtime import open_runtime
    from orchestrator.views.shapes import run_json

    async with open_runtime(_settings(settings, overrides), engine=False) as rt:
        with anyio.fail_after(timeout):
            while True:
                run = await rt.store.get_run(run_id)
                if run.settled:
                    return run_json(run)
                await anyio.sleep(poll)


def wait_run(run_id: str, *, timeout: float | None = None, settings: Settings | None = None,
             **overrides: Any) -> dict[str, Any]:
    return anyio.run(lambda: await_run(run_id, timeout=timeout, settings=settings,
                                       **overrides))
