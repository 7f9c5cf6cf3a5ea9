"""The command line for batches: running a matrix, resuming it, and looking at it."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.cli.interrupts import after_interrupt
from orchestrator.cli.parser import EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import (
    Session,
    err,
    out,
    output,
    store_settings_for,
    until_signal,
    with_orchestrator,
    with_store,
)
from orchestrator.store.urls import shown_url

if TYPE_CHECKING:
    from orchestrator.cli.commands import ResumeOptions
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore

__all__ = ["cmd_batches", "resume_batch", "run_batch"]


def _execute_batch(settings: Settings, session: Session, on_interrupt: str,
                   go: Any) -> int:
    with output(settings, names=session.names) as live:

        async def interruptible(orch: Orchestrator) -> list[RunOutcome] | None:
            outcomes: list[RunOutcome] | None = await until_signal(go(orch))
            return outcomes

        outcomes = with_orchestrator(settings, interruptible, progress=live)
    if outcomes is None:
        return after_interrupt(settings, session, on_interrupt)
    assert session.run_id is not None
    return _report_batch(settings, session.run_id, outcomes)


def run_batch(settings: Settings, pipeline: Pipeline, inputs: Mapping[str, Any], *,
              on_interrupt: str) -> int:
    """`orchestrator run` of a pipeline with a matrix: every cell, in this process."""
    from orchestrator.engine.plan import ExecutionPlan  # noqa: PLC0415
    from orchestrator.schedule.batch import execute_cells  # noqa: PLC0415

    session = Session(settings)

    async def go(orch: Orchestrator) -> list[RunOutcome]:
        batch, runs = await orch.create_batch(pipeline, inputs, hold=True)
        session.run_ids = [run.id for run in runs]
        bound = f", at most {batch.max_parallel} at once" if batch.max_parallel else ""
        session.announce(batch.id, pipeline, "starting", what="batch",
                         provider=orch.provider_of(runs[0]) if runs else None)
        err(f"  {len(runs)} cells{bound}{', fail-fast' if batch.fail_fast else ''}")
        plans = [ExecutionPlan.new_run(run, pipeline) for run in runs]
        return await execute_cells(orch, plans, fail_fast=batch.fail_fast,
                                   leases={r.id: r.lease for r in runs if r.lease})

    return _execute_batch(settings, session, on_interrupt, go)


def resume_batch(settings: Settings, batch_id: str, options: ResumeOptions) -> int:
    """Resume every cell that did not succeed, each as `resume` of it alone would with the
    same options (see `plan_batch_resume`); leave succeeded and busy cells alone. With
    `detach`, queue those cells for workers instead."""
    from orchestrator.schedule.batch import execute_cells, plan_batch_resume  # noqa: PLC0415

    session = Session(settings)
    request = options.request

    async def plan(orch: Orchestrator) -> Any:
        planned = await plan_batch_resume(orch, batch_id, request)
        for cell in planned.resume:
            if cell.pipeline.needs_provider:
                orch.check_provider(cell.provider)
        providers = sorted({str(p.provider) for p in planned.resume}) or ["none"]
        err(f"resuming batch {batch_id} of {planned.batch.pipeline_name} (provider: "
            f"{', '.join(providers)}, state: {shown_url(settings.state_url)})")
        if request.from_step is not None:
            err(f"  re-running {request.from_step} and everything after it in every cell "
                "resumed")
        if request.reload:
            changed = sorted({s for p in planned.resume for s in p.reset})
            again = (f"succeeded steps that changed run again: {', '.join(changed)}"
                     if changed else "no succeeded step changed")
            err(f"  reloaded {planned.batch.pipeline_path}: each cell resumes with its new "
                f"text ({again})")
        err(f"  {len(planned.resume)} cells to resume, {len(planned.kept)} succeeded cells "
            "kept")
        for run in planned.busy:
            err(f"  {run.id} is being executed by {run.lease_owner}; left alone")
        for run in planned.stranded:
            err(f"  {run.id} is stranded (its executors crashed too often); left alone: "
                f"orchestrator resume {batch_id} --force resumes it too")
        return planned

    if options.detach:
        async def queue(orch: Orchestrator) -> list[str]:
            planned = await plan(orch)
            for cell in planned.resume:
                await orch.queue_resume(cell, force=request.force, from_step=request.from_step)
            return [cell.run.id for cell in planned.resume]

        with output(settings):
            queued = with_orchestrator(settings, queue)
        err(f"queued {len(queued)} cells of batch {batch_id} for workers to resume "
            "(orchestrator worker, or serve)")
        out(batch_id)
        return EXIT_OK

    async def go(orch: Orchestrator) -> list[RunOutcome]:
        planned = await plan(orch)
        session.run_id, session.run_ids = batch_id, [p.run.id for p in planned.resume]
        return await execute_cells(orch, planned.resume, fail_fast=planned.batch.fail_fast,
                                   force=request.force)

    return _execute_batch(settings, session, options.on_interrupt, go)


def _load_batch(settings: Settings, batch_id: str) -> Any:
    from orchestrator.views.batches import load_batch  # noqa: PLC0415

    return with_store(settings, lambda store: load_batch(store, batch_id))


def _report_batch(settings: Settings, batch_id: str, outcomes: list[RunOutcome]) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.store.records import RunStatus  # noqa: PLC0415

    batch, cells = _load_batch(settings, batch_id)
    render.batch_detail(batch, cells)
    if all(cell.run.status is RunStatus.SUCCEEDED for cell in cells):
        out(f"batch {batch_id} succeeded")
        return EXIT_OK
    from orchestrator.cli.hints import file_changed  # noqa: PLC0415

    stopped = [o for o in outcomes if o.status in (RunStatus.FAILED, RunStatus.CANCELLED)]
    points = {o.resume_from for o in stopped}
    if stopped and len(points) == 1 and None not in points:
        # Every stopped cell's job ended (or was cancelled): restart them from one step.
        out(f"batch {batch_id} did not succeed; the jobs of its cells that stopped have ended; "
            f"to start them again: orchestrator resume {batch_id} --from {points.pop()}")
        return EXIT_FAILED
    if any(cell.run.status is RunStatus.STRANDED for cell in cells):
        out(f"batch {batch_id} did not succeed; cells are stranded (their executors crashed "
            f"too often): orchestrator resume {batch_id} --force")
    elif any(file_changed(cell.run.pipeline_text, cell.run.pipeline_path)
             for cell in cells if cell.run.status is RunStatus.FAILED):
        out(f"batch {batch_id} did not succeed; its pipeline file {batch.pipeline_path} "
            f"changed since it started; to resume with the change: orchestrator resume "
            f"{batch_id} --reload")
    else:
        out(f"batch {batch_id} did not succeed; fix the cause, then: orchestrator resume "
            f"{batch_id} (with --reload if the fix is in the pipeline file)")
    for outcome in stopped:
        if outcome.resume_from is not None:
            out(f"  {outcome.run_id}'s job has ended; to start it again: orchestrator resume "
                f"{outcome.run_id} --from {outcome.resume_from}")
    return EXIT_FAILED


def cmd_batches(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = store_settings_for(args)

    async def load(store: StateStore) -> Any:
        batches = await store.list_batches(limit=args.limit)
        return [(b, await store.list_runs(batch_id=b.id, limit=None)) for b in batches]

    rows = with_store(settings, load)
    if args.output == "json":
        from orchestrator.cli.session import print_json  # noqa: PLC0415
        from orchestrator.views.batches import batch_status  # noqa: PLC0415
        from orchestrator.views.shapes import batch_json  # noqa: PLC0415

        documents = []
        for batch, runs in rows:
            document = batch_json(batch, batch_status(runs),
                                  [{"status": run.status.value} for run in runs])
            documents.append({**document, "cells": None})
        print_json(documents)
    else:
        render.batches_table(rows)
    return EXIT_OK
