"""How runs, steps, plans and events look on the terminal (rich tables; plain when piped)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import COLOR_SYSTEMS, Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from orchestrator.durations import format_duration
from orchestrator.spec.expressions import Reference, lookup, render
from orchestrator.store.records import (
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
    from orchestrator.engine.plan import ResumePlan
    from orchestrator.spec.pipeline import Pipeline
    from orchestrator.store.records import BatchRecord
    from orchestrator.views.batches import CellSummary
    from orchestrator.views.schedules import Scheduled

__all__ = [
    "batch_detail",
    "batches_table",
    "event_line",
    "final_outputs",
    "metrics_csv",
    "metrics_table",
    "models_table",
    "pipeline_plan",
    "resume_plan",
    "run_detail",
    "runs_table",
    "schedules_table",
    "sparkline",
    "usd",
]

_STYLE = {
    "succeeded": "green", "failed": "red", "stranded": "red", "cancelled": "yellow",
    "interrupted": "yellow", "retrying": "yellow", "running": "cyan", "pending": "dim",
    "queued": "dim", "waiting": "magenta",
}


class _SafeConsole(Console):
    """A console that shows stored text as text: control characters escaped in every string
    it renders (table cells too), and no rich markup, so `[link=...]` in a step's output is
    printed, not obeyed."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader went away (`| head`): the command line ends quietly, as for a print."""
        self.quiet = True
        raise BrokenPipeError


def _console() -> Console:
    # Piped output is not wrapped at 80 columns: it is read by people and by grep alike.
    return _SafeConsole(file=sys.stdout, width=None if sys.stdout.isatty() else 1000,
                        highlight=False, markup=False, emoji=False,
                        soft_wrap=not sys.stdout.isatty())


def _text(content: str, style: str = "") -> Text:
    """Styled text from stored values, control characters escaped."""
    return Text(printable(content), style=style)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _status(value: str) -> Text:
    return _text(value, _STYLE.get(value, ""))


def _table(*columns: str) -> Table:
    # A value too wide for the terminal folds onto the next line, never cut: a model name
    # or run id copied from a table must be whole.
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


PLAIN_ROWS = 200
"""A table longer than this is laid out here, not by rich: rich measures and wraps every cell
of every row through its renderables (3.5 s for a 10,000-step run's table, 90% of `show`);
a long table's columns are sized once and its lines written in one go."""


def _print_table(console: Console, columns: tuple[str, ...],
                 rows: list[tuple[str | Text, ...]]) -> None:
    """`rows` under `columns` as `_table` lays them out (two spaces between columns, a cell
    too wide folding onto the next lines): by rich up to PLAIN_ROWS rows, by hand above."""
    if len(rows) <= PLAIN_ROWS:
        table = _table(*columns)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    cells = [[c.plain if isinstance(c, Text) else printable(c) for c in row] for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells])
              for i, name in enumerate(columns)]
    room = console.width - 2 * (len(columns) - 1)
    while sum(widths) > room and max(widths) > 8:  # shrink the widest until the lines fit
        widest = widths.index(max(widths))
        widths[widest] = max(8, widths[widest] - (sum(widths) - room))
    system = COLOR_SYSTEMS.get(console.color_system or "") if not console.no_color else None

    def paint(text: str, style: str) -> str:
        return Style.parse(style).render(text, color_system=system) if system and style \
            else text

    def line(values: list[str], styles: list[str | None]) -> str:
        if all(len(v) <= w for v, w in zip(values, widths, strict=True)):  # most rows
            return "  ".join(paint(v.ljust(w), st) if st and v else v.ljust(w) for v, w, st
                             in zip(values, widths, styles, strict=True)).rstrip()
        # Fold each value into chunks of its column's width; the row is as tall as its
        # tallest cell.
        chunks = [[v[i:i + w] for i in range(0, len(v), w)] or [""]
                  for v, w in zip(values, widths, strict=True)]
        return "\n".join(line([c[n] if n < len(c) else "" for c in chunks], styles)
                         for n in range(max(len(c) for c in chunks)))

    lines = [line(list(columns), ["bold"] * len(columns))]
    for row, values in zip(rows, cells, strict=True):
        lines.append(line(values, [str(c.style) if isinstance(c, Text) else None
                                   for c in row]))
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _waiting(key: str) -> Text:
    return _text(f"waiting for {key}", _STYLE["waiting"])


def _run_status(run: RunRecord) -> Text:
    """A run's status, with what it waits for, that its cancellation is pending, or that its
    executor is gone."""
    if executor_gone(run):
        return Text(f"{run.status.value} (executor gone)", style="red")
    if run.waiting_for:
        return _waiting(run.waiting_for)
    if run.cancelling:
        return Text(f"{run.status.value} (cancel requested)", style="yellow")
    return _status(run.status.value)


def _run_span(run: RunRecord) -> str:
    """How long a run took, or has been going."""
    return _span(run.started_at, run.finished_at if run.status.finished else None)


def _span(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    return format_duration((end or time.time()) - start)


def _short(value: Any, limit: int = 100) -> str:
    text = _whole(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _whole(value: Any) -> str:
    """A value in a table cell, whole (the table folds it): a parameter, an input or a matrix
    value copied from a plan or a batch must be the one the run uses."""
    return printable(value if isinstance(value, str) else json.dumps(value, sort_keys=True))


# -- plans -----------------------------------------------------------------------------------

def pipeline_plan(pipeline: Pipeline, inputs: Mapping[str, Any]) -> None:
    """The resolved DAG: each step with its dependencies and parameters, inputs filled in."""
    console = _console()
    console.print(f"pipeline {pipeline.name} ({pipeline.path}), {len(pipeline.steps)} steps")
    for name, value in inputs.items():
        console.print(f"  input {name} = {_whole(value)}")
    if pipeline.matrix is not None:
        cells = pipeline.cells()
        axes = " x ".join(f"{k} ({len(v)})" for k, v in pipeline.matrix.axes.items())
        bound = pipeline.matrix.max_parallel
        console.print(f"  matrix: {len(cells)} cells, one run each ({axes or 'include only'})"
                      + (f", at most {bound} at once" if bound else "")
                      + (", fail-fast" if pipeline.matrix.fail_fast else ""))
    if pipeline.concurrency is not None:
        console.print(f"  concurrency: at most {pipeline.concurrency.limit} runs per key "
                      f"{pipeline.concurrency.key!r}")
    if pipeline.schedule is not None:
        spec = pipeline.schedule
        console.print(f"  schedule: {spec.cron} ({spec.timezone}), overlap {spec.overlap}, "
                      f"catch_up {spec.catch_up}")

    def fill(ref: Reference) -> Any:
        if ref.root == "inputs" and ref.path and ref.path[0] in inputs:
            return lookup(inputs, ref)
        if ref.root == "run":
            return f"<run.{ref.path[0] if ref.path else ''}>"
        return "${{ " + ref.text + " }}"

    table = _table("STEP", "USES", "NEEDS", "RETRY", "TIMEOUT", "WITH")
    for sid, step in pipeline.steps.items():
        retry = f"{step.retry.max_attempts}x" if step.retry else "off"
        timeout = format_duration(step.timeout) if step.timeout else "-"
        params = render(step.with_, fill)
        shown = ", ".join(f"{k}={_whole(v)}" for k, v in params.items())
        table.add_row(sid, step.spec.uses, ", ".join(sorted(step.needs)) or "-", retry, timeout,
                      shown or "-")
    for section, hooks in pipeline.hooks.items():
        for hid, hook in hooks.items():
            shown = ", ".join(f"{k}={_whole(v)}" for k, v in render(hook.with_, fill).items())
            table.add_row(hid, hook.spec.uses, f"({section.removeprefix('on_')})",
                          f"{hook.retry.max_attempts}x" if hook.retry else "off",
                          format_duration(hook.timeout) if hook.timeout else "-", shown or "-")
    console.print(table)


def resume_plan(plan: ResumePlan) -> None:
    console = _console()
    run = plan.run
    console.print(f"resuming run {run.id} ({run.pipeline_name}, {run.status.value}) would:")
    will_run = set(plan.will_run())
    table = _table("STEP", "NOW", "ACTION")
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
        table.add_row(sid, _status(status), action)
    for section, hooks in plan.pipeline.hooks.items():
        outcome = section.removeprefix("on_").replace("success", "succeeds").replace(
            "failure", "fails")
        for hid in hooks:
            record = plan.records.get(hid)
            status = record.status.value if record else "pending"
            action = "keep (it ran)" if status == "succeeded" else f"run if the run {outcome}"
            table.add_row(hid, _status(status), action)
    console.print(table)


# -- runs ------------------------------------------------------------------------------------

def runs_table(runs: list[RunRecord], *, filtered: bool = False) -> None:
    console = _console()
    if not runs:
        console.print("no runs match" if filtered
                      else "no runs yet (start one with: orchestrator run FILE)")
        return
    table = _table("RUN", "PIPELINE", "STATUS", "STARTED", "DURATION")
    for run in runs:
        table.add_row(run.id, run.pipeline_name, _run_status(run),
                      _when(run.started_at or run.created_at), _run_span(run))
    console.print(table)


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


def _train_curve(points: list[MetricPoint]) -> list[float]:
    """The train losses in training-step order (what a sparkline draws)."""
    return [loss for _, loss in loss_series(points).get("train loss", [])]


def _losses_line(run_id: str, points: list[MetricPoint]) -> str | None:
    final = final_losses(points)
    if final["train_loss"] is None and final["eval_loss"] is None:
        return None
    train = _train_curve(points)
    return (f"  losses    train {_loss(final['train_loss'])}  eval {_loss(final['eval_loss'])}"
            f"  {sparkline(train)}  ({len(points)} points: orchestrator metrics {run_id})")


def usd(value: float) -> str:
    """Dollars as a price reads: cents, or more digits for prices under a cent."""
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def run_detail(run: RunRecord, steps: Mapping[str, StepRecord], *, outputs: bool,
               points: list[MetricPoint] | None = None) -> None:
    console = _console()
    console.print(Text.assemble(f"run {run.id}  {run.pipeline_name}  ", _run_status(run)))
    console.print(f"  pipeline  {run.pipeline_path}")
    provider = (f"{run.provider} ({run.provider_url})" if run.provider
                else "not recorded (stored before runs kept theirs): the executing process's")
    console.print(f"  provider  {provider}")
    if run.batch_id is not None:
        cell = ", ".join(f"{k}={_whole(v)}" for k, v in (run.matrix or {}).items())
        console.print(f"  batch     {run.batch_id}, cell {run.cell}: {cell}")
    if run.schedule_id is not None:
        console.print(f"  schedule  {run.schedule_id}, fire time {_when(run.scheduled_for)}")
    console.print(f"  created   {_when(run.created_at)}   duration {_run_span(run)}")
    if run.inputs:
        console.print("  inputs    " + ", ".join(f"{k}={_whole(v)}"
                                                 for k, v in run.inputs.items()))
    if run.error:
        console.print(_text(f"  error     {run.error}", "red"))
    if executor_gone(run):
        console.print(_text(f"  executor  {run.lease_owner or 'none'} is gone; continue with: "
                            f"orchestrator resume {run.id} (or a worker takes it over)", "red"))
    elif run.status is RunStatus.RUNNING and run.lease_owner:
        console.print(f"  executing on {run.lease_owner}")
    losses = _losses_line(run.id, points or [])
    if losses:
        console.print(losses)
    price = estimated_price(steps.values())
    if price is not None:
        total, count = price
        console.print(f"  price     {usd(total)} estimated by the provider for {count} "
                      f"fine-tune{'s' * (count != 1)}")
    order = step_order(run, steps, parse=_stored_pipeline)
    rows: list[tuple[str | Text, ...]] = []
    for sid in order:
        record = steps.get(sid) or StepRecord(sid)
        unreachable = record.checkpoint.get("unreachable_since")
        if record.status is StepStatus.RETRYING and record.retry_at:
            note = f"retry at {_when(record.retry_at)}: "
        elif isinstance(unreachable, int | float) and record.status in (
                StepStatus.RUNNING, StepStatus.INTERRUPTED):
            note = ("provider unreachable since "
                    f"{time.strftime('%H:%M', time.localtime(unreachable))}")
        else:
            note = ""
        error = note + str(record.error) if record.error else note
        finished = record.finished_at if record.status.value in STOPPED_STEPS else None
        status = _waiting(record.waiting_for) if record.waiting_for \
            else _status(record.status.value)
        rows.append((sid, status, str(record.attempt or "-"),
                     _span(record.started_at, finished), _short(error, 120)))
    _print_table(console, ("STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows)
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
                console.print(f"{sid}.{key}: {_output_value(key, value)}", soft_wrap=True)


def _output_value(key: str, value: Any) -> str:
    """An output as a person reads it: a time (`recorded_at`, `..._at`: seconds since the
    epoch) as local time, anything else as it is (long values cut: `show --outputs` has
    them whole)."""
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool) \
            and 0 <= value < 32_503_680_000:
        return _when(value)
    return _short(value, 200)


# -- batches and schedules -------------------------------------------------------------------

def _loss(value: float | None, spec: str = ".4f") -> str:
    """A loss (or another figure, by `spec`) for a table; `-` when there is none."""
    return "-" if value is None else format(value, spec)


def batch_detail(batch: BatchRecord, cells: list[CellSummary]) -> None:
    """A batch's cells: matrix values, status, model, final losses, duration."""
    from orchestrator.views.batches import batch_status  # noqa: PLC0415

    console = _console()
    runs = [cell.run for cell in cells]
    console.print(Text.assemble(f"batch {batch.id}  {batch.pipeline_name}  ",
                                _status(batch_status(runs))))
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status.value] = counts.get(run.status.value, 0) + 1
    bound = f"max_parallel {batch.max_parallel}" if batch.max_parallel else "no max_parallel"
    console.print(f"  {batch.cells} cells ({', '.join(f'{n} {s}' for s, n in counts.items())})"
                  f", {bound}{', fail_fast' if batch.fail_fast else ''}")
    console.print(f"  created   {_when(batch.created_at)}   pipeline {batch.pipeline_path}")
    table = _table("CELL", "MATRIX", "STATUS", "MODEL", "TRAIN LOSS", "EVAL LOSS", "DURATION")
    for cell in cells:
        run = cell.run
        values = " ".join(f"{k}={_whole(v)}" for k, v in (run.matrix or {}).items())
        table.add_row(run.id, values or "-", _run_status(run), cell.model_name or "-",
                      _loss(cell.train_loss), _loss(cell.eval_loss),
                      _run_span(run))
    console.print(table)
    failed = [c.run for c in cells if c.run.error and c.run.status is not RunStatus.SUCCEEDED]
    for run in failed[:10]:
        console.print(_text(f"  {run.id}: {run.error}", "red"))


def batches_table(rows: list[tuple[BatchRecord, list[RunRecord]]]) -> None:
    from orchestrator.views.batches import batch_status  # noqa: PLC0415

    console = _console()
    if not rows:
        console.print("no batches yet (a pipeline with a matrix: runs as one)")
        return
    table = _table("BATCH", "PIPELINE", "STATUS", "CELLS", "SUCCEEDED", "FAILED", "CREATED")
    for batch, runs in rows:
        succeeded = sum(r.status is RunStatus.SUCCEEDED for r in runs)
        failed = sum(r.status in (RunStatus.FAILED, RunStatus.STRANDED) for r in runs)
        table.add_row(batch.id, batch.pipeline_name, _status(batch_status(runs)),
                      str(batch.cells), str(succeeded), str(failed), _when(batch.created_at))
    console.print(table)


def schedules_table(rows: list[tuple[Scheduled, float | None, RunRecord | None]]) -> None:
    """Each schedule with its next fire time (in its own zone; `paused` for one paused from
    the web view) and its last run."""
    from datetime import datetime  # noqa: PLC0415

    console = _console()
    if not rows:
        console.print("no pipelines with a schedule: found (see setting schedule_paths)")
        return
    table = _table("SCHEDULE", "CRON", "TIMEZONE", "OVERLAP", "CATCH-UP", "NEXT FIRE", "LAST RUN")
    for scheduled, next_fire, last in rows:
        spec = scheduled.pipeline.schedule
        assert spec is not None
        when = "paused" if next_fire is None else datetime.fromtimestamp(
            next_fire, scheduled.cron.zone).strftime("%Y-%m-%d %H:%M %Z")
        last_text = Text("-") if last is None else Text.assemble(f"{last.id} ",
                                                                  _run_status(last))
        table.add_row(scheduled.id, spec.cron, spec.timezone, spec.overlap, spec.catch_up,
                      when, last_text)
    console.print(table)


# -- the model registry ---------------------------------------------------------------------

def models_table(models: list[ModelEntry]) -> None:
    console = _console()
    if not models:
        console.print("no models recorded yet (a pipeline's registry/record-model step adds "
                      "them)")
        return
    table = _table("MODEL", "BASE", "RUN", "JOB", "TRAIN LOSS", "EVAL LOSS", "RECORDED")
    for model in models:
        losses = [value if isinstance(value := model.metrics.get(key), int | float) else None
                  for key in ("train_loss", "eval_loss")]
        table.add_row(model.name, model.base_model or "-", model.run_id, model.job_id or "-",
                      *map(_loss, losses), _when(model.recorded_at))
    console.print(table)


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
                         *(f"{k}={_short(v, 400)}" for k, v in dict(fields).items())])
    else:
        text = " ".join(f"{k}={_short(v, 160)}" for k, v in details.items())
    print(f"{_when(event.ts)}  {where:<20} {kind:<18} {text}".rstrip(), flush=True)
    if trace:
        print("    " + printable(str(trace), lines=True).rstrip().replace("\n", "\n    "),
              flush=True)


# -- metrics ---------------------------------------------------------------------------------

_METRIC_HEADER = ("step", "job_id", "train_step", "epoch", "train_loss", "eval_loss",
                  "learning_rate", "tokens", "ts")


def metrics_table(run_id: str, points: list[MetricPoint]) -> None:
    console = _console()
    if not points:
        console.print(f"run {run_id} has no metrics (its fine-tune jobs report them while "
                      "they train)")
        return
    table = _table("STEP", "JOB", "TRAIN STEP", "EPOCH", "TRAIN LOSS", "EVAL LOSS", "LR",
                   "TOKENS")
    for p in points:
        table.add_row(p.step_id, p.job_id, str(p.train_step), _loss(p.epoch, ".2f"),
                      _loss(p.train_loss), _loss(p.eval_loss), _loss(p.learning_rate, ".3g"),
                      "-" if p.tokens is None else str(p.tokens))
    console.print(table)
    final = final_losses(points)
    console.print(f"final train loss {_loss(final['train_loss'])}, eval loss "
                  f"{_loss(final['eval_loss'])}  {sparkline(_train_curve(points))}")


def _final_figures(points: list[MetricPoint]) -> dict[str, Any]:
    """A series' last train and eval loss, learning rate and tokens, and its length."""
    ordered = sorted(points, key=lambda p: p.train_step)
    last = {key: next((getattr(p, key) for p in reversed(ordered)
                       if getattr(p, key) is not None), None)
            for key in ("learning_rate", "tokens", "train_step")}
    return {"points": len(points), **final_losses(points), **last}


def batch_metrics_table(batch_id: str, series: list[tuple[RunRecord, list[MetricPoint]]]
                        ) -> None:
    """`metrics BATCH`: each cell's final figures, one row a cell."""
    console = _console()
    table = _table("CELL", "MATRIX", "STATUS", "POINTS", "TRAIN LOSS", "EVAL LOSS", "LR",
                   "TOKENS", "")
    for run, points in series:
        final = _final_figures(points)
        values = " ".join(f"{k}={_whole(v)}" for k, v in (run.matrix or {}).items())
        table.add_row(run.id, values or "-", _run_status(run), str(final["points"]),
                      _loss(final["train_loss"]), _loss(final["eval_loss"]),
                      _loss(final["learning_rate"], ".3g"),
                      "-" if final["tokens"] is None else str(final["tokens"]),
                      sparkline(_train_curve(points), width=16))
    console.print(f"batch {batch_id}: final figures of each cell's fine-tune")
    console.print(table)


def batch_metrics_csv(series: list[tuple[RunRecord, list[MetricPoint]]]) -> None:
    """`metrics BATCH --csv`: one row a cell, its matrix values as columns of their own
    (`matrix.learning_rate`: the figures have a learning_rate too)."""
    import csv  # noqa: PLC0415

    axes = list(dict.fromkeys(k for run, _ in series for k in (run.matrix or {})))
    header = ["run_id", "cell", *(f"matrix.{k}" for k in axes), "status", "points",
              "train_loss", "eval_loss", "learning_rate", "tokens", "train_step"]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for run, points in series:
        final = _final_figures(points)
        matrix = run.matrix or {}
        writer.writerow([run.id, run.cell, *(_csv_value(matrix.get(k)) for k in axes),
                         run.status.value,
                         *("" if final[k] is None else final[k] for k in header[-6:])])
    sys.stdout.flush()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, str | int | float) else json.dumps(value, sort_keys=True)


def metrics_csv(points: list[MetricPoint]) -> None:
    """The series as CSV with a header row (empty cells for missing figures)."""
    import csv  # noqa: PLC0415

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_METRIC_HEADER)
    for p in points:
        row = p.to_json()
        writer.writerow(["" if row[k] is None else row[k] for k in _METRIC_HEADER])
    sys.stdout.flush()


def _stored_pipeline(text: str, path: str) -> Pipeline | None:
    """A run's text parsed, for a run stored before its step order was kept (the step types
    load only then: listing a run parses nothing)."""
    from orchestrator.steps.builtin import stored_pipeline  # noqa: PLC0415

    return stored_pipeline(text, path)
