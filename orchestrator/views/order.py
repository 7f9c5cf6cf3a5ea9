"""A stored run's steps in its pipeline's order, as every reader lists them (`show`, the web
view, `show -o json`).

The order is kept with the run's stored text, so listing a run parses nothing (a 10,000-step
pipeline took seconds to parse again). Only a run stored before orders were kept has its text
parsed, by the `parse` its reader hands in (`steps.builtin.stored_pipeline`: the step types
are the reader's to load, not this module's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.store.records import RunRecord, StepRecord

__all__ = ["Parse", "ordered_steps", "step_order"]

Parse = Callable[[str, str], "Pipeline | None"]
"""A stored pipeline text (and its path) parsed, or None if it no longer loads."""


def step_order(run: RunRecord, steps: Mapping[str, StepRecord],
               pipeline: Pipeline | None = None, *, parse: Parse | None = None) -> list[str]:
    """A stored run's steps in its pipeline's order, its hooks, then any stored step the
    pipeline no longer has (what `show` lists). `pipeline`: the run's, if already parsed;
    `parse`: how to parse a run's text stored without its order (without one, such a run
    lists its steps as stored)."""
    if pipeline is None and run.step_ids is None and parse is not None:
        pipeline = parse(run.pipeline_text, run.pipeline_path)
    if pipeline is not None:
        order = list(pipeline.every_step)
    elif run.step_ids is not None:  # kept with the stored text: no parsing it again
        order = list(run.step_ids)
    else:
        order = list(steps)
    known = set(order)  # a set: a list's `in` per row made a 10,000-step run quadratic
    return order + [s for s in steps if s not in known]


def ordered_steps(run: RunRecord, steps: Mapping[str, StepRecord], *,
                  parse: Parse | None = None) -> list[StepRecord]:
    """The run's stored steps in `step_order`: what `show RUN -o json` lists."""
    return [steps[sid] for sid in step_order(run, steps, parse=parse) if sid in steps]
