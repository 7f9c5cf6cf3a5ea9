"""What each command does. Heavy imports live here or below, loaded only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from orchestrator.errors import PipelineInvalid
from orchestrator.spec.inputs import parse_assignments, resolve_inputs
from orchestrator.spec.loader import Pipeline, load_pipeline

if TYPE_CHECKING:
    from orchestrator.engine.executor import ProgressSink, RunOutcome
    from orchestrator.engine.orchestrator import Orchestrator, ResumePlan
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore, StepRecord

__all__ = [
    "cmd_check_data",
    "cmd_local_api",
    "cmd_logs",
    "cmd_models",
    "cmd_plan",
    "cmd_resume",
    "cmd_run",
    "cmd_runs",
    "cmd_show",
    "cmd_validate",
]

T = TypeVar("T")


def _out(text: str = "") -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- validate and plan (no settings, no store: they must start fast) -------------------------

def cmd_validate(args: argparse.Namespace) -> int:
    code = EXIT_OK
    for file in args.files:
        try:
            pipeline = load_pipeline(file)
        except PipelineInvalid as exc:
            _err(str(exc))
            code = EXIT_BAD_INPUT
        else:
            count = len(pipeline.steps)
            _out(f"{file}: ok ({pipeline.name}, {count} step{'s' * (count != 1)})")
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    if Path(args.target).is_file() or args.target.endswith((".yaml", ".yml")):
        pipeline = load_pipeline(args.target)
        inputs = resolve_inputs(pipeline.inputs, parse_assignments(args.input),
                                pipeline_dir=pipeline.base_dir, cwd=Path.cwd())
        render.pipeline_plan(pipeline, inputs)
        return EXIT_OK
    if args.input:
        _err("error: -i applies to a pipeline file; a run keeps the inputs it started with")
        return EXIT_BAD_INPUT
    settings = _settings(args)

    async def plan(orch: Orchestrator) -> ResumePlan:
        return await orch.plan_resume(args.target, from_step=args.from_step, reload=args.reload)

    render.resume_plan(_with_orchestrator(settings, plan))
    return EXIT_OK


# -- running ---------------------------------------------------------------------------------

def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    from orchestrator.settings import load_settings  # noqa: PLC0415

    return load_settings(state_url=getattr(args, "state_url", None),
                         log_format=getattr(args, "log_format", None),
                         log_level=getattr(args, "log_level", None), **extra)


def _open_store(settings: Settings) -> StateStore:
    from orchestrator.store.base import open_store  # noqa: PLC0415

    return open_store(settings.state_url, durability=settings.durability,
                      busy_timeout=settings.busy_timeout)


def _with_store(settings: Settings, fn: Callable[[StateStore], Awaitable[T]]) -> T:
    import anyio  # noqa: PLC0415

    async def main() -> T:
        async with _open_store(settings) as store:
            return await fn(store)

    return anyio.run(main)


def _with_orchestrator(settings: Settings, fn: Callable[[Orchestrator], Awaitable[T]], *,
                       provider: bool = False, progress: ProgressSink | None = None) -> T:
    """Run `fn` with an orchestrator; `provider` opens the configured provider for its steps."""
    from contextlib import AsyncExitStack  # noqa: PLC0415

    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator  # noqa: PLC0415

    config = EngineConfig(max_parallel_steps=settings.max_parallel_steps,
                          lease_ttl=settings.lease_ttl, max_recoveries=settings.max_recoveries)

    async def with_store(store: StateStore) -> T:
        async with AsyncExitStack() as stack:
            client = None
            if provider:
                from orchestrator.providers.factory import open_provider  # noqa: PLC0415

                client = await stack.enter_async_context(open_provider(settings))
            orch = await stack.enter_async_context(Orchestrator(
                store, config=config, provider=client, progress=progress))
            return await fn(orch)

    return _with_store(settings, with_store)


async def _until_signal(work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if SIGINT or SIGTERM cancelled it (its state is saved)."""
    import anyio  # noqa: PLC0415

    result: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    _err("interrupted: stopping and saving the run's state ...")
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            result.append(await work)
        except Exception as exc:  # noqa: BLE001  (re-raised below, outside the task group)
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error  # unwrapped: a task group would have put it in an ExceptionGroup
    return result[0] if result else None


class _Session:
    """What a running command knows about its run (or batch), for the messages around it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_id: str | None = None
        self.run_ids: list[str] = []
        self.pipeline: Pipeline | None = None
        self.steps: Mapping[str, StepRecord] = {}

    def announce(self, run_id: str, pipeline: Pipeline, verb: str, what: str = "run") -> None:
        self.run_id, self.pipeline = run_id, pipeline
        self.run_ids = self.run_ids or [run_id]
        _err(f"{verb} {what} {run_id} of {pipeline.name} (provider: {self.settings.provider}, "
             f"state: {self.settings.state_url})")


@contextlib.contextmanager
def _output(settings: Settings, *, label: Callable[[str, str], str] | None = None
            ) -> Iterator[ProgressSink | None]:
    """Log lines set up for this command; on a terminal, live progress below them."""
    from orchestrator.log import configure_logging  # noqa: PLC0415

    if sys.stderr.isatty() and settings.log_format != "json":
        from rich.console import Console  # noqa: PLC0415

        from orchestrator.cli.progress import ConsoleWriter, LiveProgress  # noqa: PLC0415

        with LiveProgress(Console(file=sys.stderr), label=label) as live:
            configure_logging(fmt="console", level=settings.log_level,
                              stream=ConsoleWriter(live.console))  # type: ignore[arg-type]
            yield live
    else:
        configure_logging(fmt=settings.log_format, level=settings.log_level)
        yield None


def _wants_cancel(on_interrupt: str) -> bool:
    """Whether to cancel remote jobs after Ctrl-C: the flag, or the person at the terminal."""
    if on_interrupt != "ask":
        return on_interrupt == "cancel"
    if not sys.stdin.isatty():
        return False
    try:
        answer = input("Leave its remote jobs running, to resume later [L], or cancel them "
                       "and the run [c]? ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("c", "cancel")


def _after_interrupt(settings: Settings, session: _Session, on_interrupt: str) -> int:
    if session.run_id is None:
        _err("interrupted before the run was created")
        return EXIT_INTERRUPTED
    _err(f"{session.run_id} interrupted; its state is saved.")
    if _wants_cancel(on_interrupt):
        from orchestrator.cli.service import cancel_and_report  # noqa: PLC0415

        cancel_and_report(settings, session.run_ids, wait=30.0)
        return EXIT_INTERRUPTED
    _err(f"Remote jobs were left running. Continue with:\n  orchestrator resume "
         f"{session.run_id}\nor stop them with:\n  orchestrator cancel {session.run_id}")
    return EXIT_INTERRUPTED


def _execute(settings: Settings,
             start: Callable[[Orchestrator, _Session], Awaitable[RunOutcome]], *,
             on_interrupt: str = "leave") -> int:
    """Execute a run with logging set up; report its outcome and return the exit code."""
    session = _Session(settings)
    with _output(settings) as live:

        async def until_signal(orch: Orchestrator) -> RunOutcome | None:
            outcome = await _until_signal(start(orch, session))
            if outcome is not None:
                session.steps = await orch.store.get_steps(outcome.run_id)
            return outcome

        outcome = _with_orchestrator(settings, until_signal, provider=True, progress=live)
    if outcome is None:
        return _after_interrupt(settings, session, on_interrupt)
    assert session.pipeline is not None
    return _report(session.pipeline, session.steps, outcome)


def _report(pipeline: Pipeline, steps: Mapping[str, StepRecord], outcome: RunOutcome) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.store.base import RunStatus  # noqa: PLC0415

    if outcome.status is RunStatus.SUCCEEDED:
        render.final_outputs(pipeline, steps)
        _out(f"run {outcome.run_id} succeeded")
        return EXIT_OK
    _out(f"run {outcome.run_id} {outcome.status.value}: {outcome.error}")
    _out(f"  see: orchestrator show {outcome.run_id}")
    if outcome.status is not RunStatus.CANCELLED:
        _out(f"  fix the cause, then: orchestrator resume {outcome.run_id}")
    return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.engine.orchestrator import ResumePlan, read_secrets  # noqa: PLC0415

    settings = _settings(args, provider=args.provider)
    pipeline = load_pipeline(args.file)
    inputs = resolve_inputs(pipeline.inputs, parse_assignments(args.input),
                            pipeline_dir=pipeline.base_dir, cwd=Path.cwd())
    if args.detach:
        return _detach(settings, pipeline, inputs)
    read_secrets(pipeline.secret_names)  # fail before creating a run that could not start
    if pipeline.matrix is not None:
        from orchestrator.cli.batches import run_batch  # noqa: PLC0415

        return run_batch(settings, pipeline, inputs, on_interrupt=args.on_interrupt)

    async def run(orch: Orchestrator, session: _Session) -> RunOutcome:
        record = await orch.create_run(pipeline, inputs, hold=True)
        session.announce(record.id, pipeline, "starting")
        return await orch.execute(ResumePlan(record, pipeline, {}, frozenset(), None),
                                  lease=record.lease)

    return _execute(settings, run, on_interrupt=args.on_interrupt)


def _detach(settings: Settings, pipeline: Pipeline, inputs: Mapping[str, Any]) -> int:
    """Queue the run (or batch) for a worker; print its id on stdout and return at once."""
    from orchestrator.engine.orchestrator import Orchestrator  # noqa: PLC0415
    from orchestrator.store.base import RunStatus  # noqa: PLC0415

    async def queue(store: StateStore) -> str:
        orch = Orchestrator(store)
        if pipeline.matrix is not None:
            batch, runs = await orch.create_batch(pipeline, inputs, status=RunStatus.QUEUED)
            _err(f"queued batch {batch.id} of {pipeline.name}: {len(runs)} cells, for a worker "
                 "(orchestrator worker, or orchestrator serve)")
            return batch.id
        run = await orch.create_run(pipeline, inputs, status=RunStatus.QUEUED)
        _err(f"queued run {run.id} of {pipeline.name} for a worker (orchestrator worker, or "
             "orchestrator serve)")
        return run.id

    _out(_with_store(settings, queue))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.store.base import RunStatus  # noqa: PLC0415

    settings = _settings(args)
    if _is_batch(settings, args.run_id):
        from orchestrator.cli.batches import resume_batch  # noqa: PLC0415

        return resume_batch(settings, args.run_id, on_interrupt=args.on_interrupt)

    async def resume(orch: Orchestrator, session: _Session) -> RunOutcome:
        from orchestrator.engine.executor import RunOutcome  # noqa: PLC0415

        plan = await orch.plan_resume(args.run_id, from_step=args.from_step, reload=args.reload)
        session.run_id, session.pipeline = args.run_id, plan.pipeline
        if plan.nothing_to_do:
            _err(f"run {args.run_id} already succeeded; nothing to resume "
                 "(--from STEP re-runs part of it)")
            return RunOutcome(args.run_id, RunStatus.SUCCEEDED)
        session.announce(args.run_id, plan.pipeline, "resuming")
        if plan.run.cancelling:
            _err(f"run {args.run_id} has a cancel request: finishing its cancellation")
        kept = plan.kept()
        if kept:
            _err(f"keeping {len(kept)} succeeded step{'s' * (len(kept) != 1)}: "
                 f"{', '.join(kept)}")
        return await orch.execute(plan, force=args.force)

    return _execute(settings, resume, on_interrupt=args.on_interrupt)


def _is_batch(settings: Settings, target: str) -> bool:
    """Whether `target` names a batch (else it is taken for a run id)."""
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    async def look(store: StateStore) -> bool:
        try:
            await store.get_batch(target)
        except RunNotFound:
            return False
        return True

    return target.startswith("b-") and _with_store(settings, look)


# -- looking at runs -------------------------------------------------------------------------

def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = _settings(args)
    runs = _with_store(settings, lambda store: store.list_runs(limit=args.limit))
    render.runs_table(runs)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = _settings(args)
    if _is_batch(settings, args.run_id):
        from orchestrator.cli.batches import show_batch  # noqa: PLC0415

        return show_batch(settings, args.run_id)

    async def load(store: StateStore) -> Any:
        run = await store.get_run(args.run_id)
        return run, await store.get_steps(args.run_id)

    run, steps = _with_store(settings, load)
    render.run_detail(run, steps, outputs=args.outputs)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from orchestrator.cli import render  # noqa: PLC0415

    settings = _settings(args)

    async def follow(store: StateStore) -> None:
        await store.get_run(args.run_id)  # unknown ids fail here, before anything prints
        after = 0
        while True:
            events = await store.get_events(args.run_id, after=after)
            for event in events:
                render.event_line(event, as_json=args.json)
                after = event.seq
            if not args.follow:
                return
            run = await store.get_run(args.run_id)
            if run.status.finished and run.lease_owner is None and not events:
                return
            await anyio.sleep(0.5)

    async def until_signal(store: StateStore) -> None:
        await _until_signal(follow(store))

    _with_store(settings, until_signal)
    return EXIT_OK


def cmd_local_api(args: argparse.Namespace) -> int:
    import dataclasses  # noqa: PLC0415

    from orchestrator.localapi.config import LocalAPIConfig  # noqa: PLC0415
    from orchestrator.localapi.server import serve  # noqa: PLC0415

    config = LocalAPIConfig.from_settings(_settings(args))
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=Path(args.data_dir))
    try:
        serve(config, host=args.host, port=args.port, allow_remote=args.allow_remote)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_check_data(args: argparse.Namespace) -> int:
    from orchestrator.providers.together.datacheck import check_file  # noqa: PLC0415

    code = EXIT_OK
    for file in args.files:
        report = check_file(file, purpose=args.purpose, max_problems=1000)
        if report.ok:
            _out(f"{file}: ok ({report.samples} {report.format} samples, {report.bytes} bytes)")
            continue
        code = EXIT_BAD_INPUT
        for problem in report.problems:
            where = f"{file}:{problem.line}" if problem.line else file
            _err(f"{where}: {problem.message}")
        if report.truncated:
            _err(f"{file}: stopped after {len(report.problems)} problems")
    return code


def cmd_models(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = _settings(args)
    render.models_table(_with_store(settings, lambda store: store.list_models(limit=args.limit)))
    return EXIT_OK
