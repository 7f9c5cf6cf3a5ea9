"""How runs, steps, plans and events look on the terminal (rich tables; plain when piped)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.spec.durations import format_duration
from orchestrator.spec.expressions import Reference, lookup, render
from orchestrator.store.base import (
    EventRecord,
    ModelEntry,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)

if TYPE_CHECKING:
    from orchestrator.engine.orchestrator import ResumePlan
    from orchestrator.spec.loader import Pipeline

__all__ = [
    "event_line",
    "final_outputs",
    "models_table",
    "pipeline_plan",
    "resume_plan",
    "run_detail",
    "runs_table",
]

_STYLE = {
    "succeeded": "green", "failed": "red", "stranded": "red", "cancelled": "yellow",
    "interrupted": "yellow", "retrying": "yellow", "running": "cyan", "pending": "dim",
}


def _console() -> Console:
    # Piped output is not wrapped at 80 columns: it is read by people and by grep alike.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 1000,
                   highlight=False, soft_wrap=not sys.stdout.isatty())


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _status(value: str) -> Text:
    return Text(value, style=_STYLE.get(value, ""))


def _span(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    return format_duration((end or time.time()) - start)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- plans -----------------------------------------------------------------------------------

def pipeline_plan(pipeline: Pipeline, inputs: Mapping[str, Any]) -> None:
    """The resolved DAG: each step with its dependencies and parameters, inputs filled in."""
    console = _console()
    console.print(f"pipeline {pipeline.name} ({pipeline.path}), {len(pipeline.steps)} steps")
    for name, value in inputs.items():
        console.print(f"  input {name} = {_short(value)}")

    def fill(ref: Reference) -> Any:
        if ref.root == "inputs" and ref.path and ref.path[0] in inputs:
            return lookup(inputs, ref)
        if ref.root == "run":
            return f"<run.{ref.path[0] if ref.path else ''}>"
        return "${{ " + ref.text + " }}"

    table = Table(box=None, pad_edge=False)
    for column in ("STEP", "USES", "NEEDS", "RETRY", "TIMEOUT", "WITH"):
        table.add_column(column)
    for sid, step in pipeline.steps.items():
        retry = f"{step.retry.max_attempts}x" if step.retry else "off"
        timeout = format_duration(step.timeout) if step.timeout else "-"
        params = render(step.with_, fill)
        shown = ", ".join(f"{k}={_short(v, 60)}" for k, v in params.items())
        table.add_row(sid, step.spec.uses, ", ".join(sorted(step.needs)) or "-", retry, timeout,
                      shown or "-")
    console.print(table)


def resume_plan(plan: ResumePlan) -> None:
    console = _console()
    run = plan.run
    console.print(f"resuming run {run.id} ({run.pipeline_name}, {run.status.value}) would:")
    will_run = set(plan.will_run())
    table = Table(box=None, pad_edge=False)
    for column in ("STEP", "NOW", "ACTION"):
        table.add_column(column)
    for sid in plan.pipeline.steps:
        record = plan.records.get(sid)
        status = record.status.value if record else "pending"
        if sid in plan.reset and status == "succeeded":
            action = "run again (changed or downstream of --from/a change)"
        elif sid in will_run:
            action = "run" if status == "pending" else "re-enter" if status in (
                "running", "interrupted", "retrying") else "run again"
        else:
            action = "keep outputs"
        table.add_row(sid, _status(status), action)
    console.print(table)


# -- runs ------------------------------------------------------------------------------------

def runs_table(runs: list[RunRecord]) -> None:
    console = _console()
    if not runs:
        console.print("no runs yet (start one with: orchestrator run FILE)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"):
        table.add_column(column)
    for run in runs:
        end = run.finished_at if run.status.finished else None
        table.add_row(run.id, run.pipeline_name, _status(run.status.value),
                      _when(run.started_at or run.created_at), _span(run.started_at, end))
    console.print(table)


def run_detail(run: RunRecord, steps: Mapping[str, StepRecord], *, outputs: bool) -> None:
    from orchestrator.spec.loader import parse_pipeline  # noqa: PLC0415

    console = _console()
    end = run.finished_at if run.status.finished else None
    console.print(Text.assemble(f"run {run.id}  {run.pipeline_name}  ",
                                _status(run.status.value)))
    console.print(f"  pipeline  {run.pipeline_path}")
    console.print(f"  created   {_when(run.created_at)}   duration {_span(run.started_at, end)}")
    if run.inputs:
        console.print("  inputs    " + ", ".join(f"{k}={_short(v, 60)}"
                                                 for k, v in run.inputs.items()))
    if run.error:
        console.print(Text(f"  error     {run.error}", style="red"))
    if run.status is RunStatus.RUNNING and run.lease_owner:
        console.print(f"  executing on {run.lease_owner}")
    try:
        order = list(parse_pipeline(run.pipeline_text, Path(run.pipeline_path)).steps)
    except Exception:  # noqa: BLE001  (show what is stored even if the text no longer loads)
        order = list(steps)
    table = Table(box=None, pad_edge=False)
    for column in ("STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR"):
        table.add_column(column)
    for sid in order + [s for s in steps if s not in order]:
        record = steps.get(sid) or StepRecord(sid)
        if record.status is StepStatus.RETRYING and record.retry_at:
            note = f"retry at {_when(record.retry_at)}: "
        else:
            note = ""
        error = note + str(record.error) if record.error else ""
        finished = record.finished_at if record.status in (StepStatus.SUCCEEDED,
                                                           StepStatus.FAILED) else None
        table.add_row(sid, _status(record.status.value), str(record.attempt or "-"),
                      _span(record.started_at, finished), _short(error, 120))
    console.print(table)
    if outputs:
        for sid in order:
            stored = steps.get(sid)
            if stored and stored.outputs is not None:
                console.print(f"{sid}:")
                for key, value in stored.outputs.items():
                    console.print(f"  {key}: {_short(value, 400)}")


def final_outputs(pipeline: Pipeline, steps: Mapping[str, StepRecord]) -> None:
    """The outputs of the last steps (those nothing depends on): what the run produced."""
    needed = {need for step in pipeline.steps.values() for need in step.needs}
    console = _console()
    for sid in pipeline.steps:
        record = steps.get(sid)
        if sid not in needed and record and record.outputs:
            for key, value in record.outputs.items():
                console.print(f"{sid}.{key}: {_short(value, 200)}", soft_wrap=True)


# -- the model registry ---------------------------------------------------------------------

def models_table(models: list[ModelEntry]) -> None:
    console = _console()
    if not models:
        console.print("no models recorded yet (a pipeline's registry/record-model step adds "
                      "them)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("MODEL", "BASE", "RUN", "JOB", "TRAIN LOSS", "EVAL LOSS", "RECORDED"):
        table.add_column(column)
    for model in models:
        metrics = model.metrics

        def loss(key: str, metrics: Mapping[str, Any] = metrics) -> str:
            value = metrics.get(key)
            return f"{value:.4f}" if isinstance(value, int | float) else "-"

        table.add_row(model.name, model.base_model or "-", model.run_id, model.job_id or "-",
                      loss("train_loss"), loss("eval_loss"), _when(model.recorded_at))
    console.print(table)


# -- events ----------------------------------------------------------------------------------

def event_line(event: EventRecord, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"seq": event.seq, "ts": event.ts, "kind": event.kind,
                          "step": event.step_id, "attempt": event.attempt,
                          "data": event.data}, sort_keys=True), flush=True)
        return
    where = event.step_id or "-"
    if event.attempt:
        where += f"#{event.attempt}"
    details = dict(event.data)
    trace = details.pop("traceback", None)
    text = " ".join(f"{k}={_short(v, 160)}" for k, v in details.items())
    print(f"{_when(event.ts)}  {where:<20} {event.kind:<18} {text}".rstrip(), flush=True)
    if trace:
        print("    " + str(trace).rstrip().replace("\n", "\n    "), flush=True)
