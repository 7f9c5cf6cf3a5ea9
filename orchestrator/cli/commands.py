"""What each command does. Heavy imports live here or below, loaded only when a command runs."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli.interrupts import after_interrupt
from orchestrator.cli.parser import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import (
    Session,
    err,
    is_batch,
    out,
    output,
    settings_for,
    until_signal,
    with_orchestrator,
)
from orchestrator.definition.inputs import parse_assignments, resolve_inputs
from orchestrator.definition.pipeline import Pipeline
from orchestrator.errors import PipelineInvalid
from orchestrator.steps.builtin import load_pipeline

if TYPE_CHECKING:
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.engine.plan import ExecutionPlan, ResumeRequest
    from orchestrator.providers.refs import ProviderRef
    from orchestrator.settings import Settings
    from orchestrator.store.records import StepRecord

__all__ = [
    "ResumeOptions",
    "cmd_check_data",
    "cmd_local_api",
    "cmd_plan",
    "cmd_resume",
    "cmd_run",
    "cmd_validate",
]

# -- validate and plan (no store; a provider only to price fine-tunes: they must start fast) --

def cmd_validate(args: argparse.Namespace) -> int:
    code = EXIT_OK
    limits = settings_for(args).pipeline_limits
    for file in args.files:
        try:
            pipeline = load_pipeline(file, limits=limits)
        except PipelineInvalid as exc:
            err(str(exc))
            code = EXIT_BAD_INPUT
        else:
            count = len(pipeline.steps)
            out(f"{file}: ok ({pipeline.name}, {count} step{'s' * (count != 1)})")
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.cli import render_plans  # noqa: PLC0415

    settings = settings_for(args, provider=args.provider)
    if Path(args.target).is_file() or args.target.endswith((".yaml", ".yml")):
        pipeline = load_pipeline(args.target, limits=settings.pipeline_limits)
        inputs = resolve_inputs(pipeline.inputs, parse_assignments(args.input),
                                pipeline_dir=pipeline.base_dir, cwd=Path.cwd())
        render_plans.pipeline_plan(pipeline, inputs)
        if not args.no_estimate and _launches(pipeline):
            from orchestrator.cli.pricing import estimate, show_estimate  # noqa: PLC0415

            show_estimate(pipeline, estimate(settings, pipeline, inputs))
        return EXIT_OK
    if args.input:
        err("error: -i applies to a pipeline file; a run keeps the inputs it started with")
        return EXIT_BAD_INPUT

    async def plan(orch: Orchestrator) -> ExecutionPlan:
        return await orch.plan_resume(args.target, from_step=args.from_step, reload=args.reload)

    render_plans.resume_plan(with_orchestrator(settings, plan))
    return EXIT_OK


def _launches(pipeline: Pipeline) -> bool:
    from orchestrator.steps.together.pricing import has_launches  # noqa: PLC0415

    return has_launches(pipeline)


# -- running ---------------------------------------------------------------------------------

def _execute(settings: Settings,
             start: Callable[[Orchestrator, Session], Awaitable[RunOutcome]], *,
             on_interrupt: str = "leave") -> int:
    """Execute a run with logging set up; report its outcome and return the exit code."""
    session = Session(settings)
    with output(settings, names=session.names) as live:

        async def interruptible(orch: Orchestrator) -> RunOutcome | None:
            outcome = await until_signal(start(orch, session))
            if outcome is not None:
                session.steps = await orch.store.get_steps(outcome.run_id)
            return outcome

        outcome = with_orchestrator(settings, interruptible, progress=live)
    if outcome is None:
        return after_interrupt(settings, session, on_interrupt)
    assert session.pipeline is not None
    return _report(session.pipeline, session.steps, outcome)


def _report(pipeline: Pipeline, steps: Mapping[str, StepRecord], outcome: RunOutcome) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.store.records import RunStatus  # noqa: PLC0415

    for hook in outcome.failed_hooks:
        err(f"warning: hook {hook} failed (the run keeps its outcome; see: orchestrator logs "
            f"{outcome.run_id} --step {hook})")
    if outcome.status is RunStatus.SUCCEEDED:
        render.final_outputs(pipeline, steps)
        out(f"run {outcome.run_id} succeeded")
        return EXIT_OK
    from orchestrator.cli.hints import resume_hint  # noqa: PLC0415

    out(f"run {outcome.run_id} {outcome.status.value}: {outcome.error}")
    out(f"  see: orchestrator show {outcome.run_id}")
    hint = resume_hint(outcome.run_id, outcome.status.value, resume_from=outcome.resume_from,
                       text=pipeline.text, path=str(pipeline.path))
    if hint is not None:
        out(f"  {hint}")
    return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.engine.plan import ExecutionPlan, read_secrets  # noqa: PLC0415

    settings = settings_for(args, provider=args.provider)
    pipeline = load_pipeline(args.file, limits=settings.pipeline_limits)
    inputs = resolve_inputs(pipeline.inputs, parse_assignments(args.input),
                            pipeline_dir=pipeline.base_dir, cwd=Path.cwd())
    if pipeline.budget is not None and not args.yes and _launches(pipeline):
        from orchestrator.cli.pricing import budget_refusal, estimate  # noqa: PLC0415

        prices = estimate(settings, pipeline, inputs, say_uploads=False)  # the run reuses them
        refusal = budget_refusal(pipeline, prices, file=args.file)
        if refusal is not None:
            err(refusal)
            return EXIT_BAD_INPUT
    if args.detach:
        return _detach(settings, pipeline, inputs)
    read_secrets(pipeline.secret_names)  # fail before creating a run that could not start
    from orchestrator.runtime import check_provider  # noqa: PLC0415

    # Nor one whose provider this process cannot use (no key): before a state file is made.
    if pipeline.needs_provider:
        check_provider(settings)
    if pipeline.matrix is not None:
        from orchestrator.cli.batches import run_batch  # noqa: PLC0415

        return run_batch(settings, pipeline, inputs, on_interrupt=args.on_interrupt)

    async def run(orch: Orchestrator, session: Session) -> RunOutcome:
        record = await orch.create_run(pipeline, inputs, hold=True)
        session.announce(record.id, pipeline, "starting", provider=orch.provider_of(record))
        return await orch.execute(ExecutionPlan.new_run(record, pipeline),
                                  lease=record.lease)

    return _execute(settings, run, on_interrupt=args.on_interrupt)


def _detach(settings: Settings, pipeline: Pipeline, inputs: Mapping[str, Any]) -> int:
    """Queue the run (or batch) for a worker; print its id on stdout and return at once."""
    from orchestrator.providers.refs import provider_ref  # noqa: PLC0415
    from orchestrator.store.records import RunStatus  # noqa: PLC0415

    # Bound to the provider chosen here; the worker that executes it needs that provider's key.
    ref = provider_ref(settings)

    async def queue(orch: Orchestrator) -> str:
        if pipeline.matrix is not None:
            batch, runs = await orch.create_batch(pipeline, inputs, status=RunStatus.QUEUED,
                                                  provider=ref)
            err(f"queued batch {batch.id} of {pipeline.name}: {len(runs)} cells on provider "
                f"{ref}, for a worker (orchestrator worker, or orchestrator serve)")
            return batch.id
        run = await orch.create_run(pipeline, inputs, status=RunStatus.QUEUED, provider=ref)
        err(f"queued run {run.id} of {pipeline.name} on provider {ref}, for a worker "
            "(orchestrator worker, or orchestrator serve)")
        return run.id

    out(with_orchestrator(settings, queue))
    return EXIT_OK


@dataclasses.dataclass(frozen=True)
class ResumeOptions:
    """Every flag of `resume`, read once and handed whole to a run's resume and to a batch's
    (`resume_batch`): a flag cannot be dropped on the way to a batch's cells (`--from`, then
    `--reload`, were). `tests/cli/test_resume_flags.py` checks every flag of the parser has a
    field here and an effect on a batch."""

    request: ResumeRequest
    """--from, --reload, --force, --provider with --move-provider."""
    on_interrupt: str
    detach: bool
    """Queue the run (every cell not succeeded) for a worker instead of executing it here."""

    @classmethod
    def from_args(cls, settings: Settings, args: argparse.Namespace) -> ResumeOptions:
        from orchestrator.engine.plan import ResumeRequest  # noqa: PLC0415  (start-up)

        return cls(ResumeRequest(from_step=args.from_step, reload=args.reload,
                                 force=args.force, provider=_resume_target(settings, args),
                                 move=args.move_provider),
                   on_interrupt=args.on_interrupt, detach=args.detach)


def cmd_resume(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    options = ResumeOptions.from_args(settings, args)
    if is_batch(settings, args.run_id):
        from orchestrator.cli.batches import resume_batch  # noqa: PLC0415

        return resume_batch(settings, args.run_id, options)
    if options.detach:
        return _queue_resume(settings, args.run_id, options.request)
    request = options.request

    async def resume(orch: Orchestrator, session: Session) -> RunOutcome:
        from orchestrator.engine.executor import RunOutcome  # noqa: PLC0415
        from orchestrator.store.records import RunStatus  # noqa: PLC0415

        plan = await orch.plan_request(args.run_id, request)
        session.run_id, session.pipeline = args.run_id, plan.pipeline
        if plan.nothing_to_do:
            err(f"run {args.run_id} already succeeded; nothing to resume "
                "(--from STEP re-runs part of it)")
            return RunOutcome(args.run_id, RunStatus.SUCCEEDED)
        if plan.pipeline.needs_provider:
            orch.check_provider(plan.provider)
        session.announce(args.run_id, plan.pipeline, "resuming", provider=plan.provider)
        if plan.moved_from is not None:
            err(f"moving run {args.run_id} from provider {plan.moved_from} to {plan.provider}")
        if plan.run.cancelling:
            err(f"run {args.run_id} has a cancel request: finishing its cancellation")
        kept = plan.kept()
        if kept:
            err(f"keeping {len(kept)} succeeded step{'s' * (len(kept) != 1)}: "
                f"{', '.join(kept)}")
        return await orch.execute(plan, force=request.force)

    return _execute(settings, resume, on_interrupt=options.on_interrupt)


def _resume_target(settings: Settings, args: argparse.Namespace) -> ProviderRef | None:
    """The provider `resume --provider P` asks for (None: the run's own)."""
    if args.move_provider and not args.provider:
        from orchestrator.errors import ConfigError  # noqa: PLC0415

        msg = "--move-provider needs --provider local|together: where the run moves to"
        raise ConfigError(msg)
    if not args.provider:
        return None
    from orchestrator.providers.refs import provider_ref  # noqa: PLC0415

    return provider_ref(settings, args.provider)


def _queue_resume(settings: Settings, run_id: str, request: ResumeRequest) -> int:
    """`resume RUN --detach`: the resume planned here (a bad --from or a file that no longer
    loads is refused now), what it changes committed, the run queued for a worker; its id
    printed, as `run --detach` prints one."""
    async def queue(orch: Orchestrator) -> str | None:
        plan = await orch.plan_request(run_id, request)
        if plan.nothing_to_do:
            return None
        if plan.pipeline.needs_provider:
            orch.check_provider(plan.provider)
        await orch.queue_resume(plan, force=request.force, from_step=request.from_step)
        return plan.pipeline.name

    with output(settings):
        name = with_orchestrator(settings, queue)
    if name is None:
        err(f"run {run_id} already succeeded; nothing to resume (--from STEP re-runs part of "
            "it)")
        return EXIT_OK
    err(f"queued run {run_id} of {name} for a worker to resume (orchestrator worker, or "
        f"serve); follow it: orchestrator logs {run_id} --follow")
    out(run_id)
    return EXIT_OK


def cmd_local_api(args: argparse.Namespace) -> int:
    import dataclasses  # noqa: PLC0415

    from orchestrator.localapi.config import LocalAPIConfig  # noqa: PLC0415
    from orchestrator.localapi.server import serve  # noqa: PLC0415

    config = LocalAPIConfig.from_settings(settings_for(args))
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=Path(args.data_dir))
    if args.trainer:
        config = dataclasses.replace(config, trainer=args.trainer)
    try:
        serve(config, host=args.host, port=args.port, allow_remote=args.allow_remote)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_check_data(args: argparse.Namespace) -> int:
    from orchestrator.protocol.datacheck import check_file  # noqa: PLC0415

    code = EXIT_OK
    for file in args.files:
        report = check_file(file, purpose=args.purpose, max_problems=1000)
        if report.ok:
            out(f"{file}: ok ({report.samples} {report.format} samples, {report.bytes} bytes)")
            continue
        code = EXIT_BAD_INPUT
        for problem in report.problems:
            where = f"{file}:{problem.line}" if problem.line else file
            err(f"{where}: {problem.message}")
        if report.truncated:
            err(f"{file}: stopped after {len(report.problems)} problems")
    return code
