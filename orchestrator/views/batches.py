"""A batch as people see it: its cells, each with the model it made and its final losses.

A batch is only a row that groups runs; each cell is a run like any other. `show BATCH`, the
web view's batch page and `batches` read it from here (executing and resuming cells is
`schedule.batch`'s).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.store.base import StateStore
from orchestrator.store.records import BatchRecord, RunRecord, RunStatus, StepRecord
from orchestrator.views.shapes import batch_json, run_json

__all__ = ["CellSummary", "batch_document", "batch_status", "load_batch", "summarize_cell"]


def batch_status(runs: Sequence[RunRecord]) -> str:
    """One word for a batch: what its cells, taken together, are doing."""
    statuses = {run.status for run in runs}
    if RunStatus.RUNNING in statuses:
        return "running"
    if statuses & {RunStatus.PENDING, RunStatus.QUEUED}:
        return "queued" if RunStatus.QUEUED in statuses else "pending"
    if statuses == {RunStatus.SUCCEEDED}:
        return "succeeded"
    if statuses & {RunStatus.FAILED, RunStatus.STRANDED}:
        return "failed"
    if RunStatus.INTERRUPTED in statuses:
        return "interrupted"
    return "cancelled"


@dataclasses.dataclass(frozen=True)
class CellSummary:
    """A cell's line in `show BATCH`: what it tried and what came of it."""

    run: RunRecord
    model_name: str | None
    train_loss: float | None
    eval_loss: float | None


def _first_output(steps: Mapping[str, StepRecord], name: str) -> Any:
    for record in steps.values():
        if record.outputs and record.outputs.get(name) not in (None, ""):
            return record.outputs[name]
    return None


def summarize_cell(run: RunRecord, steps: Mapping[str, StepRecord]) -> CellSummary:
    """The model a cell produced and its final losses, from its steps' outputs (the wait
    step's `model_name`, `train_loss` and `eval_loss`, whichever step gave them)."""
    def loss(name: str) -> float | None:
        value = _first_output(steps, name)
        return float(value) if isinstance(value, int | float) else None

    model = _first_output(steps, "model_name")
    return CellSummary(run, str(model) if model is not None else None, loss("train_loss"),
                       loss("eval_loss"))


async def load_batch(store: StateStore, batch_id: str) -> tuple[BatchRecord, list[CellSummary]]:
    """The batch and a summary of each of its cells; RunNotFound for an unknown id."""
    batch = await store.get_batch(batch_id)
    runs = await store.list_runs(batch_id=batch_id, limit=None)
    return batch, [summarize_cell(run, await store.get_steps(run.id)) for run in runs]


def batch_document(batch: BatchRecord, cells: Sequence[CellSummary]) -> dict[str, Any]:
    """`show BATCH -o json`: the batch with each cell's run, model and final losses."""
    return batch_json(batch, batch_status([c.run for c in cells]), [
        {**run_json(c.run), "model_name": c.model_name, "train_loss": c.train_loss,
         "eval_loss": c.eval_loss} for c in cells])
