"""What runs, steps, batches, models, schedules, events and metrics look like as JSON.

One shape per kind of record, printed by the command line's `-o json` (and `logs --json`,
`metrics --json`) and served by the web view's API, so a script written against one reads the
other. The shapes are stable: a field may be added, never renamed, retyped or removed (the
README's "Scripting" section lists them). Times are seconds since the epoch (UTC), durations
seconds; absent values are `null`, never missing keys. Values are never cut: a model name of
any length is whole.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.owners import owner_is_dead
from orchestrator.store.records import (
    AliasMove,
    BatchRecord,
    EventRecord,
    MetricPoint,
    ModelEntry,
    RunRecord,
    RunStatus,
    StepRecord,
)

__all__ = ["SHAPES_VERSION", "STOPPED_STEPS", "alias_json", "batch_json", "document_text",
           "event_json", "executor_gone", "final_losses", "metric_json", "metrics_document",
           "model_json", "run_document", "run_json", "schedule_json", "step_json"]

SHAPES_VERSION = 1


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity made null, as JSON can hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def document_text(value: Any, *, indent: int | None = None) -> str:
    """A shape as JSON text, valid for any JSON reader: a step may output a loss that is NaN
    (a diverged fine-tune), which Python's JSON writes as `NaN` and every other reader
    refuses; here it is null. Keys in the shape's order, text unescaped."""
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:  # only then walk it: most documents hold no such number
        return json.dumps(_finite(value), indent=indent, ensure_ascii=False, allow_nan=False)


def executor_gone(run: RunRecord, now: float | None = None) -> bool:
    """The run says `running` but no live process executes it: its process exited (on this
    machine) or its lease expired. `resume` or a worker continues it."""
    if run.status is not RunStatus.RUNNING:
        return False
    owner = run.lease_owner
    return (owner is None or not run.lease_live(time.time() if now is None else now)
            or owner_is_dead(owner))


STOPPED_STEPS = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
"""Step statuses whose duration ends at their `finished_at` (not at now): a step a cancel or
a signal stopped lasted until then, however long ago that was."""


def _span(start: float | None, end: float | None, now: float) -> float | None:
    return None if start is None else round((end or now) - start, 3)


def run_json(run: RunRecord, *, now: float | None = None) -> dict[str, Any]:
    """A run: what `runs -o json` lists and `show RUN -o json` holds under `run`."""
    now = time.time() if now is None else now
    finished = run.finished_at if run.status.finished else None
    return {
        "id": run.id, "pipeline": run.pipeline_name, "pipeline_path": run.pipeline_path,
        "status": run.status.value, "executor_gone": executor_gone(run, now),
        "cancel_requested": run.cancelling, "waiting_for": run.waiting_for,
        "executor": run.lease_owner, "provider": run.provider,
        "provider_url": run.provider_url, "inputs": dict(run.inputs),
        "batch_id": run.batch_id, "cell": run.cell,
        "matrix": None if run.matrix is None else dict(run.matrix),
        "schedule_id": run.schedule_id, "scheduled_for": run.scheduled_for,
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": finished,
        "duration": _span(run.started_at, finished, now), "error": run.error,
    }


def step_json(record: StepRecord, *, now: float | None = None) -> dict[str, Any]:
    """A step of a run (`show RUN -o json`'s `steps`), in the pipeline's order."""
    now = time.time() if now is None else now
    done = record.finished_at if record.status.value in STOPPED_STEPS else None
    return {
        "id": record.step_id, "status": record.status.value, "attempts": record.attempt,
        "waiting_for": record.waiting_for, "started_at": record.started_at,
        "finished_at": done, "duration": _span(record.started_at, done, now),
        "retry_at": record.retry_at,
        "error": None if record.error is None else record.error.to_json(),
        "outputs": None if record.outputs is None else dict(record.outputs),
    }


def final_losses(points: Sequence[MetricPoint]) -> dict[str, float | None]:
    """The last train and eval loss among `points` (in training-step order)."""
    ordered = sorted(points, key=lambda p: p.train_step)
    train = [p.train_loss for p in ordered if p.train_loss is not None]
    evals = [p.eval_loss for p in ordered if p.eval_loss is not None]
    return {"train_loss": train[-1] if train else None,
            "eval_loss": evals[-1] if evals else None}


def estimated_price(steps: Iterable[StepRecord]) -> tuple[float, int] | None:
    """The price the provider estimated for the fine-tunes a run launched (the launch steps'
    `estimated_price_usd`), and how many it priced; None if none was priced."""
    prices = [value for s in steps if isinstance(
        value := (s.outputs or {}).get("estimated_price_usd"), int | float)
        and not isinstance(value, bool)]
    return (float(sum(prices)), len(prices)) if prices else None


def run_document(run: RunRecord, steps: Iterable[StepRecord],
                 points: Sequence[MetricPoint]) -> dict[str, Any]:
    """`show RUN -o json`: the run, its steps (in the order given: the pipeline's), how many
    metric points it keeps with its final losses, and its fine-tunes' estimated price."""
    now = time.time()
    steps = list(steps)
    price = estimated_price(steps)
    return {"run": run_json(run, now=now), "steps": [step_json(s, now=now) for s in steps],
            "metrics": {"points": len(points), **final_losses(points)},
            "estimated_price_usd": price[0] if price else None}


def metric_json(point: MetricPoint) -> dict[str, Any]:
    """A job's figures at one training step (`metrics RUN --json`)."""
    return point.to_json()


def metrics_document(run_id: str, points: Sequence[MetricPoint],
                     scores: Mapping[str, float] | None = None) -> dict[str, Any]:
    """`metrics RUN --json`: the run's final losses, every point, and its evaluation's
    scores (`eval.SCORER`, `lift.SCORER`, `baseline.SCORER`; `views.batches.eval_figures`)."""
    return {"run_id": run_id, **final_losses(points),
            "points": [metric_json(p) for p in points], "scores": dict(scores or {})}


def event_json(event: EventRecord) -> dict[str, Any]:
    """An entry of a run's event log (`logs RUN --json`): engine events (step started,
    attempt failed, checkpoint...) and, with kind `log`, what a step logged. `run_id` says
    whose it is in a batch's log."""
    return {"seq": event.seq, "ts": event.ts, "kind": event.kind, "run_id": event.run_id,
            "step": event.step_id, "attempt": event.attempt, "data": dict(event.data)}


def batch_json(batch: BatchRecord, status: str, cells: Iterable[Mapping[str, Any]]
               ) -> dict[str, Any]:
    """A batch with its cells (each a run's shape plus `model_name`, `train_loss`,
    `eval_loss`), or without (`batches -o json`: `cells` is null, `counts` by status)."""
    rows = list(cells)
    counts: dict[str, int] = {}
    for cell in rows:
        counts[cell["status"]] = counts.get(cell["status"], 0) + 1
    return {"id": batch.id, "pipeline": batch.pipeline_name,
            "pipeline_path": batch.pipeline_path, "status": status, "size": batch.cells,
            "max_parallel": batch.max_parallel, "fail_fast": batch.fail_fast,
            "created_at": batch.created_at, "schedule_id": batch.schedule_id,
            "counts": counts, "cells": rows}


def model_json(entry: ModelEntry) -> dict[str, Any]:
    """A model of the registry (`models -o json`), with its lineage: run, job, files."""
    return {"name": entry.name, "base_model": entry.base_model, "run_id": entry.run_id,
            "step": entry.step_id, "pipeline": entry.pipeline_name,
            "provider": entry.provider, "job_id": entry.job_id,
            "training_file": entry.training_file, "validation_file": entry.validation_file,
            "hyperparameters": dict(entry.hyperparameters), "metrics": dict(entry.metrics),
            "tags": dict(entry.tags), "recorded_at": entry.recorded_at}


def alias_json(move: AliasMove) -> dict[str, Any]:
    """An alias move (`models --alias NAME -o json`): the alias, the model, who, when, why."""
    return {"alias": move.alias, "model": move.model, "moved_by": move.moved_by,
            "moved_at": move.moved_at, "reason": move.reason, "source": move.source}


def schedule_json(schedule_id: str, *, pipeline: str, path: str, cron: str, timezone: str,
                  overlap: str, catch_up: str, next_fire: float,
                  last_run: RunRecord | None, paused_at: float | None = None
                  ) -> dict[str, Any]:
    """A schedule (`schedules -o json`): its cron and zone, next fire time (null while it is
    paused), since when it is paused, its last run."""
    return {"id": schedule_id, "pipeline": pipeline, "pipeline_path": path, "cron": cron,
            "timezone": timezone, "overlap": overlap, "catch_up": catch_up,
            "next_fire": None if paused_at is not None else next_fire,
            "paused_at": paused_at,
            "last_run": None if last_run is None else {"id": last_run.id,
                                                       "status": last_run.status.value}}
