"""A stored run's steps in its pipeline's order, as every reader lists them (`show`, the web
view, `show -o json`).

The order is kept with the run's stored text, so listing a run parses nothing (a 10,000-step
pipeline took seconds to parse again); only a run stored before orders were kept has its text
parsed, which is why the built-in step types are imported here only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.spec.pipeline import Pipeline
    from orchestrator.store.records import RunRecord, StepRecord

__all__ = ["ordered_steps", "step_order"]


def step_order(run: RunRecord, steps: Mapping[str, StepRecord],
               pipeline: Pipeline | None = None) -> list[str]:
    """A stored run's steps in its pipeline's order, its hooks, then any stored step the
    pipeline no longer has (what `show` lists). `pipeline`: the run's, if already parsed."""
    if pipeline is not None:
        order = list(pipeline.every_step)
    elif run.step_ids is not None:  # kept with the stored text: no parsing it again
        order = list(run.step_ids)
    else:
        from orchestrator.steps.builtin import stored_pipeline  # noqa: PLC0415  (see above)

        parsed = stored_pipeline(run.pipeline_text, run.pipeline_path)
        order = list(parsed.every_step) if parsed is not None else list(steps)
    known = set(order)  # a set: a list's `in` per row made a 10,000-step run quadratic
    return order + [s for s in steps if s not in known]


def ordered_steps(run: RunRecord, steps: Mapping[str, StepRecord]) -> list[StepRecord]:
    """The run's stored steps in `step_order`: what `show RUN -o json` lists."""
    return [steps[sid] for sid in step_order(run, steps) if sid in steps]
