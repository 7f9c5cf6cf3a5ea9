"""How a plan looks on the terminal: `plan FILE` (the steps, inputs filled in) and `plan RUN`
(what a resume would do to each step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.cli.render import screen, status_cell, whole
from orchestrator.cli.screen import Cell
from orchestrator.definition.expressions import Reference, lookup, render
from orchestrator.durations import format_duration

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.plan import ExecutionPlan

__all__ = ["pipeline_plan", "resume_plan"]


def pipeline_plan(pipeline: Pipeline, inputs: Mapping[str, Any]) -> None:
    """The resolved DAG: each step with its dependencies and parameters, inputs filled in."""
    out = screen()
    out.line(f"pipeline {pipeline.name} ({pipeline.path}), {len(pipeline.steps)} steps")
    for name, value in inputs.items():
        out.line(f"  input {name} = {whole(value)}")
    if pipeline.matrix is not None:
        cells = pipeline.cells()
        axes = " x ".join(f"{k} ({len(v)})" for k, v in pipeline.matrix.axes.items())
        bound = pipeline.matrix.max_parallel
        out.line(f"  matrix: {len(cells)} cells, one run each ({axes or 'include only'})"
                      + (f", at most {bound} at once" if bound else "")
                      + (", fail-fast" if pipeline.matrix.fail_fast else ""))
    if pipeline.concurrency is not None:
        out.line(f"  concurrency: at most {pipeline.concurrency.limit} runs per key "
                      f"{pipeline.concurrency.key!r}")
    if pipeline.schedule is not None:
        spec = pipeline.schedule
        out.line(f"  schedule: {spec.cron} ({spec.timezone}), overlap {spec.overlap}, "
                      f"catch_up {spec.catch_up}")

    def fill(ref: Reference) -> Any:
        if ref.root == "inputs" and ref.path and ref.path[0] in inputs:
            return lookup(inputs, ref)
        if ref.root == "run":
            return f"<run.{ref.path[0] if ref.path else ''}>"
        return "${{ " + ref.text + " }}"

    columns = ("STEP", "USES", "NEEDS", "RETRY", "TIMEOUT", "WITH")
    rows: list[tuple[Cell, ...]] = []
    for sid, step in pipeline.steps.items():
        retry = f"{step.retry.max_attempts}x" if step.retry else "off"
        timeout = format_duration(step.timeout) if step.timeout else "-"
        params = render(step.with_, fill)
        shown = ", ".join(f"{k}={whole(v)}" for k, v in params.items())
        rows.append((sid, step.spec.uses, ", ".join(sorted(step.needs)) or "-", retry,
                     timeout, shown or "-"))
    for section, hooks in pipeline.hooks.items():
        for hid, hook in hooks.items():
            shown = ", ".join(f"{k}={whole(v)}" for k, v in render(hook.with_, fill).items())
            rows.append((hid, hook.spec.uses, f"({section.removeprefix('on_')})",
                         f"{hook.retry.max_attempts}x" if hook.retry else "off",
                         format_duration(hook.timeout) if hook.timeout else "-",
                         shown or "-"))
    out.table(columns, rows)


def resume_plan(plan: ExecutionPlan) -> None:
    out = screen()
    run = plan.run
    out.line(f"resuming run {run.id} ({run.pipeline_name}, {run.status.value}) would:")
    will_run = set(plan.will_run())
    columns = ("STEP", "NOW", "ACTION")
    rows: list[tuple[Cell, ...]] = []
    for sid in plan.pipeline.steps:
        record = plan.records.get(sid)
        status = record.status.value if record else "pending"
        if sid in plan.changed:
            action = "run again: changed in the file"
        elif sid in plan.reset and status == "succeeded":
            action = ("run again: after a changed step" if plan.changed and
                      sid in plan.pipeline.downstream(set(plan.changed)) else "run again: --from")
        elif sid in will_run:
            action = "run" if status == "pending" else "re-enter" if status in (
                "running", "interrupted", "retrying") else "run again"
        else:
            action = "keep outputs"
        rows.append((sid, status_cell(status), action))
    for section, hooks in plan.pipeline.hooks.items():
        outcome = section.removeprefix("on_").replace("success", "succeeds").replace(
            "failure", "fails")
        for hid in hooks:
            record = plan.records.get(hid)
            status = record.status.value if record else "pending"
            action = "keep (it ran)" if status == "succeeded" else f"run if the run {outcome}"
            rows.append((hid, status_cell(status), action))
    out.table(columns, rows)
