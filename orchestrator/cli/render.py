"""How runs, steps, batches, schedules, models and events look on the terminal (`screen`:
tables that fold, colours on a terminal only). Plans are `render_plans`', metrics
`render_metrics`'.

(Over 400 lines: every record the store keeps has its table here, side by side, so columns,
colours and empty values look the same in each.)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.cli.screen import Cell, Screen, Styled
from orchestrator.durations import format_duration
from orchestrator.store.records import (
    AliasMove,
    EventRecord,
    MetricPoint,
    ModelEntry,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)
from orchestrator.terminal import printable
from orchestrator.views.charts import loss_series
from orchestrator.views.order import step_order
from orchestrator.views.shapes import STOPPED_STEPS, estimated_price, executor_gone, final_losses

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.store.records import BatchRecord
    from orchestrator.views.batches import CellSummary, Selection
    from orchestrator.views.schedules import Scheduled

__all__ = [
    "batch_detail",
    "batches_table",
    "event_line",
    "final_outputs",
    "models_table",
    "parse_stored",
    "run_detail",
    "runs_table",
    "schedules_table",
    "sparkline",
    "usd",
]

STYLE = {
    "succeeded": "green", "failed": "red", "stranded": "red", "cancelled": "yellow",
    "interrupted": "yellow", "retrying": "yellow", "running": "cyan", "pending": "dim",
    "queued": "dim", "waiting": "magenta",
}


def screen() -> Screen:
    """Standard output, as wide as its terminal (tests point this elsewhere)."""
    return Screen()


def when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def status_cell(value: str) -> Styled:
    return Styled(value, STYLE.get(value, ""))


def _waiting(key: str) -> Styled:
    return Styled(f"waiting for {key}", STYLE["waiting"])


def run_status(run: RunRecord) -> Styled:
    """A run's status, with what it waits for, that its cancellation is pending, or that its
    executor is gone."""
    if executor_gone(run):
        return Styled(f"{run.status.value} (executor gone)", "red")
    if run.waiting_for:
        return _waiting(run.waiting_for)
    if run.cancelling:
        return Styled(f"{run.status.value} (cancel requested)", "yellow")
    return status_cell(run.status.value)


def run_span(run: RunRecord) -> str:
    """How long a run took, or has been going."""
    return _span(run.started_at, run.finished_at if run.status.finished else None)


def _span(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    return format_duration((end or time.time()) - start)


def short(value: Any, limit: int = 100) -> str:
    text = whole(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def whole(value: Any) -> str:
    """A value in a table cell, whole (the table folds it): a parameter, an input or a matrix
    value copied from a plan or a batch must be the one the run uses."""
    return printable(value if isinstance(value, str) else json.dumps(value, sort_keys=True))


# -- runs ------------------------------------------------------------------------------------

def runs_table(runs: list[RunRecord], *, filtered: bool = False) -> None:
    out = screen()
    if not runs:
        out.line("no runs match" if filtered
                 else "no runs yet (start one with: orchestrator run FILE)")
        return
    out.table(("RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"),
              [(run.id, run.pipeline_name, run_status(run),
                when(run.started_at or run.created_at), run_span(run)) for run in runs])


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """A line of block characters, one per value (at most `width`, evenly picked), low to
    high; plain ASCII where the terminal's encoding has no blocks."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    bars = _BARS
    try:
        bars.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        bars = "_.-=+*#@"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[min(len(bars) - 1, int((v - low) / span * len(bars)))] for v in values)


def train_curve(points: list[MetricPoint]) -> list[float]:
    """The train losses in training-step order (what a sparkline draws)."""
    return [loss for _, loss in loss_series(points).get("train loss", [])]


def _losses_line(run_id: str, points: list[MetricPoint]) -> str | None:
    final = final_losses(points)
    if final["train_loss"] is None and final["eval_loss"] is None:
        return None
    train = train_curve(points)
    return (f"  losses    train {loss(final['train_loss'])}  eval {loss(final['eval_loss'])}"
            f"  {sparkline(train)}  ({len(points)} points: orchestrator metrics {run_id})")


def usd(value: float) -> str:
    """Dollars as a price reads: cents, or more digits for prices under a cent."""
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def run_detail(run: RunRecord, steps: Mapping[str, StepRecord], *, outputs: bool,
               points: list[MetricPoint] | None = None) -> None:
    out = screen()
    out.line(f"run {run.id}  {run.pipeline_name}  ", run_status(run))
    out.line(f"  pipeline  {run.pipeline_path}")
    provider = (f"{run.provider} ({run.provider_url})" if run.provider
                else "not recorded (stored before runs kept theirs): the executing process's")
    out.line(f"  provider  {provider}")
    if run.batch_id is not None:
        cell = ", ".join(f"{k}={whole(v)}" for k, v in (run.matrix or {}).items())
        out.line(f"  batch     {run.batch_id}, cell {run.cell}: {cell}")
    if run.schedule_id is not None:
        out.line(f"  schedule  {run.schedule_id}, fire time {when(run.scheduled_for)}")
    out.line(f"  created   {when(run.created_at)}   duration {run_span(run)}")
    if run.inputs:
        out.line("  inputs    " + ", ".join(f"{k}={whole(v)}"
                                                 for k, v in run.inputs.items()))
    if run.error:
        out.line(Styled(f"  error     {run.error}", "red"))
    if executor_gone(run):
        out.line(Styled(f"  executor  {run.lease_owner or 'none'} is gone; continue with: "
                            f"orchestrator resume {run.id} (or a worker takes it over)", "red"))
    elif run.status is RunStatus.RUNNING and run.lease_owner:
        out.line(f"  executing on {run.lease_owner}")
    losses = _losses_line(run.id, points or [])
    if losses:
        out.line(losses)
    price = estimated_price(steps.values())
    if price is not None:
        total, count = price
        out.line(f"  price     {usd(total)} estimated by the provider for {count} "
                      f"fine-tune{'s' * (count != 1)}")
    order = step_order(run, steps, parse=parse_stored)
    rows: list[tuple[Cell, ...]] = []
    for sid in order:
        record = steps.get(sid) or StepRecord(sid)
        unreachable = record.checkpoint.get("unreachable_since")
        if record.status is StepStatus.RETRYING and record.retry_at:
            note = f"retry at {when(record.retry_at)}: "
        elif isinstance(unreachable, int | float) and record.status in (
                StepStatus.RUNNING, StepStatus.INTERRUPTED):
            note = ("provider unreachable since "
                    f"{time.strftime('%H:%M', time.localtime(unreachable))}")
        else:
            note = ""
        error = note + str(record.error) if record.error else note
        finished = record.finished_at if record.status.value in STOPPED_STEPS else None
        status = _waiting(record.waiting_for) if record.waiting_for \
            else status_cell(record.status.value)
        rows.append((sid, status, str(record.attempt or "-"),
                     _span(record.started_at, finished), short(error, 120)))
    out.table(("STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows)
    if outputs:
        for sid in order:
            stored = steps.get(sid)
            if stored and stored.outputs is not None:
                out.line(f"{sid}:")
                for key, value in stored.outputs.items():
                    out.line(f"  {key}: {short(value, 400)}")


def final_outputs(pipeline: Pipeline, steps: Mapping[str, StepRecord]) -> None:
    """The outputs of the last steps (those nothing depends on): what the run produced."""
    needed = {need for step in pipeline.steps.values() for need in step.needs}
    out = screen()
    for sid in pipeline.steps:
        record = steps.get(sid)
        if sid not in needed and record and record.outputs:
            for key, value in record.outputs.items():
                out.line(f"{sid}.{key}: {_output_value(key, value)}")


def _output_value(key: str, value: Any) -> str:
    """An output as a person reads it: a time (`recorded_at`, `..._at`: seconds since the
    epoch) as local time, anything else as it is (long values cut: `show --outputs` has
    them whole)."""
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool) \
            and 0 <= value < 32_503_680_000:
        return when(value)
    return short(value, 200)


# -- batches and schedules -------------------------------------------------------------------

def loss(value: float | None, spec: str = ".4f") -> str:
    """A loss (or another figure, by `spec`) for a table; `-` when there is none."""
    return "-" if value is None else format(value, spec)


def batch_detail(batch: BatchRecord, cells: list[CellSummary],
                 selection: Selection | None = None) -> None:
    """A batch's cells: matrix values, status, model, final losses, duration; with an
    objective (`select:`), each cell's figure and rank, the best marked, ties said."""
    from orchestrator.views.batches import batch_status  # noqa: PLC0415

    out = screen()
    runs = [cell.run for cell in cells]
    out.line(f"batch {batch.id}  {batch.pipeline_name}  ", status_cell(batch_status(runs)))
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status.value] = counts.get(run.status.value, 0) + 1
    bound = f"max_parallel {batch.max_parallel}" if batch.max_parallel else "no max_parallel"
    out.line(f"  {batch.cells} cells ({', '.join(f'{n} {s}' for s, n in counts.items())})"
             f", {bound}{', fail_fast' if batch.fail_fast else ''}")
    out.line(f"  created   {when(batch.created_at)}   pipeline {batch.pipeline_path}")
    header: tuple[str, ...] = ("CELL", "MATRIX", "STATUS", "MODEL", "TRAIN LOSS", "EVAL LOSS",
                               "DURATION")
    rows: list[tuple[Cell, ...]] = [
        (cell.run.id, matrix_values(cell.run), run_status(cell.run), cell.model_name or "-",
         loss(cell.train_loss), loss(cell.eval_loss), run_span(cell.run)) for cell in cells]
    if selection is not None:
        places = {c.run.id: n for n, (c, _) in enumerate(selection.ranked, start=1)}
        header = (*header, selection.objective.by.upper(), "RANK")
        rows = [(*row, loss(cell.figures.get(selection.objective.by)),
                 Styled("best", "green") if places.get(cell.run.id) == 1
                 else f"#{places[cell.run.id]}" if cell.run.id in places else "-")
                for row, cell in zip(rows, cells, strict=True)]
    out.table(header, rows)
    if selection is not None:
        out.line(f"  ranked by {selection.objective}")
        for line in selection_lines(selection)[len(selection.ranked):]:
            out.line(line)
    failed = [c.run for c in cells if c.run.error and c.run.status is not RunStatus.SUCCEEDED]
    for run in failed[:10]:
        out.line(Styled(f"  {run.id}: {run.error}", "red"))


def selection_lines(selection: Selection) -> list[str]:
    """The ranking as people read it: the winner, ties, and who was left out and why."""
    objective = selection.objective
    lines = []
    for place, (cell, value) in enumerate(selection.ranked, start=1):
        mark = "best" if place == 1 else f"#{place}"
        lines.append(f"  {mark:>4}  {cell.run.id}  {matrix_values(cell.run)}  "
                     f"{objective.by} {value:.4g}  {cell.model_name}")
    if selection.tied and selection.winner is not None:
        ids = ", ".join(c.run.id for c in selection.tied)
        lines.append(f"  tie: {ids} {'has' if len(selection.tied) == 1 else 'have'} the same "
                     f"{objective.by}; the first in cell order, {selection.winner.run.id}, "
                     "wins")
    for cell, why in selection.left_out:
        lines.append(f"  left out: {cell.run.id} ({why})")
    return lines


def matrix_values(run: RunRecord) -> str:
    """A cell's matrix values, `key=value` side by side (`-` for none)."""
    return " ".join(f"{k}={whole(v)}" for k, v in (run.matrix or {}).items()) or "-"


def batches_table(rows: list[tuple[BatchRecord, list[RunRecord]]]) -> None:
    from orchestrator.views.batches import batch_status  # noqa: PLC0415

    out = screen()
    if not rows:
        out.line("no batches yet (a pipeline with a matrix: runs as one)")
        return
    out.table(("BATCH", "PIPELINE", "STATUS", "CELLS", "SUCCEEDED", "FAILED", "CREATED"), [
        (batch.id, batch.pipeline_name, status_cell(batch_status(runs)), str(batch.cells),
         str(sum(r.status is RunStatus.SUCCEEDED for r in runs)),
         str(sum(r.status in (RunStatus.FAILED, RunStatus.STRANDED) for r in runs)),
         when(batch.created_at)) for batch, runs in rows])


def schedules_table(rows: list[tuple[Scheduled, float | None, RunRecord | None]]) -> None:
    """Each schedule with its next fire time (in its own zone; `paused` for one paused from
    the web view) and its last run."""
    from datetime import datetime  # noqa: PLC0415

    out = screen()
    if not rows:
        out.line("no pipelines with a schedule: found (see setting schedule_paths)")
        return
    table: list[tuple[Cell, ...]] = []
    for scheduled, next_fire, last in rows:
        spec = scheduled.pipeline.schedule
        assert spec is not None
        fire = "paused" if next_fire is None else datetime.fromtimestamp(
            next_fire, scheduled.cron.zone).strftime("%Y-%m-%d %H:%M %Z")
        table.append((scheduled.id, spec.cron, spec.timezone, spec.overlap, spec.catch_up,
                      fire, "-" if last is None else (f"{last.id} ", run_status(last))))
    out.table(("SCHEDULE", "CRON", "TIMEZONE", "OVERLAP", "CATCH-UP", "NEXT FIRE", "LAST RUN"),
              table)


# -- the model registry ---------------------------------------------------------------------

def models_table(models: list[ModelEntry], aliases: Sequence[AliasMove] = ()) -> None:
    """The registry, newest first, each model with the aliases that point at it."""
    out = screen()
    if not models:
        out.line("no models recorded yet (a pipeline's registry/record-model step adds them)")
        return
    rows: list[tuple[Cell, ...]] = []
    for model in models:
        losses = [value if isinstance(value := model.metrics.get(key), int | float) else None
                  for key in ("train_loss", "eval_loss")]
        named = ", ".join(a.alias for a in aliases if a.model == model.name) or "-"
        rows.append((model.name, named, model.base_model or "-", model.run_id,
                     model.job_id or "-", *map(loss, losses), when(model.recorded_at)))
    out.table(("MODEL", "ALIASES", "BASE", "RUN", "JOB", "TRAIN LOSS", "EVAL LOSS",
               "RECORDED"), rows)


def alias_detail(moves: Sequence[AliasMove], entry: ModelEntry | None) -> None:
    """`models --alias NAME`: what it serves now, the entry's lineage, and its moves."""
    out = screen()
    now = moves[0]
    out.line(f"{now.alias} -> {now.model}")
    if entry is not None:
        out.line(f"  base {entry.base_model or '-'}   run {entry.run_id}   job "
                 f"{entry.job_id or '-'}   recorded {when(entry.recorded_at)}")
    else:
        out.line("  (not in the registry: no registry/record-model step recorded it)")
    out.table(("MOVED", "MODEL", "BY", "FROM", "WHY"), [
        (when(m.moved_at), m.model, m.moved_by, m.source or "-", m.reason or "-")
        for m in moves])


# -- events ----------------------------------------------------------------------------------

def event_line(event: EventRecord, *, as_json: bool, cell: str = "") -> None:
    """One line of `logs`: an engine event with its data, or (kind `log`) what a step logged,
    at its level; `cell` (`#3`) says whose it is in a batch's log."""
    if as_json:
        from orchestrator.views.shapes import event_json  # noqa: PLC0415

        print(json.dumps(event_json(event), sort_keys=True), flush=True)
        return
    where = event.step_id or "-"
    if event.attempt:
        where += f"#{event.attempt}"
    if cell:
        where = f"{cell} {where}"
    details = dict(event.data)
    trace = details.pop("traceback", None)
    kind = event.kind
    if kind == "log":
        kind = str(details.get("level", "info"))
        fields = details.get("fields") or {}
        text = " ".join([printable(str(details.get("message", ""))),
                         *(f"{k}={short(v, 400)}" for k, v in dict(fields).items())])
    else:
        text = " ".join(f"{k}={short(v, 160)}" for k, v in details.items())
    print(f"{when(event.ts)}  {where:<20} {kind:<18} {text}".rstrip(), flush=True)
    if trace:
        print("    " + printable(str(trace), lines=True).rstrip().replace("\n", "\n    "),
              flush=True)


def parse_stored(text: str, path: str) -> Pipeline | None:
    """A run's text parsed, for a run stored before its step order was kept (the step types
    load only then: listing a run parses nothing)."""
    from orchestrator.steps.builtin import stored_pipeline  # noqa: PLC0415

    return stored_pipeline(text, path)
