"""How a run's (or a batch's) metric points look: a table with a sparkline of the train loss,
or CSV for a spreadsheet."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from orchestrator.cli.render import (
    loss,
    matrix_values,
    run_status,
    screen,
    sparkline,
    train_curve,
)
from orchestrator.cli.screen import Cell
from orchestrator.store.records import MetricPoint, RunRecord
from orchestrator.views.shapes import final_losses

__all__ = ["batch_metrics_csv", "batch_metrics_table", "metrics_csv", "metrics_table"]

_METRIC_HEADER = ("step", "job_id", "train_step", "epoch", "train_loss", "eval_loss",
                  "learning_rate", "tokens", "ts")


def metrics_table(run_id: str, points: list[MetricPoint],
                  scores: Mapping[str, float] | None = None) -> None:
    """A run's figures per training step, its final losses, and its evaluation's scores."""
    out = screen()
    if scores:
        out.line("evaluation: " + ", ".join(f"{name} {value:.4f}"
                                            for name, value in sorted(scores.items())))
    if not points:
        out.line(f"run {run_id} has no metrics (its fine-tune jobs report them while they "
                 "train)")
        return
    out.table(("STEP", "JOB", "TRAIN STEP", "EPOCH", "TRAIN LOSS", "EVAL LOSS", "LR", "TOKENS"),
              [(p.step_id, p.job_id, str(p.train_step), loss(p.epoch, ".2f"),
                loss(p.train_loss), loss(p.eval_loss), loss(p.learning_rate, ".3g"),
                "-" if p.tokens is None else str(p.tokens)) for p in points])
    final = final_losses(points)
    out.line(f"final train loss {loss(final['train_loss'])}, eval loss "
             f"{loss(final['eval_loss'])}  {sparkline(train_curve(points))}")


def _final_figures(points: list[MetricPoint]) -> dict[str, Any]:
    """A series' last train and eval loss, learning rate and tokens, and its length."""
    ordered = sorted(points, key=lambda p: p.train_step)
    last = {key: next((getattr(p, key) for p in reversed(ordered)
                       if getattr(p, key) is not None), None)
            for key in ("learning_rate", "tokens", "train_step")}
    return {"points": len(points), **final_losses(points), **last}


CellFigures = tuple[RunRecord, list[MetricPoint], Mapping[str, float]]
"""A cell of `metrics BATCH`: its run, its fine-tune's series, its evaluation's scores."""


def batch_metrics_table(batch_id: str, series: list[CellFigures]) -> None:
    """`metrics BATCH`: each cell's final figures (and its scores), one row a cell."""
    out = screen()
    scored = sorted({k for _, _, scores in series for k in scores if k.startswith("eval.")})
    rows: list[tuple[Cell, ...]] = []
    for run, points, scores in series:
        final = _final_figures(points)
        rows.append((run.id, matrix_values(run), run_status(run), str(final["points"]),
                     loss(final["train_loss"]), loss(final["eval_loss"]),
                     loss(final["learning_rate"], ".3g"),
                     "-" if final["tokens"] is None else str(final["tokens"]),
                     *(loss(scores.get(k)) for k in scored),
                     sparkline(train_curve(points), width=16)))
    out.line(f"batch {batch_id}: final figures of each cell's fine-tune")
    out.table(("CELL", "MATRIX", "STATUS", "POINTS", "TRAIN LOSS", "EVAL LOSS", "LR", "TOKENS",
               *(k.upper() for k in scored), ""), rows)


def batch_metrics_csv(series: list[CellFigures]) -> None:
    """`metrics BATCH --csv`: one row a cell, its matrix values as columns of their own
    (`matrix.learning_rate`: the figures have a learning_rate too), then its scores
    (`eval.exact_match`, `lift.exact_match`, ...)."""
    import csv  # noqa: PLC0415

    axes = list(dict.fromkeys(k for run, _, _ in series for k in (run.matrix or {})))
    scored = sorted({k for _, _, scores in series for k in scores})
    figures = ["train_loss", "eval_loss", "learning_rate", "tokens", "train_step"]
    header = ["run_id", "cell", *(f"matrix.{k}" for k in axes), "status", "points", *figures,
              *scored]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for run, points, scores in series:
        final = _final_figures(points)
        matrix = run.matrix or {}
        writer.writerow([run.id, run.cell, *(_csv_value(matrix.get(k)) for k in axes),
                         run.status.value, final["points"],
                         *("" if final[k] is None else final[k] for k in figures),
                         *(_csv_value(scores.get(k)) for k in scored)])
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
