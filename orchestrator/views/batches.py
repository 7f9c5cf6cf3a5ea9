"""A batch as people see it: its cells, each with the model it made, its final losses and
scores, and its best cell by the batch's objective.

A batch is only a row that groups runs; each cell is a run like any other. `show BATCH`, the
web view's batch page, `batches` and `promote` read it from here (executing and resuming
cells is `schedule.batch`'s).

The best cell: only cells that succeeded and made a model compete; the others are named with
why they do not (failed, still running, no model, no such figure), never silently dropped.
Cells whose figure equals the best one are a tie: the first of them in cell order wins, and
the others are named, so a promotion never depends on which cell a database listed first.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.store.base import StateStore
from orchestrator.store.records import BatchRecord, RunRecord, RunStatus, StepRecord
from orchestrator.views.shapes import batch_json, run_json

__all__ = ["OBJECTIVE", "CellSummary", "Objective", "Selection", "batch_document",
           "batch_status", "declared_objective", "eval_figures", "load_batch", "select",
           "summarize_cell"]


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
    figures: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """What a batch's cells can be ranked by: `train_loss`, `eval_loss`, and an evaluate
    step's scores as `eval.SCORER`, `lift.SCORER`, `baseline.SCORER`."""


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
    figures = eval_figures(steps)
    train, evaluated = loss("train_loss"), loss("eval_loss")
    figures.update({name: value for name, value in (("train_loss", train),
                                                     ("eval_loss", evaluated))
                    if value is not None})
    return CellSummary(run, str(model) if model is not None else None, train, evaluated,
                       figures)


def _numbers(found: Any, prefix: str) -> dict[str, float]:
    if not isinstance(found, Mapping):
        return {}
    return {f"{prefix}.{k}": float(v) for k, v in found.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def eval_figures(steps: Mapping[str, StepRecord]) -> dict[str, float]:
    """The scores of the first evaluate step (`together/evaluate`'s outputs: `scores`,
    `lift`, `baseline.scores`) that has them; a step that failed its gate kept them in its
    checkpoint (`result`)."""
    for record in steps.values():
        kept = record.checkpoint.get("result") if record.checkpoint else None
        outputs = record.outputs or (kept if isinstance(kept, Mapping) else {})
        if isinstance(outputs.get("scores"), Mapping) and "count" in outputs:
            baseline = outputs.get("baseline")
            return {**_numbers(outputs["scores"], "eval"), **_numbers(outputs.get("lift"),
                                                                        "lift"),
                    **_numbers(baseline.get("scores") if isinstance(baseline, Mapping)
                               else None, "baseline")}
    return {}


async def load_batch(store: StateStore, batch_id: str) -> tuple[BatchRecord, list[CellSummary]]:
    """The batch and a summary of each of its cells; RunNotFound for an unknown id."""
    batch = await store.get_batch(batch_id)
    runs = await store.list_runs(batch_id=batch_id, limit=None)
    return batch, [summarize_cell(run, await store.get_steps(run.id)) for run in runs]


def batch_document(batch: BatchRecord, cells: Sequence[CellSummary]) -> dict[str, Any]:
    """`show BATCH -o json`: the batch with each cell's run, model, final losses and scores,
    and, where its pipeline names an objective, the ranking (`selection`)."""
    objective = declared_objective(batch, cells)
    selection = select(cells, objective) if objective is not None else None
    return {**batch_json(batch, batch_status([c.run for c in cells]), [
        {**run_json(c.run), "model_name": c.model_name, "train_loss": c.train_loss,
         "eval_loss": c.eval_loss, "figures": dict(c.figures)} for c in cells]),
        "selection": selection.to_json() if selection is not None else None}


def declared_objective(batch: BatchRecord, cells: Sequence[CellSummary]) -> Objective | None:
    """The objective the batch's pipeline declares (`select:`), or None: read from the text
    its cells ran (only its `select:`, so a batch of a pipeline whose step types changed since
    still reads)."""
    text = next((c.run.pipeline_text for c in cells), batch.pipeline_text)
    if "select" not in text:
        return None
    from orchestrator.definition.model import SelectSpec  # noqa: PLC0415  (pydantic: start-up)
    from orchestrator.definition.yamlsource import parse_yaml  # noqa: PLC0415

    try:
        data = parse_yaml(text).data
        spec = SelectSpec.model_validate(data["select"]) if isinstance(data, dict) and \
            data.get("select") is not None else None
    except Exception:  # noqa: BLE001  (a stored text that no longer reads ranks nothing;
        return None      # the page and `show` must answer all the same)
    return None if spec is None else Objective(spec.by, spec.maximize)


OBJECTIVE = re.compile(r"(eval_loss|train_loss|(eval|lift|baseline)\.[A-Za-z_][A-Za-z0-9_]*)")
"""What cells can be ranked by (definition.model.OBJECTIVE_PATTERN, which `validate` reads)."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """A figure of each cell, and whether higher is better."""

    by: str
    maximize: bool

    @classmethod
    def of(cls, by: str, maximize: bool | None = None) -> Objective:
        """ValueError (one line) for a figure no cell can have."""
        if not OBJECTIVE.fullmatch(by):
            msg = (f"{by!r} is not an objective: eval_loss, train_loss, eval.SCORER, "
                   "lift.SCORER or baseline.SCORER")
            raise ValueError(msg)
        return cls(by, maximize if maximize is not None else not by.endswith("_loss"))

    def __str__(self) -> str:
        return f"{'max' if self.maximize else 'min'} {self.by}"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The winner (None if no cell competes), the competing cells best first with their
    figure, the cells tied with the winner, and the cells left out with why."""

    objective: Objective
    ranked: list[tuple[CellSummary, float]]
    tied: list[CellSummary]
    left_out: list[tuple[CellSummary, str]]

    @property
    def winner(self) -> CellSummary | None:
        return self.ranked[0][0] if self.ranked else None

    def to_json(self) -> dict[str, Any]:
        return {"by": self.objective.by, "max": self.objective.maximize,
                "winner": self.winner.run.id if self.winner else None,
                "model": self.winner.model_name if self.winner else None,
                "value": self.ranked[0][1] if self.ranked else None,
                "ranked": [{"run_id": c.run.id, "value": v} for c, v in self.ranked],
                "tied": [c.run.id for c in self.tied],
                "left_out": [{"run_id": c.run.id, "why": why} for c, why in self.left_out]}


def _why_not(cell: CellSummary, by: str, figures: Mapping[str, float]) -> str | None:
    if cell.run.status is not RunStatus.SUCCEEDED:
        return cell.run.status.value
    if not cell.model_name:
        return "no model"
    if by not in figures:
        return f"no {by}"
    return None


def select(cells: Sequence[CellSummary], objective: Objective) -> Selection:
    """The cells ranked by `objective` (ties broken by cell order)."""
    competing, left_out = [], []
    for cell in cells:
        why = _why_not(cell, objective.by, cell.figures)
        if why is None:
            competing.append((cell, cell.figures[objective.by]))
        else:
            left_out.append((cell, why))
    sign = -1.0 if objective.maximize else 1.0
    ranked = sorted(competing, key=lambda pair: (sign * pair[1], pair[0].run.cell or 0))
    tied = [cell for cell, value in ranked[1:]
            if math.isclose(value, ranked[0][1], rel_tol=1e-9, abs_tol=1e-12)]
    return Selection(objective, ranked, tied, left_out)

