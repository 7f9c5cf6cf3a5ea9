"""A fine-tune job's figures, read from what Together reports: its metrics and its events.

The metrics endpoint is the full series (`train/loss`, `eval/loss`, `train/learning_rate`,
`train/epoch` by `train/global_step`); a job's events say the same in words at epochs and at
the end ("... at step 10/30: train loss 1.2345, eval loss 1.3"), which is all a server without
the endpoint gives. Both become `MetricPoint`s keyed by training step, so the same step read
from both is one point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.store.records import MetricPoint

if TYPE_CHECKING:
    from orchestrator.protocol.types import FineTuneEvent

__all__ = ["points_from_events", "points_from_metrics", "progress_of"]

_STEP = re.compile(r"\bstep (\d+)(?:/(\d+))?", re.IGNORECASE)
_TRAIN_LOSS = re.compile(r"\btrain(?:ing)? loss:? ([0-9]+(?:\.[0-9]+)?(?:e-?\d+)?)",
                         re.IGNORECASE)
_EVAL_LOSS = re.compile(r"\b(?:eval|validation) loss:? ([0-9]+(?:\.[0-9]+)?(?:e-?\d+)?)",
                        re.IGNORECASE)
_TOKENS = ("train/tokens", "train/num_tokens", "train/total_tokens")


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None  # absent, not a number, NaN or infinite (not JSON the store can keep)
    return float(value)


def points_from_metrics(rows: Iterable[Mapping[str, Any]], *, step_id: str,
                        job_id: str) -> list[MetricPoint]:
    """One point per training step of the metrics endpoint's rows (rows of one step merged:
    Together reports an eval loss in a row of its own)."""
    points: dict[int, MetricPoint] = {}
    for row in rows:
        step = _number(row, "train/global_step")
        if step is None or step < 0:
            continue
        tokens = next((t for t in (_number(row, k) for k in _TOKENS) if t is not None), None)
        point = MetricPoint(step_id, job_id, int(step), epoch=_number(row, "train/epoch"),
                            train_loss=_number(row, "train/loss"),
                            eval_loss=_number(row, "eval/loss"),
                            learning_rate=_number(row, "train/learning_rate"),
                            tokens=None if tokens is None else int(tokens))
        if (point.epoch, point.train_loss, point.eval_loss, point.learning_rate,
                point.tokens) == (None,) * 5:
            continue  # nothing to keep
        known = points.get(point.train_step)
        points[point.train_step] = point if known is None else known.merged(point)
    return list(points.values())


def points_from_events(events: Iterable[FineTuneEvent], *, step_id: str,
                       job_id: str) -> list[MetricPoint]:
    """Points for the events that name a training step and a loss."""
    points = []
    for event in events:
        train, evals = _TRAIN_LOSS.search(event.message), _EVAL_LOSS.search(event.message)
        if not (train or evals):
            continue
        named = _STEP.search(event.message)
        step = event.step or (int(named.group(1)) if named else None)
        if not step:
            continue
        points.append(MetricPoint(step_id, job_id, step,
                                  train_loss=float(train.group(1)) if train else None,
                                  eval_loss=float(evals.group(1)) if evals else None))
    return points


def progress_of(events: Iterable[FineTuneEvent], points: Iterable[MetricPoint]
                ) -> dict[str, Any]:
    """The latest training step, total and losses the job's events and figures mention: what
    the live line shows."""
    found: dict[str, Any] = {}
    for event in events:
        named = _STEP.search(event.message)
        if named:
            found["step"] = int(named.group(1))
            if named.group(2):
                found["total_steps"] = int(named.group(2))
        loss = _TRAIN_LOSS.search(event.message)
        if loss:
            found["loss"] = float(loss.group(1))
    for point in sorted(points, key=lambda p: p.train_step):
        if point.train_step >= found.get("step", 0):
            found["step"] = point.train_step
        if point.train_loss is not None:
            found["loss"] = point.train_loss
        if point.eval_loss is not None:
            found["eval_loss"] = point.eval_loss
    return found
